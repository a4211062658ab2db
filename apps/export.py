"""``recon export RUN``: write a run as a 3DGS PLY or a mesh, in the scene's original coordinates."""
from __future__ import annotations

import argparse
from pathlib import Path

from recon.engine.errors import ReconError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export", help="export a run as a 3DGS PLY (--ply) or a mesh (--mesh)",
                              description="Export a fitted run in the scene's original coordinates.")
    p.add_argument("run_dir", help="run directory")
    p.add_argument("--ply", metavar="OUT", help="write the Gaussians as an INRIA 3DGS PLY (Gaussian runs)")
    p.add_argument("--mesh", metavar="OUT", help="write a mesh (.ply or .obj) extracted from the model")
    p.add_argument("--resolution", type=int, default=256, help="grid resolution of the mesh extraction")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    if not args.ply and not args.mesh:
        raise ReconError(f"{args.run_dir}: nothing to export; give --ply OUT and/or --mesh OUT")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    run_dir = Path(args.run_dir)
    if args.ply:
        from recon.engine.models.registry import load_run

        model, state = load_run(run_dir, device)
        if state["kind"] != "gaussians":
            raise ReconError(f"{run_dir}: --ply needs a Gaussian run, this one is {state['kind']} (use --mesh)")
        model.save_ply(args.ply)
        print(f"{model.num_gaussians} Gaussians written to {args.ply}")
    if args.mesh:
        from recon.engine.mesh_export import export_run_mesh

        export_run_mesh(run_dir, Path(args.mesh), resolution=args.resolution, device=device)
        print(f"mesh written to {args.mesh}")
    return 0
