"""``recon fit SOURCE``: reconstruct a scene (or a shape) into a run directory.

Each model's options come from its engine config dataclass (``apps/options.py``); a model whose engine
part is missing is listed but says plainly that it is not built.
"""
from __future__ import annotations

import argparse
import importlib
import os
from pathlib import Path

from recon.apps.options import add_config_arguments, config_from_args
from recon.engine.errors import NotBuiltError, ReconError

# model -> engine module with ``CONFIG`` (a dataclass type) and ``fit(source, config, run_dir, resume, device)``.
TRAINERS = {
    "gaussians": "recon.engine.train.gaussians",
    "nerf": "recon.engine.train.nerf",
    "sdf": "recon.engine.train.field",
    "occupancy": "recon.engine.train.field",
}


def _trainer(model: str):
    try:
        return importlib.import_module(TRAINERS[model])
    except ModuleNotFoundError as exc:
        if exc.name == TRAINERS[model]:
            return None
        raise


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "fit", help="reconstruct a scene folder (or, with --model sdf|occupancy, a mesh or point cloud)",
        description="Fit a model to posed images (3D Gaussians by default) or to a shape file, writing a run "
                    "directory with config, checkpoints, metrics and a log.")
    p.add_argument("source", help="scene folder, or a .ply/.obj/.xyz shape for --model sdf|occupancy")
    p.add_argument("--model", choices=tuple(TRAINERS), default="gaussians", help="what to fit (default: gaussians)")
    p.add_argument("-o", "--output", help="run directory (default: runs/<scene>-<time>)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the run directory's last checkpoint (with no -o: the newest run of this scene)")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--backend", choices=("torch", "triton", "cuda"), default=None,
                   help="kernel backend (default: per kernel and device; same as RECON_BACKEND)")
    p.add_argument("--view", action="store_true",
                   help="serve the browser viewer while fitting (URL printed; see `recon view`); training keeps "
                        "its speed while no browser is connected")
    p.add_argument("--view-port", type=int, default=8080, help="port of the --view viewer (default 8080)")
    p.add_argument("--view-host", default="127.0.0.1", help="address of the --view viewer (default 127.0.0.1)")
    for model in dict.fromkeys(TRAINERS.values()):
        module = _trainer(next(k for k, v in TRAINERS.items() if v == model))
        if module is not None:
            add_config_arguments(p.add_argument_group(f"{model.rsplit('.', 1)[-1]} options"), module.CONFIG)
    p.set_defaults(run=run)


def resolve_run_dir(source: Path, output: str | None, resume: bool) -> Path:
    """The run directory: ``-o``, the newest ``runs/<name>-*`` when resuming, else a new timestamped one."""
    from recon.engine.train.rundir import default_run_dir

    if output:
        return Path(output)
    name = source.resolve().stem if source.is_file() else source.resolve().name
    if resume:
        runs = sorted(Path("runs").glob(f"{name}-*"))
        if not runs:
            raise ReconError(f"--resume: no earlier run of {name} under runs/ (name one with -o)")
        return runs[-1]
    return default_run_dir(name)


def run(args: argparse.Namespace) -> int:
    import torch

    module = _trainer(args.model)
    if module is None:
        raise NotBuiltError(f"fitting --model {args.model} is not built yet in this version of recon")
    source = Path(args.source)
    if not source.exists():
        raise ReconError(f"{source}: no such file or folder")
    if args.backend:
        os.environ["RECON_BACKEND"] = args.backend
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    config = config_from_args(module.CONFIG, args, **({"kind": args.model} if args.model in ("sdf", "occupancy") else {}))
    run_dir = resolve_run_dir(source, args.output, args.resume)
    if args.view:
        metrics = _fit_with_viewer(module, source, config, run_dir, args, device)
    else:
        metrics = module.fit(source, config, run_dir, resume=args.resume, device=device)
    print(f"run directory: {run_dir}")
    for key, value in (metrics or {}).items():
        if isinstance(value, (int, float)):
            print(f"  {key}: {value:.4g}" if isinstance(value, float) else f"  {key}: {value}")
    return 0


def _fit_with_viewer(module, source: Path, config, run_dir: Path, args: argparse.Namespace, device) -> dict:
    """``module.fit`` with the live browser viewer fed by its ``on_step`` hook; the viewer stops with the fit."""
    from recon.engine.viewer.live import LiveView, training_target
    from recon.engine.viewer.server import Viewer

    target = training_target(source, args.model, getattr(config, "downscale", 1), getattr(config, "test_every", 8),
                             run_dir)
    viewer = Viewer(target, host=args.view_host, port=args.view_port)
    print(f"recon fit: viewer at {viewer.start()} (stops when the fit ends; then `recon view {run_dir}`)", flush=True)
    live = LiveView(viewer, config.steps)
    try:
        return module.fit(source, config, run_dir, resume=args.resume, device=device, on_step=live.on_step)
    finally:
        viewer.stop()
