"""``recon render RUN``: novel views of a fitted run (or of a 3DGS PLY) to video or PNGs."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from recon.engine.errors import ReconError


def register(subparsers: argparse._SubParsersAction) -> None:
    from recon.engine.render.paths import PATHS

    p = subparsers.add_parser("render", help="render novel views of a run to MP4 or PNGs",
                              description="Render a fitted run (any model kind), or a 3DGS PLY with --scene, "
                                          "along a camera path to an MP4 or a folder of PNGs.")
    p.add_argument("run_dir", help="run directory (or a 3DGS .ply with --scene)")
    p.add_argument("--scene", help="scene folder giving the cameras and normalisation of a .ply")
    p.add_argument("--path", choices=PATHS, default="orbit", help="camera path (default: orbit)")
    p.add_argument("--frames", type=int, default=120, help="number of frames (ignored by --path test)")
    p.add_argument("--fps", type=float, default=30.0, help="frames per second of the video")
    p.add_argument("-o", "--output", help="MP4 file, or a folder (ending in /) for PNGs "
                                          "(default: <run>/renders/<path>.mp4, or <ply>_<path>.mp4)")
    p.add_argument("--depth", action="store_true", help="also write a depth video (<out>_depth.mp4 / depth_*.png)")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--backend", choices=("torch", "triton", "cuda"), default=None, help="kernel backend")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from recon.engine.io.video import is_folder_target, write_png_folder, write_video
    from recon.engine.render import render_frames
    from recon.engine.render.paths import camera_path

    if args.backend:
        os.environ["RECON_BACKEND"] = args.backend
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    source = Path(args.run_dir)
    model, (train, test), default_out = _load(source, args.scene, device)
    cameras = camera_path(args.path, train, test, args.frames)
    out = Path(args.output) if args.output else default_out.with_name(f"{default_out.name}_{args.path}.mp4")
    passes = [("rgb", out)]
    if args.depth:
        depth_out = out if is_folder_target(args.output or out) else out.with_name(f"{out.stem}_depth{out.suffix}")
        passes.append(("depth", depth_out))
    for channel, target in passes:
        frames = render_frames(model, cameras, channel)
        if is_folder_target(args.output or target):
            count = write_png_folder(target, frames, prefix="depth_" if channel == "depth" else "")
        else:
            count = write_video(target, frames, fps=args.fps)
        print(f"{count} {channel} frames written to {target}")
    return 0


def _load(source: Path, scene_dir: str | None, device) -> tuple:
    """(model, (train cameras, test cameras), default output stem) for a run directory or a 3DGS PLY."""
    from recon.engine.render import run_cameras

    if source.suffix.lower() == ".ply":
        from recon.engine.io.ply import read_splat_ply
        from recon.engine.models.gaussians import GaussianModel
        from recon.engine.scene import load_scene

        splats = read_splat_ply(source)  # a bad PLY is refused before the scene is read
        if scene_dir is None:
            raise ReconError(f"{source}: rendering a PLY needs --scene SCENE for its cameras")
        scene = load_scene(scene_dir)
        cameras = {"train": [f.camera for f in scene.train_frames], "test": [f.camera for f in scene.test_frames]}
        model = GaussianModel.from_splats(splats, scene.normalization, device, cameras=cameras,
                                          background=scene.background)
        return model, (cameras["train"], cameras["test"]), source.with_suffix("")
    from recon.engine.models.registry import load_run

    if not source.is_dir():
        raise ReconError(f"{source}: {'not a run directory or a .ply' if source.exists() else 'no such run directory'}")
    model, state = load_run(source, device)
    return model, run_cameras(source, model, state), source / "renders" / "render"
