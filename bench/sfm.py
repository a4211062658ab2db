"""Benchmark structure from motion: time per stage (wall and CPU), registration and pose accuracy.

    .venv/bin/python bench/sfm.py --source plush                      # the 97 plush photos, 1008x756
    .venv/bin/python bench/sfm.py --source plush --step 2 --shrink 2  # the test's subset: 49 photos, 504x378
    .venv/bin/python bench/sfm.py --source demo-video                 # an orbit of the demo scene, 72 frames

For the plush photos the poses are compared with the COLMAP model shipped with them (made by COLMAP with
exhaustive matching at full resolution) after a similarity alignment. For the demo video (rendered here,
the same clip as tests/test_sfm.py without its blurred frames) the focal length is compared with the truth.
CPU time counts every thread of the process (pycolmap's too): on a shared machine it is the figure to
compare; wall time depends on the load.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def plush_photos(work: Path, step: int, shrink: int) -> Path:
    """Every ``step``-th plush photo, downscaled ``shrink`` times, in ``work/plush``."""
    from PIL import Image

    source = SHARED / "plush" / "images"
    if not source.is_dir():
        sys.exit(f"{source}: absent (see ../shared/data/MANIFEST.md)")
    out = work / "plush"
    out.mkdir()
    for path in sorted(source.iterdir())[::step]:
        with Image.open(path) as im:
            if shrink != 1:
                im = im.resize((im.width // shrink, im.height // shrink), Image.LANCZOS)
            im.save(out / path.name, quality=95)
    return out


def demo_video(work: Path, frames: int, resolution: int) -> Path:
    from recon.engine.io.video import write_video
    from recon.engine.scene.demo_orbit import orbit_frames

    path = work / "orbit.mp4"
    write_video(path, list(orbit_frames(frames, resolution)), fps=12)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", choices=("plush", "demo-video"), default="plush")
    parser.add_argument("--step", type=int, default=1, help="plush: every N-th photo")
    parser.add_argument("--shrink", type=int, default=1, help="plush: downscale factor")
    parser.add_argument("--video-frames", type=int, default=72, help="demo video: frames in the orbit")
    parser.add_argument("--resolution", type=int, default=256, help="demo video: frame size")
    parser.add_argument("--frames", type=int, default=36, help="demo video: frames kept (recon sfm --frames)")
    parser.add_argument("--matcher", default="auto")
    parser.add_argument("--mapper", default="auto")
    args = parser.parse_args()

    from recon.engine.eval.poses import pose_errors
    from recon.engine.scene.colmap import image_world_to_camera, read_model
    from recon.engine.sfm import SfmOptions, format_report, run_sfm

    options = SfmOptions(frames=args.frames, matcher=args.matcher, mapper=args.mapper)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        start = time.perf_counter()
        if args.source == "plush":
            source = plush_photos(work, args.step, args.shrink)
        else:
            source = demo_video(work, args.video_frames, args.resolution)
        print(f"input prepared in {time.perf_counter() - start:.1f} s: {source}")
        report = run_sfm(source, work / "scene", options, progress=False)
        print(format_report(report, "scene"))
        total = {k: sum(t[k] for t in report.stages.values()) for k in ("wall_s", "cpu_s")}
        print(f"total: {total['wall_s']:.1f} s wall, {total['cpu_s']:.1f} s CPU")
        if args.source == "plush":
            poses = lambda folder: {im.name: image_world_to_camera(im)  # noqa: E731
                                    for im in read_model(folder).images.values()}
            errors = pose_errors(poses(work / "scene" / "sparse" / "0"), poses(SHARED / "plush" / "sparse" / "0"))
            print(f"against the shipped COLMAP model ({errors.compared} images): rotation max "
                  f"{errors.rotation_max_deg:.3f} deg (median {errors.rotation_median_deg:.3f}), centre max "
                  f"{100 * errors.centre_max:.3f}% of the extent (median {100 * errors.centre_median:.3f}%)")
        else:
            from recon.engine.scene.demo_orbit import orbit_cameras

            truth = orbit_cameras(1, args.resolution)[0].fx
            focal = report.cameras[0]["params"][0]
            print(f"focal length {focal:.2f} px, truth {truth:.2f} px ({100 * (focal / truth - 1):+.2f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
