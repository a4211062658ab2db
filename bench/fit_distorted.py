"""Benchmark fits of the demo scene through real lenses: pinhole vs OPENCV vs OPENCV_FISHEYE, distortion
corrected vs ignored, Gaussians and NeRF, every fit with the same steps and image size.

For each lens a demo scene is written (``recon demo-scene --lens``), then each model is fitted with
``--distortion correct`` and (for the distorted lenses) ``--distortion ignore``; the table gives test PSNR /
SSIM (Gaussians: over the undistorted test images' valid pixels; NeRF: over the original pixels), the training
time, and the like-for-like score: every fit rendered at the pinhole demo's test cameras against its test images
(the same scene, poses and pixels whatever lens took the training photos), also over the central half of each
image alone (a barrel lens samples the periphery more coarsely than the pinhole does). It also times loading the
undistorted OPENCV scene twice (the second from the cache).

    .venv/bin/python bench/fit_distorted.py --device cpu --tiny      # CPU: small scenes, short schedules
    .venv/bin/python bench/fit_distorted.py --device cuda            # the pinhole demo's settings
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nerf import TINY as NERF_TINY  # noqa: E402  (bench/nerf.py's small CPU model)

from recon.engine.models.registry import load_run  # noqa: E402
from recon.engine.scene import load_scene  # noqa: E402
from recon.engine.scene.demo import write_demo_scene  # noqa: E402
from recon.engine.train import gaussians, nerf  # noqa: E402
from recon.engine.train.evaluate import evaluate  # noqa: E402
from recon.engine.train.metrics import psnr  # noqa: E402

LENSES = ("pinhole", "opencv", "fisheye")


def time_cache(source: Path, cache: Path) -> tuple[float, float, int]:
    """Seconds to load the scene undistorted with an empty cache and again with it filled; frames resampled
    the second time (0 when the cache is reused)."""
    from recon.engine.scene import load_scene
    from recon.engine.scene.undistorted import undistort_scene

    times, resampled = [], 0
    for _ in range(2):
        started = time.perf_counter()
        _, stats = undistort_scene(load_scene(source), cache=cache)
        times.append(time.perf_counter() - started)
        resampled = stats.resampled
    return times[0], times[1], resampled


def centre_psnr(model, scene) -> float:
    """Mean test PSNR of ``model`` over the central half (in each axis) of ``scene``'s test images: where a lens
    magnifies about as the pinhole does, so that what the periphery's coarser sampling costs is left out."""
    scores = []
    with torch.no_grad():
        for index in scene.test_indices:
            camera = scene.frames[index].camera
            rgb = model.render(camera, background=scene.background)["rgb"]
            target = torch.as_tensor(scene.load_image(index), device=rgb.device)
            h, w = camera.height // 4, camera.width // 4
            scores.append(float(psnr(rgb[h:-h, w:-w], target[h:-h, w:-w])))
    return float(np.mean(scores))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true", help="16 views of 64 px; 150 Gaussian steps from 2000 points, "
                                                       "200 NeRF steps of bench/nerf.py's tiny model")
    p.add_argument("--models", nargs="+", default=["gaussians", "nerf"], choices=("gaussians", "nerf"))
    p.add_argument("--lenses", nargs="+", default=list(LENSES), choices=LENSES)
    p.add_argument("--distortions", nargs="+", default=["correct", "ignore"], choices=("correct", "ignore"),
                   help="how the distorted lenses' fits treat the lens (the pinhole demo is always fitted as it is)")
    p.add_argument("--views", type=int, default=None, help="demo views (default 64; 16 with --tiny)")
    p.add_argument("--resolution", type=int, default=None, help="demo image size (default 128; 64 with --tiny)")
    p.add_argument("--gaussian-steps", type=int, default=None, help="default 300 (150 with --tiny)")
    p.add_argument("--nerf-steps", type=int, default=None, help="default 20000 (200 with --tiny)")
    p.add_argument("--seed", type=int, default=0, help="the fits' seed")
    args = p.parse_args()
    views = args.views or (16 if args.tiny else 64)
    resolution = args.resolution or (64 if args.tiny else 128)
    g_config = gaussians.GaussianFitConfig(steps=args.gaussian_steps or (150 if args.tiny else 300), seed=args.seed)
    if args.tiny:
        g_config = replace(g_config, init_points=2000, sh_degree=1)
    n_config = nerf.NerfFitConfig(steps=args.nerf_steps or (200 if args.tiny else 20_000), seed=args.seed)
    if args.tiny:
        n_config = replace(n_config, **NERF_TINY, box_radius=0.5)
    device = torch.device(args.device)
    rows = []
    with tempfile.TemporaryDirectory(prefix="recon-bench-lens-") as tmp:
        os.environ["RECON_CACHE"] = str(Path(tmp) / "cache")
        reference = load_scene(write_demo_scene(Path(tmp) / "reference", views=views, resolution=resolution))
        for lens in args.lenses:
            source = write_demo_scene(Path(tmp) / lens, views=views, resolution=resolution, lens=lens)
            norm, ref = load_scene(source).normalization, reference.normalization  # same poses: same coordinates
            assert norm.scale == ref.scale and np.array_equal(norm.center, ref.center)
            if lens == "opencv":
                first, second, resampled = time_cache(source, Path(tmp) / "cache_timing")
                print(f"undistorted load of the opencv scene: {first:.2f} s with an empty cache, {second:.2f} s from "
                      f"the cache ({resampled} images resampled the second time)", flush=True)
            for model in args.models:
                module, config = (gaussians, g_config) if model == "gaussians" else (nerf, n_config)
                for distortion in ("correct",) if lens == "pinhole" else args.distortions:
                    run = Path(tmp) / f"{lens}-{model}-{distortion}"
                    metrics = module.fit(source, replace(config, distortion=distortion, checkpoint_every=config.steps),
                                         run, resume=False, device=device)
                    fitted, _ = load_run(run, device)
                    pinhole = {**evaluate(fitted, reference), "centre_psnr": centre_psnr(fitted, reference)}
                    rows.append((lens, model, distortion, config.steps, metrics, pinhole))
                    print(f"{lens:8s} {model:9s} {distortion:7s} steps {config.steps:5d}  test PSNR "
                          f"{metrics['test_psnr']:6.2f} dB  SSIM {metrics['test_ssim']:.3f}  at the pinhole cameras "
                          f"{pinhole['test_psnr']:6.2f} dB  SSIM {pinhole['test_ssim']:.3f}  "
                          f"centre {pinhole['centre_psnr']:6.2f} dB  "
                          f"train {metrics['train_seconds']:7.1f} s  {metrics.get('num_gaussians', '-')} Gaussians",
                          flush=True)
    print(f"\n{views} views of {resolution} px, device {args.device}, seed {args.seed}")
    print("| lens | model | distortion | steps | test PSNR | test SSIM | PSNR at the pinhole cameras | SSIM there "
          "| PSNR there, central half | train time | Gaussians |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for lens, model, distortion, steps, m, pin in rows:
        print(f"| {lens} | {model} | {distortion} | {steps} | {m['test_psnr']:.2f} dB | {m['test_ssim']:.3f} | "
              f"{pin['test_psnr']:.2f} dB | {pin['test_ssim']:.3f} | {pin['centre_psnr']:.2f} dB | "
              f"{m['train_seconds']:.0f} s | {m.get('num_gaussians', '-')} |")


if __name__ == "__main__":
    main()
