"""``recon demo-scene OUT``: write the built-in procedural demo scene."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo-scene", help="write the built-in procedural demo scene",
                              description="Render a fully known procedural scene (images, transforms.json, "
                                          "per-object masks, true geometry) into OUT.")
    p.add_argument("out", help="output folder")
    p.add_argument("--seed", type=int, default=0, help="random seed (the scene is deterministic for a seed)")
    p.add_argument("--views", type=int, default=64, help="number of cameras on the sphere")
    p.add_argument("--resolution", type=int, default=128, help="image width and height in pixels")
    p.add_argument("--supersample", type=int, default=3,
                   help="rays per pixel along each axis (anti-aliasing; alpha is the covered fraction)")
    p.add_argument("--lens", choices=("pinhole", "opencv", "fisheye"), default="pinhole",
                   help="camera lens: an ideal pinhole (Blender transforms files), or the images rendered through "
                        "real distortion, OPENCV k1=-0.3 or OPENCV_FISHEYE, stored in nerfstudio transforms files")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from recon.engine.scene.demo import write_demo_scene

    path = write_demo_scene(args.out, seed=args.seed, views=args.views, resolution=args.resolution,
                            supersample=args.supersample, lens=args.lens)
    print(f"demo scene written to {path}")
    return 0
