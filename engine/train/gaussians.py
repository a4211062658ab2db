"""``recon fit --model gaussians``: 3D Gaussian Splatting optimisation as in the 3DGS paper.

Adam with per-attribute learning rates (positions decay exponentially and scale with the scene extent),
loss 0.8 L1 + 0.2 D-SSIM, SH degree raised on a schedule, adaptive density control (``densify.py``),
checkpoints with optimiser, strategy and RNG state (``--resume`` continues bit for bit on CPU) and an
evaluation on the test split at the end (metrics.json, test_renders/*.png).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch

from recon.engine.errors import ReconError
from recon.engine.models.gaussians import GaussianModel
from recon.engine.scene.camera import camera_matrices
from recon.engine.scene.scene import Scene
from recon.engine.train import rundir
from recon.engine.train.options import option
from recon.engine.train.densify import STANDARD_STEPS, DefaultStrategy, MCMCStrategy, Schedule
from recon.engine.train.evaluate import evaluate
from recon.engine.train.metrics import photometric_loss, psnr
from recon.engine.train.optim import exponential_lr, make_adam, set_lr


@dataclass
class GaussianFitConfig:
    """Options of a Gaussian fit (each becomes a ``recon fit`` option)."""

    steps: int = option(30_000, "optimisation steps (the density schedule shrinks in proportion below 30000)")
    seed: int = option(0, "random seed")
    downscale: int = option(1, "image downscale factor (1, 2, 4 or 8)")
    test_every: int = option(8, "hold out every N-th image for testing (0: none)")
    sh_degree: int = option(3, "largest spherical-harmonics degree (0-3)")
    sh_interval: int = option(1000, "raise the SH degree every this many steps (scaled like the schedule)")
    init_points: int = option(100_000, "random initial Gaussians when the scene has no sparse points")
    init_opacity: float = option(0.1, "initial opacity")
    means_lr: float = option(1.6e-4, "initial position learning rate (times the scene extent)")
    means_lr_final: float = option(1.6e-6, "final position learning rate (times the scene extent)")
    sh0_lr: float = option(2.5e-3, "learning rate of the SH DC colours (higher SH use it / 20)")
    opacities_lr: float = option(0.05, "opacity learning rate")
    scales_lr: float = option(5e-3, "scale learning rate")
    quats_lr: float = option(1e-3, "rotation learning rate")
    ssim_weight: float = option(0.2, "weight of the D-SSIM term in the loss")
    random_background: bool = option(False, "composite RGBA training images on a random colour each step")
    strategy: Literal["default", "mcmc"] = option("default", "density control: 3DGS clone/split/prune or MCMC")
    densify_grad_threshold: float = option(2e-4, "screen-space gradient threshold for clone/split")
    absgrad: bool = option(False, "accumulate absolute 2D gradients (AbsGS; use a ~4x larger threshold)")
    prune_opacity: float = option(0.005, "prune Gaussians more transparent than this")
    max_gaussians: int = option(0, "cap on the number of Gaussians (0: none; MCMC defaults to 1000000)")
    antialiased: bool = option(False, "Mip-Splatting style anti-aliased rasterization")
    checkpoint_every: int = option(7000, "save a checkpoint every this many steps (and at the end)")


CONFIG = GaussianFitConfig


# ----------------------------------------------------------------------------- set-up
def _load_scene(source: Path, config: GaussianFitConfig) -> Scene:
    from recon.engine.scene import load_scene

    return load_scene(source, downscale=config.downscale, test_every=config.test_every)


def initial_points(scene: Scene, count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Initial positions [N, 3] and colours [N, 3]: the scene's sparse points, or random points in a cube.

    Without points the cube is the scene's aabb when known, else centred on the point the cameras look at
    with the half-size of the region the narrowest camera sees at that distance.
    """
    if scene.points is not None and len(scene.points) > 0:
        colors = (np.full((len(scene.points), 3), 128, np.uint8) if scene.point_colors is None
                  else scene.point_colors)
        return torch.as_tensor(scene.points, dtype=torch.float32), torch.as_tensor(colors, dtype=torch.float32) / 255
    if scene.aabb is not None:
        low, high = (torch.as_tensor(a, dtype=torch.float32) for a in scene.aabb)
    else:
        from recon.engine.render.paths import look_target

        cams = [f.camera for f in scene.frames]
        target = look_target(cams)
        distance = float(np.mean([np.linalg.norm(c.center - target) for c in cams]))
        half_fov = min(math.atan(0.5 * min(c.width / c.fx, c.height / c.fy)) for c in cams)
        half = distance * math.tan(half_fov)
        low = torch.as_tensor(target - half, dtype=torch.float32)
        high = torch.as_tensor(target + half, dtype=torch.float32)
    points = low + (high - low) * torch.rand(count, 3, generator=generator)
    return points, torch.rand(count, 3, generator=generator)


