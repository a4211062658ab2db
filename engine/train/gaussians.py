"""``recon fit --model gaussians``: 3D Gaussian Splatting optimisation as in the 3DGS paper.

Adam with per-attribute learning rates (positions decay exponentially and scale with the scene extent),
loss 0.8 L1 + 0.2 D-SSIM, SH degree raised on a schedule, adaptive density control (``densify.py``),
checkpoints with optimiser, strategy and RNG state (``--resume`` continues bit for bit on CPU) and an
evaluation on the test split at the end (metrics.json, test_renders/*.png).

Each step renders ``--batch-size`` views (``batch_render.py``) and averages their losses; Adam's settings
follow Grendel-GS's sqrt(batch) rule (``optim.batch_scaling``). Started by torchrun with several processes,
the fit is distributed: each process holds a shard of the Gaussians, renders its share of every batch and
controls the density of its own shard; shards are rebalanced when they drift apart (``shards.py``) and
rank 0 logs and writes ordinary single-file checkpoints, so a run resumes on any number of processes.
Training images live where ``--images-on`` says (``views.py``).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch

from recon.engine.errors import ReconError
from recon.engine.io.masks import MASK_THRESHOLD, check_threshold
from recon.engine.models.gaussians import GaussianModel
from recon.engine.scene.scene import Scene
from recon.engine.train import distributed, rundir
from recon.engine.train.batch_render import Rendered, render_local, render_sharded
from recon.engine.train.densify import STANDARD_STEPS, DefaultStrategy, MCMCStrategy, RowScope, Schedule
from recon.engine.train.distributed import Group
from recon.engine.train.evaluate import evaluate
from recon.engine.train.metrics import photometric_loss, psnr
from recon.engine.train.optim import batch_scaling, exponential_lr, make_adam, set_lr
from recon.engine.train.options import option
from recon.engine.train.shards import ShardedScope, gather_checkpoint, rebalance, slice_checkpoint
from recon.engine.train.views import IMAGES_ON, Batch, TrainView, TrainViews, image_store


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
    mask_threshold: float = option(MASK_THRESHOLD, "frames with a mask (nerfstudio mask_path): pixels whose mask value "
                                        "(alpha, else the brightest channel, in [0, 1]) is below this do not count")
    random_background: bool = option(False, "composite RGBA training images on a random colour each step")
    strategy: Literal["default", "mcmc"] = option("default", "density control: 3DGS clone/split/prune or MCMC")
    densify_grad_threshold: float = option(2e-4, "screen-space gradient threshold for clone/split")
    absgrad: bool = option(False, "accumulate absolute 2D gradients (AbsGS; use a ~4x larger threshold)")
    prune_opacity: float = option(0.005, "prune Gaussians more transparent than this")
    max_gaussians: int = option(0, "cap on the number of Gaussians (0: none; MCMC defaults to 1000000)")
    antialiased: bool = option(False, "Mip-Splatting style anti-aliased rasterization")
    checkpoint_every: int = option(7000, "save a checkpoint every this many steps (and at the end)")
    batch_size: int = option(1, "views rendered per step (their losses averaged); learning rates scale by sqrt of it"
                                " and Adam's betas by its power, as in Grendel-GS; with N processes each renders"
                                " about 1/N of them")
    distortion: Literal["correct", "ignore"] = option(
        "correct", "lens distortion: correct (Gaussians: images undistorted once into pinhole cameras, cached, pixels"
                   " with no source left out of loss and metrics; NeRF: exact rays through the lens) or ignore"
                   " (every camera treated as a pinhole)")
    max_fov: float = option(120.0, "largest field of view (degrees, across each axis) kept when undistorting; "
                                   "fisheye images beyond it are cropped")
    images_on: Literal["auto", "device", "host", "disk"] = option(
        "auto", "where training images live: on the device, in (pinned) host memory or read from disk, moved to"
                " the device per step; auto: on the device when they need at most 30% of its free memory, else"
                " host memory when they fit in half of what is available, else disk")


CONFIG = GaussianFitConfig


# ----------------------------------------------------------------------------- set-up
def _load_scene(source: Path, config: GaussianFitConfig) -> tuple[Scene, list[str], dict[tuple, tuple]]:
    """The scene, its distorted images undistorted (or their distortion ignored) as ``--distortion`` says, log
    lines saying what was undistorted, and the photo size (W, H) of each undistorted image size."""
    from recon.engine.scene import load_scene
    from recon.engine.scene.undistorted import photo_sizes, scene_for_model

    captured = load_scene(source, downscale=config.downscale, test_every=config.test_every)
    scene, stats = scene_for_model(captured, "gaussians", config.distortion, config.max_fov)
    if stats is None:
        return scene, [], {}
    lines = [f"undistort: {plan.describe()}" for plan in stats.plans]
    lines.append(f"undistort: {stats.resampled} images resampled, {stats.cached} read from the cache")
    return scene, lines, photo_sizes(captured, scene)


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


def _strategy(config: GaussianFitConfig, group: Group) -> DefaultStrategy | MCMCStrategy:
    """The density control of one process (its decisions on caps cover every process's shard)."""
    schedule = Schedule.scaled(config.steps)
    scope = ShardedScope(group) if group.distributed else RowScope()
    if config.strategy == "mcmc":
        return MCMCStrategy(max_gaussians=config.max_gaussians or 1_000_000, min_opacity=config.prune_opacity,
                            schedule=schedule, scope=scope)
    return DefaultStrategy(grad_threshold=config.densify_grad_threshold, absgrad=config.absgrad,
                           prune_opacity=config.prune_opacity, max_gaussians=config.max_gaussians,
                           schedule=schedule, scope=scope)


def _learning_rates(config: GaussianFitConfig, extent: float) -> dict[str, float]:
    return {"means": config.means_lr * extent, "quats": config.quats_lr, "scales": config.scales_lr,
            "opacities": config.opacities_lr, "sh0": config.sh0_lr, "shN": config.sh0_lr / 20.0}


def _train_views(scene: Scene, config: GaussianFitConfig, group: Group) -> TrainViews:
    """The training views, their images stored as ``--images-on`` says, batched as ``--batch-size`` says."""
    cameras = [f.camera for f in scene.train_frames]
    if not cameras:
        raise ReconError(f"{scene.root}: no training images (check --test-every)")
    if not group.world <= config.batch_size <= len(cameras):
        raise ReconError(f"--batch-size must be between the number of processes ({group.world}) and the number of"
                         f" training views ({len(cameras)}), got {config.batch_size}")
    indices = scene.train_indices
    check_threshold(config.mask_threshold)

    def load(i: int) -> tuple[np.ndarray, np.ndarray | None]:  # the mask: mask_path's, times the valid pixels
        mask, valid = scene.load_mask(indices[i], config.mask_threshold), scene.load_valid(indices[i])
        if mask is not None and valid is not None:  # of an undistorted image
            mask = mask * valid
        return scene.load_image(indices[i], keep_alpha=True), valid if mask is None else mask

    copies = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # processes on this host, each holding its images
    store = image_store(load, cameras, group.device, config.images_on, copies)
    return TrainViews(cameras, store, config.batch_size, group.device, group.rank, group.world)


def _target(image: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """RGB target [H, W, 3]: RGBA images composited on ``background`` [3]."""
    if image.shape[-1] == 4:
        return image[..., :3] * image[..., 3:] + background * (1.0 - image[..., 3:])
    return image[..., :3]


def _view_loss(image: torch.Tensor, view: TrainView, background: torch.Tensor, ssim_weight: float) -> torch.Tensor:
    """The photometric loss of one rendered view; pixels its mask excludes count as rendered perfectly."""
    target = _target(view.image, background)
    if view.mask is not None:
        target = torch.lerp(image.detach(), target, view.mask)
    return photometric_loss(image, target, ssim_weight)


def _batch_loss(rendered: Rendered, batch: Batch, backgrounds: torch.Tensor, ssim_weight: float) -> torch.Tensor:
    """This process's share of the batch's mean loss: its views' losses over the batch size."""
    losses = [_view_loss(image, view, backgrounds[j], ssim_weight)
              for image, view, j in zip(rendered.images, batch.views, batch.owned)]
    return torch.stack(losses).sum() / batch.size


def _densify_seed(seed: int, rank: int, step: int = 0) -> int:
    """The seed of process ``rank``'s density-control generator (restarted at ``step`` after a change of world)."""
    return (seed * 1_000_003 + rank * 7_919 + step) % (2 ** 63)


# ----------------------------------------------------------------------------- checkpoints
def _checkpoint(model: GaussianModel, optimizer: torch.optim.Optimizer, strategy: Any, views: TrainViews,
                generator: torch.Generator, densify_generator: torch.Generator, config: GaussianFitConfig,
                step: int, source: Path, group: Group) -> dict[str, Any] | None:
    """The whole-model checkpoint (rank 0; None elsewhere), gathered from every process's shard."""
    local = {
        "kind": "gaussians", "step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "strategy": strategy.state_dict(), "normalization": model.normalization.to_dict(),
        "config": asdict(config), "source": str(source),
        "rng": {"torch": torch.get_rng_state(), "generator": generator.get_state(), "order": list(views.order),
                "densify": distributed.all_gather_objects(densify_generator.get_state(), group),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
    }
    return gather_checkpoint(local, strategy.ROW_STATE, group)


def _restore(state: dict[str, Any], config: GaussianFitConfig, views: TrainViews, generator: torch.Generator,
             densify_generator: torch.Generator, group: Group) -> tuple[GaussianModel, torch.optim.Optimizer, Any]:
    """This process's shard of model, optimiser and strategy, and every RNG, as checkpoint ``state`` left them.

    A run resumed on as many processes as wrote the checkpoint continues exactly; on another number, each
    process's density-control generator restarts from a seed of (seed, rank, step).
    """
    strategy = _strategy(config, group)
    state = slice_checkpoint(state, strategy.ROW_STATE, group.rank, group.world)
    model = GaussianModel.from_checkpoint(state, group.device)
    optimizer = make_adam(model.params, {g["name"]: g["lr"] for g in state["optimizer"]["param_groups"]})
    optimizer.load_state_dict(state["optimizer"])
    strategy.load_state_dict({k: (v.to(group.device) if torch.is_tensor(v) else v)
                              for k, v in state["strategy"].items()})
    rng = state["rng"]
    torch.set_rng_state(rng["torch"])
    generator.set_state(rng["generator"])
    views.order = list(rng["order"])
    saved = rng.get("densify")
    if saved is not None and len(saved) == group.world:
        densify_generator.set_state(saved[group.rank])
    else:
        densify_generator.manual_seed(_densify_seed(config.seed, group.rank, int(state["step"])))
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return model, optimizer, strategy


def _initial_model(scene: Scene, config: GaussianFitConfig, generator: torch.Generator,
                   group: Group) -> GaussianModel:
    """The 3DGS initialisation of the whole model, then this process's rows of it."""
    points, colors = initial_points(scene, config.init_points, generator)
    model = GaussianModel.from_points(
        points.to(group.device), colors.to(group.device), sh_degree=config.sh_degree,
        init_opacity=config.init_opacity, normalization=scene.normalization, background=scene.background,
        antialiased=config.antialiased,
        cameras={"train": [f.camera for f in scene.train_frames], "test": [f.camera for f in scene.test_frames]})
    if not group.distributed:
        return model
    start, stop = distributed.shard_range(model.num_gaussians, group.rank, group.world)
    return _with_params(model, {k: v[start:stop] for k, v in model.params.items()})


def _whole_model(model: GaussianModel, group: Group) -> GaussianModel | None:
    """The model every shard makes up, on rank 0 (None elsewhere); ``model`` itself with one process."""
    if not group.distributed:
        return model
    params = {k: distributed.gather_rows(v, group) for k, v in model.params.items()}
    if not group.is_main:
        return None
    return _with_params(model, {k: v.to(group.device) for k, v in params.items()})


def _with_params(model: GaussianModel, params: dict[str, torch.Tensor]) -> GaussianModel:
    """A model with ``model``'s settings (SH degrees, normalisation, cameras, ...) holding ``params``."""
    return GaussianModel(params, sh_degree=model.sh_degree, active_sh_degree=model.active_sh_degree,
                         normalization=model.normalization, cameras=model.cameras, background=model.background,
                         antialiased=model.antialiased)


# ----------------------------------------------------------------------------- the loop
def _check_config(config: GaussianFitConfig) -> None:
    if config.sh_degree not in (0, 1, 2, 3):
        raise ReconError(f"--sh-degree must be 0..3, got {config.sh_degree}")
    if config.steps < 1:
        raise ReconError(f"--steps must be at least 1, got {config.steps}")
    if config.images_on not in IMAGES_ON:
        raise ReconError(f"--images-on must be one of {', '.join(IMAGES_ON)}, got {config.images_on!r}")


def fit(source: Path, config: GaussianFitConfig, run_dir: Path, *, resume: bool,
        device: torch.device, on_step: Callable[[int, Any, torch.Tensor], None] | None = None) -> dict[str, Any]:
    """Fit 3D Gaussians to the scene at ``source``; writes ``run_dir`` and returns the metrics.

    Inside an initialised torch.distributed process group every process must call it (see the module
    docstring); only rank 0 writes files and returns metrics (the others return an empty dict). ``on_step(step,
    model, loss)`` runs after each optimiser step (the live viewer of ``recon fit --view``; one process only).
    """
    from tqdm import tqdm

    group = distributed.current(device)
    run_dir = Path(run_dir)
    state, config = rundir.resume_state(run_dir, "gaussians", config, resume=resume, map_location="cpu",
                                        mmap=group.distributed)  # each process reads only its shard's rows
    _check_config(config)
    if not group.is_main:  # rank 0 undistorts first, filling the cache the others then read
        distributed.broadcast_object(None, group)
    scene, lens_lines, photo_sizes = _load_scene(source, config)
    if group.is_main:
        distributed.broadcast_object(None, group)
    generator = torch.Generator().manual_seed(config.seed)  # views and backgrounds: the same in every process
    densify_generator = torch.Generator().manual_seed(_densify_seed(config.seed, group.rank))
    torch.manual_seed(config.seed)
    views = _train_views(scene, config, group)
    extent = scene.extent
    log = (lambda message: rundir.log_line(run_dir, message)) if group.is_main else (lambda message: None)
    lr_factor, eps, betas = batch_scaling(config.batch_size)
    lrs = {name: lr * lr_factor for name, lr in _learning_rates(config, extent).items()}

    if state is not None:
        model, optimizer, strategy = _restore(state, config, views, generator, densify_generator, group)
        start = int(state["step"])
        log(f"resume at step {start} on {group.world} process(es)")
    else:
        model = _initial_model(scene, config, generator, group)
        optimizer = make_adam(model.params, lrs, eps=eps, betas=betas)
        strategy = _strategy(config, group)
        start = 0
        if group.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            rundir.write_config(run_dir, {"model": "gaussians", "source": str(source), **asdict(config)})
    sizes = rebalance(model.params, optimizer, strategy, group)  # shard sizes (evened out if they drifted)
    strategy.number_rows(sum(sizes[:group.rank]), sizes[group.rank], group.device)  # a fresh fit (or an old run)
    log(f"start: {sum(sizes)} Gaussians, {len(views.cameras)} train views, batch {config.batch_size},"
        f" {group.world} process(es), images on {views.store.kind}")
    for line in lens_lines:
        log(line)

    render = partial(render_sharded, group=group) if group.distributed else render_local
    scale = min(1.0, config.steps / STANDARD_STEPS)
    sh_interval = max(1, round(config.sh_interval * scale))
    fixed_bg = torch.as_tensor(scene.background, dtype=torch.float32, device=group.device)
    started = time.perf_counter()
    bar = tqdm(range(start, config.steps), initial=start, total=config.steps, desc="gaussians", leave=False,
               disable=not group.is_main)
    for step in bar:
        means_lr = exponential_lr(step, lrs["means"], config.means_lr_final * extent * lr_factor, config.steps)
        set_lr(optimizer, "means", means_lr)
        model.active_sh_degree = min(config.sh_degree, step // sh_interval)
        batch = views.next_batch(generator)
        backgrounds = (torch.rand(batch.size, 3, generator=generator).to(group.device) if config.random_background
                       else fixed_bg.expand(batch.size, 3))
        rendered = render(model, batch, backgrounds, config.absgrad)
        loss = _batch_loss(rendered, batch, backgrounds, config.ssim_weight)
        extra = strategy.regularization(model.params)  # a mean over this shard: weighted by its share
        total = loss + rendered.link
        (total if extra is None else total + extra * (model.num_gaussians / sum(sizes))).backward()
        rendered.finish()
        for info in rendered.infos:
            info["photo_size"] = photo_sizes.get((info["width"], info["height"]))  # undistorted views
            strategy.step_pre_optimizer(model.params, info, step)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        strategy.step_post_optimizer(model.params, optimizer, step, extent, densify_generator, means_lr=means_lr)
        if strategy.schedule.refines_at(step):
            sizes = rebalance(model.params, optimizer, strategy, group)
        done = step + 1
        if on_step is not None:  # e.g. the live viewer of `recon fit --view`
            on_step(done, model, loss)
        if step % 10 == 0:
            batch_loss = distributed.all_reduce_sum(loss.detach(), group)
            first = batch.owned[0]
            view_psnr = psnr(rendered.images[0].detach(), _target(batch.views[0].image, backgrounds[first]))
            bar.set_postfix(loss=f"{batch_loss.item():.4f}", psnr=f"{view_psnr.item():.2f}", n=sum(sizes))
        if done % config.checkpoint_every == 0 or done == config.steps:
            saved = _checkpoint(model, optimizer, strategy, views, generator, densify_generator, config, done,
                                source, group)
            if group.is_main:
                rundir.save_checkpoint(run_dir, saved)
            log(f"checkpoint at step {done}: {sum(sizes)} Gaussians")
    bar.close()
    if start >= config.steps:  # nothing left to do: still evaluate what the run holds
        log(f"already at step {start} of {config.steps}")

    train_seconds = time.perf_counter() - started
    whole = _whole_model(model, group)
    if whole is None:  # not rank 0: done (rank 0 evaluates the whole model alone)
        return {}
    metrics = {"steps": config.steps, "num_gaussians": whole.num_gaussians, "train_seconds": train_seconds,
               **evaluate(whole, scene, run_dir / "test_renders")}
    rundir.write_metrics(run_dir, metrics)
    log("evaluation: " + ", ".join(f"{k}={v}" for k, v in metrics.items()))
    return metrics
