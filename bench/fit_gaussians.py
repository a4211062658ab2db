"""Benchmark a Gaussian fit: test PSNR/SSIM against wall time and peak memory, and the rasterizer's share.

    .venv/bin/python bench/fit_gaussians.py --device cpu --tiny            # proves it runs (demo, tiny)
    .venv/bin/python bench/fit_gaussians.py --device cuda --scenes demo lego plush --steps 30000

The rasterizer share is measured after the fit on the final model, over ``--share-views`` training steps:
the time of ``rasterize`` forward and backward over the time of the whole step (render, loss, backward,
Adam); density control is not included.
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def scene_source(name: str, work: Path, tiny: bool) -> Path:
    """The folder of scene ``name`` (the demo scene is generated into ``work``)."""
    if name == "demo":
        from recon.engine.scene.demo import write_demo_scene

        return Path(write_demo_scene(work / "demo", views=8 if tiny else 64, resolution=32 if tiny else 128))
    path = SHARED / name
    if not path.is_dir():
        sys.exit(f"{path}: absent (see ../shared/data/MANIFEST.md)")
    return path


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rasterizer_share(run_dir: Path, source: Path, config, device: torch.device, views: int) -> float:
    """Share of a training step's time spent in ``rasterize`` (forward + backward), on the fitted model.

    Each timed step runs as training does, with the backward pass split in two: the loss's gradient with
    respect to the image, then the rasterizer's backward from that gradient.
    """
    from recon.engine.models.registry import load_run
    from recon.engine.scene.camera import camera_matrices
    from recon.engine.train.gaussians import _learning_rates, _load_scene
    from recon.engine.train.metrics import photometric_loss
    from recon.engine.train.optim import make_adam

    model, _ = load_run(run_dir, device)
    scene = _load_scene(source, config)[0]
    optimizer = make_adam(model.params, _learning_rates(config, scene.extent))
    bg = torch.as_tensor(scene.background, dtype=torch.float32, device=device)
    raster_s = step_s = 0.0
    for index in scene.train_indices[:views]:
        cam = scene.frames[index].camera
        viewmats, Ks = camera_matrices([cam], device)
        target = torch.as_tensor(scene.load_image(index), device=device)
        _sync(device)
        t0 = time.perf_counter()
        image, _, _ = model.rasterize(viewmats, Ks, cam.width, cam.height, background=bg)
        _sync(device)
        t1 = time.perf_counter()
        grad = torch.autograd.grad(photometric_loss(image[0], target, config.ssim_weight), image, retain_graph=True)[0]
        _sync(device)
        t2 = time.perf_counter()
        image.backward(grad)
        _sync(device)
        t3 = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        t4 = time.perf_counter()
        raster_s += (t1 - t0) + (t3 - t2)
        step_s += t4 - t0
    return raster_s / max(step_s, 1e-12)


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated (CUDA) or peak resident set size of the process (CPU), in MB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    from recon.engine.train.gaussians import GaussianFitConfig, fit

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--scenes", nargs="+", default=["demo"], choices=["demo", "lego", "plush"])
    parser.add_argument("--steps", type=int, default=30_000)
    parser.add_argument("--downscale", type=int, default=None, help="default: 1 (demo), 2 (lego), 4 (plush)")
    parser.add_argument("--init-points", type=int, default=100_000)
    parser.add_argument("--share-views", type=int, default=5, help="views timed for the rasterizer share")
    parser.add_argument("--tiny", action="store_true", help="CPU smoke size: 30 steps, 300 points, small images")
    args = parser.parse_args()
    device = torch.device(args.device)
    steps, init_points = (30, 300) if args.tiny else (args.steps, args.init_points)
    print(f"device={device} torch={torch.__version__} steps={steps} init_points={init_points}")
    print(f"{'scene':8s} {'gaussians':>9s} {'seconds':>8s} {'peak MB':>8s} {'PSNR':>7s} {'SSIM':>6s} {'raster %':>8s}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in args.scenes:
            source = scene_source(name, work, args.tiny)
            downscale = args.downscale or {"demo": 1, "lego": 8 if args.tiny else 2, "plush": 8 if args.tiny else 4}[name]
            config = GaussianFitConfig(steps=steps, init_points=init_points, downscale=downscale,
                                       checkpoint_every=steps)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            run_dir = work / f"run-{name}"
            started = time.perf_counter()
            metrics = fit(source, config, run_dir, resume=False, device=device)
            _sync(device)
            seconds = time.perf_counter() - started
            memory = peak_memory_mb(device)
            share = rasterizer_share(run_dir, source, replace(config), device, args.share_views)
            print(f"{name:8s} {metrics['num_gaussians']:9d} {seconds:8.1f} {memory:8.0f} "
                  f"{metrics.get('test_psnr', float('nan')):7.2f} {metrics.get('test_ssim', float('nan')):6.3f} "
                  f"{100 * share:7.1f}%")


if __name__ == "__main__":
    main()
