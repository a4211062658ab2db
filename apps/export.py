"""``recon export RUN``: a run as a 3DGS PLY, a web splat format or a mesh, in the original coordinates."""
from __future__ import annotations

import argparse
from pathlib import Path

from recon.engine.errors import ReconError

# splat format (engine/io/splat_files.py) -> option holding its output path
SPLAT_OPTIONS = {"ply": "ply", "splat": "splat", "spz": "spz", "compressed": "compressed_ply"}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export", help="export a run as a 3DGS PLY (--ply), web splat formats or a mesh",
                              description="Export a fitted run in the scene's original coordinates: Gaussians as an "
                                          "INRIA 3DGS PLY or in the formats web viewers open (SuperSplat, "
                                          "antimatter15/splat, SPZ viewers), or any model as a mesh.")
    p.add_argument("run_dir", help="run directory")
    p.add_argument("--ply", metavar="OUT", help="write the Gaussians as an INRIA 3DGS PLY (Gaussian runs)")
    p.add_argument("--splat", metavar="OUT", help="write the Gaussians as .splat (32 bytes each, no view-dependent "
                                                  "colour)")
    p.add_argument("--spz", metavar="OUT", help="write the Gaussians as Niantic's SPZ (gzip, version 3, with SH)")
    p.add_argument("--compressed-ply", metavar="OUT",
                   help="write the Gaussians as PlayCanvas's compressed PLY (name it *.compressed.ply)")
    p.add_argument("--mesh", metavar="OUT", help="write a mesh (.ply or .obj) extracted from the model")
    p.add_argument("--resolution", type=int, default=256, help="grid resolution of the mesh extraction")
    p.add_argument("--keep-components", default=None, metavar="all|FRACTION",
                   help="mesh: keep connected components whose area reaches this fraction of the largest's "
                        "(default: 0.01, which drops floating fragments); 'all' keeps every component")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.set_defaults(run=run)


def _component_fraction(text: str | None, default: float) -> float:
    """``--keep-components``: 'all' is 0 (keep everything), else a fraction of the largest's area."""
    if text is None:
        return default
    if text.strip().lower() == "all":
        return 0.0
    try:
        return float(text)
    except ValueError:
        raise ReconError(f"--keep-components must be 'all' or a fraction in [0, 1], got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    import torch

    splat_outputs = {fmt: getattr(args, option) for fmt, option in SPLAT_OPTIONS.items() if getattr(args, option)}
    if not splat_outputs and not args.mesh:
        raise ReconError(f"{args.run_dir}: nothing to export; give --ply, --splat, --spz, --compressed-ply and/or "
                         f"--mesh OUT")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    run_dir = Path(args.run_dir)
    if splat_outputs:
        from recon.engine.io.splat_files import write_splats
        from recon.engine.models.registry import load_run

        model, state = load_run(run_dir, device)
        if state["kind"] != "gaussians":
            options = ", ".join(f"--{SPLAT_OPTIONS[fmt].replace('_', '-')}" for fmt in splat_outputs)
            raise ReconError(f"{run_dir}: {options} need a Gaussian run, this one is {state['kind']} (use --mesh)")
        splats = model.to_splats()
        for fmt, out in splat_outputs.items():
            write_splats(out, splats, fmt)
            print(f"{model.num_gaussians} Gaussians written to {out}")
    if args.mesh:
        from recon.engine.mesh_export import MIN_COMPONENT_FRACTION, export_run_mesh

        fraction = _component_fraction(args.keep_components, MIN_COMPONENT_FRACTION)
        before, report = export_run_mesh(run_dir, Path(args.mesh), resolution=args.resolution, device=device,
                                         min_component_fraction=fraction)
        dropped = before - report.components
        kept = "all components kept" if fraction == 0 else (
            f"{dropped} of {before} components dropped (below {fraction:g} of the largest's area)")
        print(f"mesh written to {args.mesh}: {report.summary()}; {kept}")
    return 0