def _strategy(config: GaussianFitConfig) -> DefaultStrategy | MCMCStrategy:
    schedule = Schedule.scaled(config.steps)
    if config.strategy == "mcmc":
        return MCMCStrategy(max_gaussians=config.max_gaussians or 1_000_000, min_opacity=config.prune_opacity,
                            schedule=schedule)
    return DefaultStrategy(grad_threshold=config.densify_grad_threshold, absgrad=config.absgrad,
                           prune_opacity=config.prune_opacity, max_gaussians=config.max_gaussians,
                           schedule=schedule)


def _learning_rates(config: GaussianFitConfig, extent: float) -> dict[str, float]:
    return {"means": config.means_lr * extent, "quats": config.quats_lr, "scales": config.scales_lr,
            "opacities": config.opacities_lr, "sh0": config.sh0_lr, "shN": config.sh0_lr / 20.0}


class _TrainImages:
    """Training images on the device and a shuffled, resumable order of views."""

    def __init__(self, scene: Scene, device: torch.device):
        self.cameras = [f.camera for f in scene.train_frames]
        if not self.cameras:
            raise ReconError(f"{scene.root}: no training images (check --test-every)")
        self.images = [torch.as_tensor(scene.load_image(i, keep_alpha=True), device=device)
                       for i in scene.train_indices]
        self.viewmats, self.Ks = camera_matrices(self.cameras, device)
        self.order: list[int] = []

    def next_index(self, generator: torch.Generator) -> int:
        if not self.order:
            self.order = torch.randperm(len(self.cameras), generator=generator).tolist()
        return self.order.pop()


