"""Benchmark the hash-grid NeRF: test PSNR against training wall-clock on the demo scene or lego.

Runs ``recon.engine.train.nerf.fit`` with ``eval_every`` so the test PSNR is measured during the fit
(evaluation time excluded from the clock) and prints the curve. ``--scene demo`` writes a demo scene
first (``--demo-views``, ``--demo-resolution``); ``--scene lego`` uses ../shared/data/lego. ``--tiny``
shrinks the model, batch and step count so the script runs on a CPU in a minute or two.

Examples:
  python bench/nerf.py --device cpu --scene demo --tiny
  python bench/nerf.py --device cpu --scene lego --tiny --downscale 8
  python bench/nerf.py --device cuda --scene lego --steps 20000 --eval-every 2000
"""
from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

from recon.engine.train.nerf import NerfFitConfig, fit, sized_for

LEGO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lego"
TINY = dict(batch_rays=256, batch_samples=4096, samples_per_ray=48, n_levels=8, log2_table_size=14,
            max_resolution=256, hidden=32, grid_resolution=32, grid_update_every=8, lr=2e-2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--scene", default="demo", help="demo, lego or a scene folder")
    p.add_argument("--steps", type=int, default=20_000)
    p.add_argument("--eval-every", type=int, default=2000)
    p.add_argument("--downscale", type=int, default=1)
    p.add_argument("--test-every", type=int, default=8, help="for scenes without an official split")
    p.add_argument("--box-radius", type=float, default=None, help="object box half-size (normalised units)")
    p.add_argument("--demo-views", type=int, default=None, help="default 64 (16 with --tiny)")
    p.add_argument("--demo-resolution", type=int, default=None, help="default 128 (32 with --tiny)")
    p.add_argument("--tiny", action="store_true", help="small model and batch, 200 steps, eval every 50")
    args = p.parse_args()
    config = NerfFitConfig(steps=args.steps, eval_every=args.eval_every, downscale=args.downscale,
                           test_every=args.test_every, checkpoint_every=args.steps)
    if args.tiny:
        config = replace(config, **TINY, steps=200, eval_every=50, checkpoint_every=200)
    if args.box_radius is not None:
        config = replace(config, box_radius=args.box_radius)
    with tempfile.TemporaryDirectory(prefix="recon-bench-nerf-") as tmp:
        if args.scene == "demo":
            from recon.engine.scene.demo import write_demo_scene

            views = args.demo_views or (16 if args.tiny else 64)
            resolution = args.demo_resolution or (32 if args.tiny else 128)
            source = write_demo_scene(Path(tmp) / "demo", views=views, resolution=resolution)
        else:
            source = LEGO if args.scene == "lego" else Path(args.scene)
        metrics = fit(source, config, Path(tmp) / "run", resume=False, device=torch.device(args.device))
    config = sized_for(config, torch.device(args.device))
    print(f"nerf on {args.device}: scene={args.scene} downscale={config.downscale} steps={config.steps} "
          f"batch={config.batch_rays} samples/ray={config.samples_per_ray} L={config.n_levels} "
          f"T=2^{config.log2_table_size}")
    print(f"  {'step':>7s} {'train s':>9s} {'test PSNR':>10s}")
    for point in metrics.get("curve", []):
        print(f"  {point['step']:7d} {point['train_seconds']:9.1f} {point['test_psnr']:10.2f}")
    print(f"  final: test PSNR {metrics.get('test_psnr', float('nan')):.2f} dB, SSIM "
          f"{metrics.get('test_ssim', float('nan')):.3f}, {metrics['train_seconds']:.1f} s training")


if __name__ == "__main__":
    main()
