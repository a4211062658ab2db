"""``recon fit --model nerf``: instant-ngp style hash-grid NeRF training.

Random rays from all training pixels each step, stratified samples that skip empty cells of an
occupancy grid (updated every ``grid_update_every`` steps), volume rendering by ``composite_rays``, MSE
loss against images composited on a random background (RGBA data), Adam (lr 1e-2, eps 1e-15) with step
decay. Checkpoints carry model, occupancy grid, optimiser and RNG state, so ``--resume`` continues
exactly; the end evaluates the test split (metrics.json, test_renders/*.png).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch

from recon.engine.errors import ReconError
from recon.engine.models.nerf import NerfArchitecture, NerfModel
from recon.engine.models.rays import camera_tensors, lens_directions, pixel_rays, rotate_rays
from recon.engine.scene.scene import Scene
from recon.engine.train import rundir
from recon.engine.train.options import option
from recon.engine.train.evaluate import evaluate
from recon.engine.train.occupancy_grid import OccupancyGrid
from recon.engine.train.threads import cpu_threads


@dataclass
class NerfFitConfig:
    """Options of a NeRF fit (each becomes a ``recon fit`` option)."""

    steps: int = option(20_000, "optimisation steps")
    seed: int = option(0, "random seed")
    downscale: int = option(1, "image downscale factor (1, 2, 4 or 8)")
    test_every: int = option(8, "hold out every N-th image for testing (0: none)")
    batch_rays: int = option(0, "rays of the first step (0: 4096 on a GPU, 1024 on the CPU); later steps adapt "
                                "the count to --batch-samples")
    batch_samples: int = option(0, "samples to train per step: each step scales the rays by this over the "
                                   "samples the last step trained, as instant-ngp does (0: 2^18 on a GPU, "
                                   "2^15 on the CPU)")
    samples_per_ray: int = option(256, "samples per ray before empty-space skipping")
    lr: float = option(1e-2, "Adam learning rate (decays 3x at 50%, 75% and 90% of the steps)")
    n_levels: int = option(16, "hash-grid levels")
    n_features: int = option(2, "features per hash-grid level")
    log2_table_size: int = option(19, "log2 of the hash table size per level")
    base_resolution: int = option(16, "coarsest grid resolution")
    max_resolution: int = option(2048, "finest grid resolution")
    hidden: int = option(64, "width of the density and colour MLPs")
    scene_box: Literal["auto", "box", "contract"] = option(
        "auto", "object box (box), mip-NeRF 360 contraction (contract) or by format (auto: box for "
        "Blender/demo scenes or a scene aabb, else contract)")
    box_radius: float = option(1.0, "half-size of the object box (normalised units) around the cameras' focus "
                              "point when the scene has no aabb")
    random_background: bool = option(True, "composite RGBA training images on a random colour per ray")
    distortion: Literal["correct", "ignore"] = option("correct", "lens distortion: correct (exact rays through the "
                                                      "lens) or ignore (every camera treated as a pinhole)")
    grid_resolution: int = option(0, "occupancy grid cells per axis (0: 128 on a GPU, 64 on the CPU)")
    grid_update_every: int = option(16, "update the occupancy grid every this many steps")
    threads: int = option(0, "CPU threads when fitting on the CPU (0: the cores the load average leaves idle, "
                             "unless OMP_NUM_THREADS is set)")
    checkpoint_every: int = option(5000, "save a checkpoint every this many steps (and at the end)")
    eval_every: int = option(0, "also measure test PSNR every this many steps (metrics.json 'curve'; "
                              "0: only at the end)")


CONFIG = NerfFitConfig
# Sizes the "0: by device" options take: instant-ngp's on a GPU; on the CPU, where every sample costs
# microseconds, an eighth of the samples per step and of the grid cells (docs/benchmarks.md, issue 19).
DEVICE_SIZES = {"cuda": {"batch_rays": 4096, "batch_samples": 2**18, "grid_resolution": 128},
                "cpu": {"batch_rays": 1024, "batch_samples": 2**15, "grid_resolution": 64}}
BOX_FORMATS = ("blender", "demo")


def architecture(config: NerfFitConfig, scene: Scene) -> NerfArchitecture:
    """The model layout for ``scene``: an object box or a contracted unbounded space."""
    bounded = config.scene_box == "box" or (
        config.scene_box == "auto" and (scene.aabb is not None or scene.source_format in BOX_FORMATS))
    if scene.aabb is not None and config.scene_box != "contract":
        box = tuple(tuple(float(v) for v in row) for row in np.asarray(scene.aabb))
    else:  # a cube around the point the cameras look at
        from recon.engine.render.paths import look_target

        center = look_target([f.camera for f in scene.frames]) if bounded else np.zeros(3)
        box = (tuple(float(c) - config.box_radius for c in center), tuple(float(c) + config.box_radius for c in center))
    return NerfArchitecture(
        bounded=bounded, box=box, n_levels=config.n_levels, n_features=config.n_features,
        log2_table_size=config.log2_table_size, base_resolution=config.base_resolution,
        max_resolution=config.max_resolution, hidden=config.hidden, n_samples=config.samples_per_ray,
        background=tuple(float(c) for c in scene.background))


def sized_for(config: NerfFitConfig, device: torch.device) -> NerfFitConfig:
    """``config`` with its "0: by device" options (batch rays and samples, grid resolution) set for ``device``."""
    sizes = DEVICE_SIZES["cuda" if device.type == "cuda" else "cpu"]
    return replace(config, **{name: value for name, value in sizes.items() if getattr(config, name) == 0})


def next_ray_count(rays: int, samples: int, config: NerfFitConfig) -> int:
    """Rays for the next step: ``rays`` scaled so that it trains about ``batch_samples`` samples when this step
    trained ``samples`` (at most doubling per step; between 64 and 16x the first step's rays)."""
    scale = min(2.0, config.batch_samples / max(samples, 1))
    return int(min(max(64, round(rays * scale)), 16 * config.batch_rays))


def learning_rate(config: NerfFitConfig, step: int) -> float:
    """Step decay: the base rate divided by 3 at 50%, 75% and 90% of the steps."""
    drops = sum(step >= config.steps * f for f in (0.5, 0.75, 0.9))
    return config.lr / 3.0**drops


class _TrainPixels:
    """Every training pixel (RGBA, float16) with its camera, for drawing random rays.

    When a camera has lens distortion, each distinct camera's pixel directions are computed once (exact, through
    the lens) and rays index them; pinhole-only scenes compute rays from the intrinsics.
    """

    def __init__(self, scene: Scene, device: torch.device):
        frames = scene.train_frames
        if not frames:
            raise ReconError(f"{scene.root}: no training images (check --test-every)")
        images = []
        for i in scene.train_indices:
            image = torch.as_tensor(scene.load_image(i, keep_alpha=True))
            if image.shape[-1] == 3:
                image = torch.cat([image, torch.ones_like(image[..., :1])], dim=-1)
            images.append(image.reshape(-1, 4).to(device, torch.float16))
        self.pixels = torch.cat(images)  # [P, 4]
        sizes = torch.tensor([len(im) for im in images], device=device)
        self.offsets = torch.cumsum(sizes, 0) - sizes  # [F] first pixel of each frame
        self.widths = torch.tensor([f.camera.width for f in frames], device=device)
        self.c2w, self.intrinsics = camera_tensors([f.camera for f in frames], device)
        self.lens, self.lens_offsets = self._lens_maps([f.camera for f in frames], device)

    @staticmethod
    def _lens_maps(cameras: list, device: torch.device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Camera-space directions [D, 3] of the pixels of each distinct camera and each frame's first row in
        them [F]; (None, None) when every camera is a pinhole."""
        if all(c.is_pinhole for c in cameras):
            return None, None
        first: dict[tuple, int] = {}
        maps, offsets, rows = [], [], 0
        for c in cameras:
            key = (c.model, c.width, c.height, c.fx, c.fy, c.cx, c.cy, tuple(sorted(c.distortion.items())))
            if key not in first:
                first[key] = rows
                maps.append(lens_directions(c, device))
                rows += len(maps[-1])
            offsets.append(first[key])
        return torch.cat(maps), torch.tensor(offsets, device=device)

    def sample(self, count: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        """Origins [B, 3], unit directions [B, 3] and RGBA [B, 4] of ``count`` random pixels."""
        index = torch.randint(0, len(self.pixels), (count,), generator=generator).to(self.pixels.device)
        frame = torch.searchsorted(self.offsets, index, right=True) - 1
        local = index - self.offsets[frame]
        width = self.widths[frame]
        if self.lens is not None:
            origins, directions = rotate_rays(self.c2w[frame], self.lens[self.lens_offsets[frame] + local])
            return origins, directions, self.pixels[index].float()
        x, y = (local % width).float() + 0.5, torch.div(local, width, rounding_mode="floor").float() + 0.5
        origins, directions = pixel_rays(self.c2w[frame], self.intrinsics[frame], x, y)
        return origins, directions, self.pixels[index].float()


def _checkpoint(model: NerfModel, optimizer: torch.optim.Optimizer, generator: torch.Generator,
                config: NerfFitConfig, step: int, rays: int, source: Path, scene: Scene) -> dict[str, Any]:
    return {"kind": "nerf", "step": step, "rays": rays, **model.checkpoint_state(), "optimizer": optimizer.state_dict(),
            "normalization": scene.normalization.to_dict(), "config": asdict(config), "source": str(source),
            "rng": {"torch": torch.get_rng_state(), "generator": generator.get_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}}


def _optimizer(model: NerfModel, lr: float) -> torch.optim.Adam:
    """Adam as instant-ngp sets it; the fused implementation (one pass over the 2^19-row tables, about
    half the CPU time of the per-tensor loop) where torch has one for the device."""
    fused = model.device.type in ("cpu", "cuda")
    return torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.99), eps=1e-15, fused=fused)


def _restore(state: dict[str, Any], device: torch.device,
             generator: torch.Generator) -> tuple[NerfModel, torch.optim.Optimizer]:
    model = NerfModel.from_checkpoint(state, device)
    optimizer = _optimizer(model, state["optimizer"]["param_groups"][0]["lr"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"]["torch"])
    generator.set_state(state["rng"]["generator"])
    if state["rng"]["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return model, optimizer


def _check(config: NerfFitConfig) -> None:
    problems = [f"--{name.replace('_', '-')} must be at least 1, got {getattr(config, name)}"
                for name in ("steps", "samples_per_ray", "n_levels", "grid_update_every", "checkpoint_every")
                if getattr(config, name) < 1]
    problems += [f"--{name.replace('_', '-')} must be 0 (by device) or more, got {getattr(config, name)}"
                 for name in ("batch_rays", "batch_samples", "grid_resolution") if getattr(config, name) < 0]
    if config.eval_every < 0:
        problems.append(f"--eval-every must be 0 or more, got {config.eval_every}")
    if config.n_features not in (1, 2, 4, 8):
        problems.append(f"--n-features must be 1, 2, 4 or 8, got {config.n_features}")
    if not 8 <= config.log2_table_size <= 24:
        problems.append(f"--log2-table-size must be 8..24, got {config.log2_table_size}")
    if problems:
        raise ReconError(problems[0])


def fit(source: Path, config: NerfFitConfig, run_dir: Path, *, resume: bool,
        device: torch.device, on_step: Callable[[int, Any, torch.Tensor], None] | None = None) -> dict[str, Any]:
    """Fit a hash-grid NeRF to the scene at ``source``; writes ``run_dir`` and returns the metrics."""
    with cpu_threads(config.threads, device) as threads:
        return _fit(source, config, run_dir, resume=resume, device=device, on_step=on_step, threads=threads)


def _fit(source: Path, config: NerfFitConfig, run_dir: Path, *, resume: bool, device: torch.device,
         on_step: Callable[[int, Any, torch.Tensor], None] | None, threads: int) -> dict[str, Any]:
    from tqdm import tqdm

    from recon.engine.scene import load_scene
    from recon.engine.scene.undistorted import scene_for_model

    run_dir = Path(run_dir)
    state, config = rundir.resume_state(run_dir, "nerf", config, resume=resume, map_location=device)
    _check(config)
    config = sized_for(config, device)
    scene = load_scene(source, downscale=config.downscale, test_every=config.test_every).normalized()
    scene, _ = scene_for_model(scene, "nerf", config.distortion)  # exact rays through each lens, or none
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    pixels = _TrainPixels(scene, device)

    if state is not None:
        model, optimizer = _restore(state, device, generator)
        start, rays = int(state["step"]), int(state.get("rays", config.batch_rays))
        rundir.log_line(run_dir, f"resume at step {start}")
    else:
        arch = architecture(config, scene)
        model = NerfModel(arch).to(device)
        model.grid = OccupancyGrid(config.grid_resolution, threshold=0.01 / model.nominal_step, device=device)
        optimizer = _optimizer(model, config.lr)
        start, rays = 0, config.batch_rays
        run_dir.mkdir(parents=True, exist_ok=True)
        rundir.write_config(run_dir, {"model": "nerf", "source": str(source), **asdict(config)})
        rundir.log_line(run_dir, f"start: {len(scene.train_indices)} train views, "
                                 f"{'box' if arch.bounded else 'contracted'} scene, {config.batch_rays} rays "
                                 f"(then about {config.batch_samples} samples) per step, occupancy grid "
                                 f"{config.grid_resolution}^3 on {device.type}"
                                 + (f" ({threads} threads)" if device.type == "cpu" else ""))

    fixed_bg = torch.as_tensor(scene.background, dtype=torch.float32, device=device)
    curve: list[dict[str, float]] = []
    train_seconds, tick = 0.0, time.perf_counter()
    bar = tqdm(range(start, config.steps), initial=start, total=config.steps, desc="nerf", leave=False)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, step)
        if step % config.grid_update_every == 0:
            model.grid.update(model.unit_density, generator)
        origins, directions, rgba = pixels.sample(rays, generator)
        background = (torch.rand(len(rgba), 3, generator=generator).to(device) if config.random_background
                      else fixed_bg.expand(len(rgba), 3))
        target = rgba[:, :3] * rgba[:, 3:] + background * (1.0 - rgba[:, 3:])
        jitter = torch.rand(len(rgba), 1, generator=generator).to(device)
        out = model.render_rays(origins, directions, background, jitter)
        loss = torch.mean((out["rgb"] - target) ** 2)
        if loss.requires_grad:  # no sample survived the occupancy grid: nothing to learn this step
            loss.backward()
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        done, rays = step + 1, next_ray_count(rays, out["samples"], config)
        if on_step is not None:  # e.g. the live viewer of `recon fit --view`
            on_step(done, model, loss)
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.5f}", psnr=f"{-10 * math.log10(max(loss.item(), 1e-10)):.2f}",
                            samples=out["samples"], rays=len(rgba))
        if done % config.checkpoint_every == 0 or done == config.steps:
            rundir.save_checkpoint(run_dir, _checkpoint(model, optimizer, generator, config, done, rays, source, scene))
            rundir.log_line(run_dir, f"checkpoint at step {done}")
        if config.eval_every > 0 and done % config.eval_every == 0 and scene.test_indices:
            train_seconds += time.perf_counter() - tick
            curve.append({"step": done, "train_seconds": train_seconds,
                          "test_psnr": evaluate(model, scene)["test_psnr"]})
            tick = time.perf_counter()
    bar.close()
    train_seconds += time.perf_counter() - tick
    if start >= config.steps:
        rundir.log_line(run_dir, f"already at step {start} of {config.steps}")

    metrics = {"steps": config.steps, "train_seconds": train_seconds,
               "occupied_fraction": float(model.grid.occupied.float().mean()),
               **evaluate(model, scene, run_dir / "test_renders"), **({"curve": curve} if curve else {})}
    rundir.write_metrics(run_dir, metrics)
    rundir.log_line(run_dir, "evaluation: " + ", ".join(f"{k}={v}" for k, v in metrics.items()))
    return metrics