def _target(image: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """RGB target [H, W, 3]: RGBA images composited on ``background`` [3]."""
    if image.shape[-1] == 4:
        return image[..., :3] * image[..., 3:] + background * (1.0 - image[..., 3:])
    return image[..., :3]


# ----------------------------------------------------------------------------- checkpoints
def _checkpoint(model: GaussianModel, optimizer: torch.optim.Optimizer, strategy: Any, images: _TrainImages,
                generator: torch.Generator, config: GaussianFitConfig, step: int, source: Path) -> dict[str, Any]:
    return {
        "kind": "gaussians", "step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "strategy": strategy.state_dict(), "normalization": model.normalization.to_dict(),
        "config": asdict(config), "source": str(source),
        "rng": {"torch": torch.get_rng_state(), "generator": generator.get_state(), "order": list(images.order),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
    }


def _restore(state: dict[str, Any], config: GaussianFitConfig, device: torch.device, images: _TrainImages,
             generator: torch.Generator) -> tuple[GaussianModel, torch.optim.Optimizer, Any]:
    """Model, optimiser, strategy and every RNG exactly as checkpoint ``state`` left them."""
    model = GaussianModel.from_checkpoint(state, device)
    optimizer = make_adam(model.params, {g["name"]: g["lr"] for g in state["optimizer"]["param_groups"]})
    optimizer.load_state_dict(state["optimizer"])
    strategy = _strategy(config)
    strategy.load_state_dict({k: (v.to(device) if torch.is_tensor(v) else v) for k, v in state["strategy"].items()})
    torch.set_rng_state(state["rng"]["torch"])
    generator.set_state(state["rng"]["generator"])
    images.order = list(state["rng"]["order"])
    if state["rng"]["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return model, optimizer, strategy


# ----------------------------------------------------------------------------- the loop
def fit(source: Path, config: GaussianFitConfig, run_dir: Path, *, resume: bool,
        device: torch.device, on_step: Callable[[int, Any, torch.Tensor], None] | None = None) -> dict[str, Any]:
    """Fit 3D Gaussians to the scene at ``source``; writes ``run_dir`` and returns the metrics."""
    from tqdm import tqdm

    run_dir = Path(run_dir)
    state, config = rundir.resume_state(run_dir, "gaussians", config, resume=resume, map_location=device)
    if config.sh_degree not in (0, 1, 2, 3):
        raise ReconError(f"--sh-degree must be 0..3, got {config.sh_degree}")
    if config.steps < 1:
        raise ReconError(f"--steps must be at least 1, got {config.steps}")
    scene = _load_scene(source, config)
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    images = _TrainImages(scene, device)
    extent = scene.extent

    if state is not None:
        model, optimizer, strategy = _restore(state, config, device, images, generator)
        start = int(state["step"])
        rundir.log_line(run_dir, f"resume at step {start}")
    else:
        points, colors = initial_points(scene, config.init_points, generator)
        model = GaussianModel.from_points(
            points.to(device), colors.to(device), sh_degree=config.sh_degree, init_opacity=config.init_opacity,
            normalization=scene.normalization, background=scene.background, antialiased=config.antialiased,
            cameras={"train": [f.camera for f in scene.train_frames], "test": [f.camera for f in scene.test_frames]})
        optimizer = make_adam(model.params, _learning_rates(config, extent))
        strategy = _strategy(config)
        start = 0
        run_dir.mkdir(parents=True, exist_ok=True)
        rundir.write_config(run_dir, {"model": "gaussians", "source": str(source), **asdict(config)})
        rundir.log_line(run_dir, f"start: {model.num_gaussians} Gaussians, {len(images.cameras)} train views")

    scale = min(1.0, config.steps / STANDARD_STEPS)
    sh_interval = max(1, round(config.sh_interval * scale))
    lrs = _learning_rates(config, extent)
    fixed_bg = torch.as_tensor(scene.background, dtype=torch.float32, device=device)
    started = time.perf_counter()
    bar = tqdm(range(start, config.steps), initial=start, total=config.steps, desc="gaussians", leave=False)
    for step in bar:
        means_lr = exponential_lr(step, lrs["means"], config.means_lr_final * extent, config.steps)
        set_lr(optimizer, "means", means_lr)
        model.active_sh_degree = min(config.sh_degree, step // sh_interval)
        index = images.next_index(generator)
        background = (torch.rand(3, generator=generator).to(device) if config.random_background else fixed_bg)
        cam = images.cameras[index]
        image, _, info = model.rasterize(images.viewmats[index:index + 1], images.Ks[index:index + 1],
                                         cam.width, cam.height, background=background, absgrad=config.absgrad)
        target = _target(images.images[index], background)
        loss = photometric_loss(image[0], target, config.ssim_weight)
        extra = strategy.regularization(model.params)
        (loss if extra is None else loss + extra).backward()
        strategy.step_pre_optimizer(model.params, info, step)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        strategy.step_post_optimizer(model.params, optimizer, step, extent, generator, means_lr=means_lr)
        done = step + 1
        if on_step is not None:  # e.g. the live viewer of `recon fit --view`
            on_step(done, model, loss)
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}", psnr=f"{psnr(image[0].detach(), target).item():.2f}",
                            n=model.num_gaussians)
        if done % config.checkpoint_every == 0 or done == config.steps:
            rundir.save_checkpoint(run_dir, _checkpoint(model, optimizer, strategy, images, generator, config,
                                                        done, source))
            rundir.log_line(run_dir, f"checkpoint at step {done}: {model.num_gaussians} Gaussians")
    bar.close()
    if start >= config.steps:  # nothing left to do: still evaluate what the run holds
        rundir.log_line(run_dir, f"already at step {start} of {config.steps}")

    metrics = {"steps": config.steps, "num_gaussians": model.num_gaussians,
               "train_seconds": time.perf_counter() - started,
               **evaluate(model, scene, run_dir / "test_renders")}
    rundir.write_metrics(run_dir, metrics)
    rundir.log_line(run_dir, "evaluation: " + ", ".join(f"{k}={v}" for k, v in metrics.items()))
    return metrics

