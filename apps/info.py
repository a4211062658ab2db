"""``recon info SCENE``: describe what a scene folder holds."""
from __future__ import annotations

import argparse
from pathlib import Path

from recon.apps.sfm import add_sfm_arguments, sfm_options


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("info", help="describe a scene folder (format, images, cameras, points, bounds)",
                              description="Print what recon finds in a scene folder; for a folder of photos or a "
                                          "video, what recon fit would do with it (structure from motion first).")
    p.add_argument("scene", help="scene folder (COLMAP, transforms.json, or a recon demo scene), a folder of photos "
                                 "or a video")
    p.add_argument("--downscale", type=int, default=1, choices=(1, 2, 4, 8), help="image downscale factor")
    p.add_argument("--test-every", type=int, default=8, help="hold out every N-th image for testing (0: none)")
    p.add_argument("--max-fov", type=float, default=120.0,
                   help="field of view (degrees) kept when undistorting, as recon fit --max-fov (default 120)")
    add_sfm_arguments(p.add_argument_group("structure-from-motion options (as recon fit would be given them)"))
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from recon.engine.scene import describe_scene, load_scene
    from recon.engine.sfm import sfm_scene_dir, source_kind

    source = Path(args.scene)
    if source_kind(source) is not None:
        from recon.engine.sfm.plan import describe_sfm_source

        print(describe_sfm_source(source, sfm_scene_dir(source, Path("runs")), sfm_options(args)))
        return 0
    scene = load_scene(args.scene, downscale=args.downscale, test_every=args.test_every)
    print(describe_scene(scene, args.max_fov))
    return 0
