"""``recon render RUN``: novel views of a fitted run (or of a splat file) to video or PNGs."""
from __future__ import annotations

import argparse
from pathlib import Path

from recon.apps.options import add_device_options, select_device
from recon.engine.errors import ReconError


def register(subparsers: argparse._SubParsersAction) -> None:
    from recon.engine.render.paths import PATHS

    p = subparsers.add_parser("render", help="render novel views of a run to MP4 or PNGs",
                              description="Render a fitted run (any model kind), or a splat file (3DGS PLY, "
                                          "compressed PLY, .splat, .spz) with --scene, along a camera path to an "
                                          "MP4 or a folder of PNGs.")
    p.add_argument("run_dir", help="run directory (or a .ply/.splat/.spz splat file with --scene)")
    p.add_argument("--scene", help="scene folder giving the cameras and normalisation of a splat file")
    p.add_argument("--path", default="orbit", metavar="{" + ",".join(PATHS) + "} or FILE.json",
                   help="camera path: a built-in one (default: orbit) or a camera path file written by "
                        "`recon view` (nerfstudio's camera_path.json layout)")
    p.add_argument("--frames", type=int, default=120, help="number of frames (ignored by --path test and by files)")
    p.add_argument("--fps", type=float, default=30.0, help="frames per second of the video")
    p.add_argument("-o", "--output", help="MP4 file, or a folder (ending in /) for PNGs "
                                          "(default: <run>/renders/<path>.mp4, or <ply>_<path>.mp4)")
    p.add_argument("--depth", action="store_true", help="also write a depth video (<out>_depth.mp4 / depth_*.png)")
    add_device_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from recon.engine.io.video import is_folder_target, write_png_folder, write_video
    from recon.engine.render import render_frames
    from recon.engine.render.path_file import is_path_file, read_camera_path
    from recon.engine.render.paths import camera_path

    device = select_device(args)
    source = Path(args.run_dir)
    loaded, default_out = _load(source, args.scene, device, needs_cameras=not is_path_file(args.path))
    model, fps = loaded.model, args.fps
    if is_path_file(args.path):
        cameras, fps = read_camera_path(args.path, loaded.normalization)
        path_name = Path(args.path).stem
    else:
        cameras, path_name = camera_path(args.path, loaded.train, loaded.test, args.frames), args.path
    out = Path(args.output) if args.output else default_out.with_name(f"{default_out.name}_{path_name}.mp4")
    passes = [("rgb", out)]
    if args.depth:
        depth_out = out if is_folder_target(args.output or out) else out.with_name(f"{out.stem}_depth{out.suffix}")
        passes.append(("depth", depth_out))
    for channel, target in passes:
        frames = render_frames(model, cameras, channel)
        if is_folder_target(args.output or target):
            count = write_png_folder(target, frames, prefix="depth_" if channel == "depth" else "")
        else:
            count = write_video(target, frames, fps=fps)
        print(f"{count} {channel} frames written to {target}")
    return 0


def _load(source: Path, scene_dir: str | None, device, *, needs_cameras: bool) -> tuple:
    """(``RenderSource``, default output stem) for a run directory or a splat file; a splat file needs a
    scene for its cameras unless the camera path comes from a file."""
    from recon.engine.io.splat_files import is_splat_file, read_splats
    from recon.engine.render.sources import load_run_source, load_splat_source

    if is_splat_file(source):
        if scene_dir is None and needs_cameras:
            read_splats(source)  # a bad file is refused before asking for a scene
            raise ReconError(f"{source}: rendering a splat file needs --scene SCENE for its cameras "
                             f"(or --path FILE.json)")
        return load_splat_source(source, scene_dir, device), source.with_suffix("")
    if source.is_file():
        raise ReconError(f"{source}: not a run directory or a splat file (.ply, .splat, .spz)")
    return load_run_source(source, device, with_cameras=needs_cameras), source / "renders" / "render"
