"""``recon fit SOURCE``: reconstruct a scene (or a shape) into a run directory.

Each model's options come from its engine config dataclass (``apps/options.py``); a model whose engine
part is missing is listed but says plainly that it is not built. ``--gpus N`` runs the same command in N
processes under torchrun (``torch.distributed``'s launcher); started by torchrun with several processes,
the command joins their process group and rank 0 prints the results.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import os
import sys
from pathlib import Path

from recon.apps.options import add_config_arguments, config_from_args
from recon.apps.sfm import add_sfm_arguments, sfm_options, sfm_scene_for
from recon.engine.errors import NotBuiltError, ReconError

IMAGE_MODELS = ("gaussians", "nerf")  # models fitted to posed images, which photos or a video can become
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
    p.add_argument("source", help="scene folder, a folder of photos or a video (structure from motion runs first, "
                                  "into <run folder's parent>/<name>_sfm, reused by later fits), or a "
                                  ".ply/.obj/.xyz shape for --model sdf|occupancy")
    p.add_argument("--model", choices=tuple(TRAINERS), default="gaussians", help="what to fit (default: gaussians)")
    p.add_argument("-o", "--output", help="run directory (default: runs/<scene>-<time>)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the run directory's last checkpoint (with no -o: the newest run of this scene)")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--backend", choices=("torch", "triton", "cuda"), default=None,
                   help="kernel backend (default: per kernel and device; same as RECON_BACKEND)")
    p.add_argument("--gpus", type=int, default=None, metavar="N",
                   help="fit on N GPUs: runs this command in N processes under torchrun, each holding 1/N of the"
                        " Gaussians (--model gaussians; on a machine without GPUs, N CPU processes with gloo)")
    p.add_argument("--view", action="store_true",
                   help="serve the browser viewer while fitting (URL printed; see `recon view`); training keeps "
                        "its speed while no browser is connected")
    p.add_argument("--view-port", type=int, default=8080, help="port of the --view viewer (default 8080)")
    p.add_argument("--view-host", default="127.0.0.1", help="address of the --view viewer (default 127.0.0.1)")
    for model in dict.fromkeys(TRAINERS.values()):
        module = _trainer(next(k for k, v in TRAINERS.items() if v == model))
        if module is not None:
            add_config_arguments(p.add_argument_group(f"{model.rsplit('.', 1)[-1]} options"), module.CONFIG)
    add_sfm_arguments(p.add_argument_group("structure-from-motion options (photos or a video, see recon sfm)"))
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


def _launch(args: argparse.Namespace, source: Path) -> int:
    """Run this command again in ``args.gpus`` processes under torchrun's launcher; returns their exit status."""
    import uuid

    import torch
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from recon.engine.train.rundir import checkpoint_paths, resume_state

    if torch.cuda.is_available() and args.gpus > torch.cuda.device_count():
        raise ReconError(f"--gpus {args.gpus}, but this machine has {torch.cuda.device_count()} GPU(s)")
    argv = list(args.argv)
    run_dir = resolve_run_dir(source, args.output, args.resume)
    if not args.output:  # every process must write to the same run directory
        argv += ["-o", str(run_dir)]
    if args.resume != bool(checkpoint_paths(run_dir)):  # say here (resume_state raises) what each process would
        resume_state(run_dir, args.model, None, resume=args.resume)
    if not torch.cuda.is_available():  # CPU processes share the cores
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // args.gpus)))
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=args.gpus, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0)
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # the processes report themselves
    try:
        elastic_launch(config, sys.executable)("-m", "recon", *argv)
    except ChildFailedError as exc:
        codes = [failure.exitcode for _, failure in sorted(exc.failures.items())]
        return next((c for c in codes if c > 0), 1)
    return 0


def _posed_scene(args: argparse.Namespace, source: Path, run_dir: Path) -> Path:
    """``source``, or for photos or a video fitted by an image model, the scene SfM makes of them next to the run
    (``<run folder's parent>/<name>_sfm``, reused while the source and the SfM options are unchanged)."""
    if args.model in IMAGE_MODELS:
        from recon.engine.sfm import source_kind

        if source_kind(source) is not None:
            return sfm_scene_for(source, run_dir.parent, sfm_options(args))
    return source


def run(args: argparse.Namespace) -> int:
    import torch

    from recon.engine.train import distributed

    module = _trainer(args.model)
    if module is None:
        raise NotBuiltError(f"fitting --model {args.model} is not built yet in this version of recon")
    source = Path(args.source)
    if not source.exists():
        raise ReconError(f"{source}: no such file or folder")
    world = distributed.env_world_size()
    if args.gpus is not None and args.gpus < 1:
        raise ReconError(f"--gpus must be at least 1, got {args.gpus}")
    if max(world, args.gpus or 1) > 1 and args.model != "gaussians":
        raise ReconError(f"--model {args.model} fits in one process; distributed fitting is built for gaussians")
    if world > 1 and args.gpus not in (None, world):
        raise ReconError(f"--gpus {args.gpus}, but torchrun started {world} processes")
    if args.backend:
        os.environ["RECON_BACKEND"] = args.backend
    config = config_from_args(module.CONFIG, args, **({"kind": args.model} if args.model in ("sdf", "occupancy") else {}))
    if max(world, args.gpus or 1) > 1 and args.view:
        raise ReconError("--view shows a fit in one process; leave out --gpus to watch it")
    if (args.gpus or 1) > 1 and world == 1:
        if config.batch_size < args.gpus:
            raise ReconError(f"--gpus {args.gpus} needs --batch-size of at least {args.gpus} (each process renders"
                             f" views of every batch), got {config.batch_size}")
        _posed_scene(args, source, resolve_run_dir(source, args.output, args.resume))  # SfM once, before the processes
        return _launch(args, source)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    group = distributed.init_from_env(device)
    try:
        run_dir = distributed.broadcast_object(resolve_run_dir(source, args.output, args.resume), group)
        source = distributed.broadcast_object(_posed_scene(args, source, run_dir) if group.is_main else None, group)
        if args.view:
            metrics = _fit_with_viewer(module, source, config, run_dir, args, group.device)
        else:
            metrics = module.fit(source, config, run_dir, resume=args.resume, device=group.device)
    finally:
        distributed.shutdown()
    if not group.is_main:
        return 0
    print(f"run directory: {run_dir}")
    for key, value in (metrics or {}).items():
        if isinstance(value, (int, float)):
            print(f"  {key}: {value:.4g}" if isinstance(value, float) else f"  {key}: {value}")
    return 0


def _fit_with_viewer(module, source: Path, config, run_dir: Path, args: argparse.Namespace, device) -> dict:
    """``module.fit`` with the live browser viewer fed by its ``on_step`` hook; the viewer stops with the fit."""
    from recon.engine.viewer.live import LiveView, training_target
    from recon.engine.viewer.server import Viewer

    target = training_target(source, args.model, dataclasses.asdict(config), run_dir)
    viewer = Viewer(target, host=args.view_host, port=args.view_port)
    print(f"recon fit: viewer at {viewer.start()} (stops when the fit ends; then `recon view {run_dir}`)", flush=True)
    live = LiveView(viewer, config.steps)
    try:
        return module.fit(source, config, run_dir, resume=args.resume, device=device, on_step=live.on_step)
    finally:
        viewer.stop()
