"""``recon fit SHAPE --model sdf|occupancy``: fit an implicit field to a mesh or a point cloud.

* ``sdf`` (IGR / instant-nsr-pl): geometric sphere initialisation; |f| on surface samples, ``|grad f - n|``
  where normals are known (meshes, oriented clouds), an Eikonal term ``(|grad f| - 1)^2`` on surface,
  near-surface and uniform samples, and for unoriented clouds the off-surface term ``exp(-100 |f|)``.
  A far-field term keeps spurious zero crossings (floating fragments in exported meshes) out of space
  away from the data: fresh uniform points each step, those farther than ``far_margin`` from every
  surface sample (judged through a grid of distances made once) and with a known side, pay
  ``relu(far_margin / 2 - side * f)``. The side is that of the
  nearest surface sample's normal when the offset makes an angle under 60 degrees with it (else the
  point is left out), and outside (+1) for points beyond the surface's bounding box (how unoriented
  clouds get any); the true SDF satisfies the term, so it only bites where the field strays.
* ``occupancy``: binary cross-entropy on a fixed pool of uniform and near-surface samples labelled
  inside/outside by the generalised winding number of the mesh (robust to small holes); meshes only.

The shape is centred and scaled into [-0.8, 0.8]^3 (the ``Normalization`` is saved in checkpoints).
Checkpoints hold the model, optimiser, step, sample pools and RNG state, so ``--resume`` continues the
same run. Mesh inputs are evaluated at the end (Chamfer-L1, normal consistency, F-score@1% on a mesh
extracted at ``eval_resolution``) into metrics.json.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch

from recon.engine.errors import ReconError
from recon.engine.eval.mesh_metrics import mesh_metrics, nearest_neighbours, sample_surface
from recon.engine.io.mesh import Shape, read_shape
from recon.engine.mesh_export import extract_field_mesh
from recon.engine.models.sdf import SHAPE_HALF_SIZE, FieldArchitecture, FieldModel
from recon.engine.scene.scene import Normalization
from recon.engine.train import rundir
from recon.engine.train.options import option


@dataclass
class FieldFitConfig:
    """Options of an SDF / occupancy fit (each becomes a ``recon fit`` option)."""

    kind: Literal["sdf", "occupancy"] = option("sdf", "set by --model", cli=False)
    steps: int = option(3000, "optimisation steps")
    seed: int = option(0, "random seed")
    batch_size: int = option(4096, "surface samples per step (as many off-surface samples)")
    lr: float = option(1e-3, "Adam learning rate (cosine decay to 1/20 of it over the steps)")
    encoding: Literal["frequency", "hashgrid"] = option("frequency", "input encoding of the field network")
    frequencies: int = option(6, "frequency encoding: octaves")
    n_levels: int = option(16, "hash-grid levels")
    log2_table_size: int = option(19, "log2 of the hash table size per level")
    base_resolution: int = option(16, "coarsest grid resolution")
    max_resolution: int = option(2048, "finest grid resolution")
    hidden: int = option(128, "width of the field MLP")
    layers: int = option(3, "hidden layers of the field MLP")
    surface_samples: int = option(250_000, "surface points drawn from a mesh (point clouds use their points)")
    occupancy_samples: int = option(100_000, "labelled samples for occupancy (half uniform, half near-surface)")
    near_sigma: float = option(0.02, "std-dev of near-surface samples (normalised units)")
    eikonal_weight: float = option(0.1, "weight of the Eikonal term (sdf)")
    normal_weight: float = option(1.0, "weight of the normal term (sdf with normals)")
    offsurface_weight: float = option(0.1, "weight of exp(-100|f|) off the surface (sdf, unoriented clouds)")
    far_margin: float = option(0.05, "sdf: far-field points lie farther than this from the surface samples "
                                     "(normalised units; the shape spans 1.6) and keep |f| >= half of it")
    far_weight: float = option(1.0, "sdf: weight of the far-field term (0: none)")
    eval_resolution: int = option(128, "marching-cubes resolution of the final evaluation (0: skip)")
    eval_samples: int = option(20_000, "surface samples per mesh in the final evaluation")
    checkpoint_every: int = option(1000, "save a checkpoint every this many steps (and at the end)")


CONFIG = FieldFitConfig
FAR_REFERENCE = 10_000  # surface samples that far-field distances and sides are measured against
FAR_PER_SAMPLE = 4  # far-field points drawn per surface sample of a batch (they cost one forward pass each)
FAR_GRID = 48  # resolution of the grid of distances and sides the far-field points are looked up in


# ----------------------------------------------------------------------------- data
def shape_normalization(points: np.ndarray) -> Normalization:
    """Centre the bounding box and scale its longest side to ``2 * SHAPE_HALF_SIZE``."""
    lo, hi = points.min(0).astype(np.float64), points.max(0).astype(np.float64)
    half = float((hi - lo).max()) / 2.0
    return Normalization(center=(lo + hi) / 2.0, scale=SHAPE_HALF_SIZE / half if half > 0 else 1.0)


def winding_numbers(points: torch.Tensor, vertices: torch.Tensor, faces: torch.Tensor, chunk: int = 2048
                    ) -> torch.Tensor:
    """Generalised winding number [N] of ``points`` [N, 3] w.r.t. the mesh (Van Oosterom-Strackee angles)."""
    tri = vertices[faces]  # [F, 3, 3]
    out = []
    for p in points.split(chunk):
        d = tri[None] - p[:, None, None]  # [n, F, 3, 3]
        a, b, c = d.unbind(2)
        la, lb, lc = a.norm(dim=-1), b.norm(dim=-1), c.norm(dim=-1)
        det = (a * torch.linalg.cross(b, c)).sum(-1)
        den = la * lb * lc + (a * b).sum(-1) * lc + (b * c).sum(-1) * la + (c * a).sum(-1) * lb
        out.append(torch.atan2(det, den).sum(1) / (2.0 * math.pi))
    return torch.cat(out)


@dataclass
class _Samples:
    """Training data in normalised coordinates."""

    surface: torch.Tensor  # [S, 3]
    normals: torch.Tensor | None  # [S, 3]
    labelled: torch.Tensor | None = None  # occupancy: [M, 3]
    labels: torch.Tensor | None = None  # [M] float 0/1
    far_distance: torch.Tensor | None = None  # sdf: [G^3] grid of far_field_grid
    far_side: torch.Tensor | None = None  # [G^3]


def _oriented_mesh(shape: Shape, norm: Normalization) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised mesh tensors, with faces flipped when the mesh encloses negative volume."""
    vertices = torch.as_tensor(norm.to_normalized(shape.points), dtype=torch.float64)
    faces = torch.as_tensor(shape.faces, dtype=torch.int64)
    if float(torch.linalg.det(vertices[faces]).sum()) < 0:
        faces = faces[:, [0, 2, 1]]
    return vertices, faces


def far_points(points: torch.Tensor, surface: torch.Tensor, normals: torch.Tensor | None, margin: float
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Those of ``points`` [N, 3] farther than ``margin`` from every surface sample [S, 3] whose side is
    clear, and that side [K] (+1 outside, -1 inside; see the module docstring)."""
    distance, side = _nearest_side(points, surface, normals, margin)
    keep = (distance > margin) & (side != 0)
    return points[keep], side[keep]


def _nearest_side(points: torch.Tensor, surface: torch.Tensor, normals: torch.Tensor | None, margin: float
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(distance [N] to the nearest surface sample, side [N]: +1 outside, -1 inside, 0 unclear)."""
    distance, nearest = nearest_neighbours(points, surface)
    lo, hi = surface.min(0).values, surface.max(0).values
    outside_box = ((points < lo - margin) | (points > hi + margin)).any(1)
    side = torch.where(outside_box, 1.0, 0.0)
    if normals is not None:
        offset = torch.nn.functional.normalize(points - surface[nearest], dim=1)
        cosine = (offset * normals[nearest]).sum(1)
        side = torch.where(cosine.abs() >= 0.5, cosine.sign(), side)
    return distance, side


def far_field_grid(surface: torch.Tensor, normals: torch.Tensor | None, margin: float,
                   resolution: int = FAR_GRID) -> tuple[torch.Tensor, torch.Tensor]:
    """(distance, side) [R^3] of the centres of a grid over the domain (see ``_nearest_side``), against
    every n-th surface sample (at most ``FAR_REFERENCE``): the far-field term looks points up in it."""
    stride = -(-len(surface) // FAR_REFERENCE)
    axis = (torch.arange(resolution, dtype=torch.float32) + 0.5) * (2.0 / resolution) - 1.0
    centres = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    return _nearest_side(centres, surface[::stride], None if normals is None else normals[::stride], margin)


def prepare_samples(shape: Shape, norm: Normalization, config: FieldFitConfig, generator: torch.Generator
                    ) -> _Samples:
    """Surface points (+ normals) and, for occupancy, winding-number-labelled samples."""
    if not shape.is_mesh:
        points = torch.as_tensor(norm.to_normalized(shape.points), dtype=torch.float32)
        normals = None if shape.normals is None else torch.nn.functional.normalize(
            torch.as_tensor(shape.normals, dtype=torch.float32), dim=1)
        return _Samples(points, normals)
    vertices, faces = _oriented_mesh(shape, norm)
    surface, normals = sample_surface(vertices, faces, config.surface_samples, generator)
    samples = _Samples(surface.float(), normals.float())
    if config.kind == "occupancy":
        half = config.occupancy_samples // 2
        near = surface[torch.randint(len(surface), (config.occupancy_samples - half,), generator=generator)]
        near = near + config.near_sigma * torch.randn(near.shape, generator=generator, dtype=near.dtype)
        uniform = torch.rand((half, 3), generator=generator, dtype=near.dtype) * 2.0 - 1.0
        labelled = torch.cat([uniform, near])
        samples.labelled = labelled.float()
        samples.labels = (winding_numbers(labelled, vertices, faces) > 0.5).float()
    return samples


# ----------------------------------------------------------------------------- losses
def sdf_loss(model: FieldModel, data: _Samples, config: FieldFitConfig, generator: torch.Generator,
             device: torch.device) -> torch.Tensor:
    """IGR-style loss on one random batch."""
    idx = torch.randint(len(data.surface), (config.batch_size,), generator=generator)
    surface = data.surface[idx].to(device)
    n_uniform = config.batch_size // 2
    near = surface[n_uniform:] + config.near_sigma * torch.randn(
        (config.batch_size - n_uniform, 3), generator=generator).to(device)
    uniform = (torch.rand((n_uniform, 3), generator=generator) * 2.0 - 1.0).to(device)
    values, grad = model.with_gradient(torch.cat([surface, near, uniform]))
    b = config.batch_size
    loss = values[:b].abs().mean() + config.eikonal_weight * ((grad.norm(dim=-1) - 1.0) ** 2).mean()
    if data.normals is not None:
        loss = loss + config.normal_weight * (grad[:b] - data.normals[idx].to(device)).norm(dim=-1).mean()
    else:
        loss = loss + config.offsurface_weight * torch.exp(-100.0 * values[b:].abs()).mean()
    if config.far_weight > 0:
        loss = loss + config.far_weight * _far_loss(model, data, config, generator, device)
    return loss


def _far_loss(model: FieldModel, data: _Samples, config: FieldFitConfig, generator: torch.Generator,
              device: torch.device) -> torch.Tensor:
    """The far-field hinge on ``FAR_PER_SAMPLE * batch_size`` fresh uniform points. A point's distance to
    the surface samples is bounded below by its grid cell centre's less its offset from that centre
    (triangle inequality); points whose bound exceeds ``far_margin`` take the centre's side."""
    if data.far_distance is None:
        return torch.zeros((), device=device)
    resolution = round(len(data.far_distance) ** (1 / 3))
    points = torch.rand((FAR_PER_SAMPLE * config.batch_size, 3), generator=generator) * 2.0 - 1.0
    cell = ((points + 1.0) * (resolution / 2.0)).long().clamp(0, resolution - 1)
    centre = (cell.float() + 0.5) * (2.0 / resolution) - 1.0
    flat = (cell[:, 0] * resolution + cell[:, 1]) * resolution + cell[:, 2]
    bound = data.far_distance[flat] - (points - centre).norm(dim=1)
    side = data.far_side[flat]
    keep = (bound > config.far_margin) & (side != 0)
    if not bool(keep.any()):
        return torch.zeros((), device=device)
    values = model(points[keep].to(device))
    # averaged over all drawn points, so its strength follows the share of space far from the data
    return torch.relu(0.5 * config.far_margin - side[keep].to(device) * values).sum() / len(points)


def occupancy_loss(model: FieldModel, data: _Samples, config: FieldFitConfig, generator: torch.Generator,
                   device: torch.device) -> torch.Tensor:
    """Binary cross-entropy on one random batch of labelled samples."""
    idx = torch.randint(len(data.labelled), (2 * config.batch_size,), generator=generator)
    logits = model(data.labelled[idx].to(device))
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, data.labels[idx].to(device))


# ----------------------------------------------------------------------------- checkpoints
def _architecture(config: FieldFitConfig) -> FieldArchitecture:
    names = {f.name for f in fields(FieldArchitecture)}
    return FieldArchitecture(**{k: v for k, v in asdict(config).items() if k in names})


def _checkpoint(model: FieldModel, optimizer: torch.optim.Optimizer, data: _Samples, generator: torch.Generator,
                config: FieldFitConfig, step: int, source: Path) -> dict[str, Any]:
    return {"kind": config.kind, "step": step, "model": model.checkpoint_state(),
            "optimizer": optimizer.state_dict(), "normalization": model.normalization.to_dict(),
            "config": asdict(config), "source": str(source), "samples": asdict(data),
            "rng": {"torch": torch.get_rng_state(), "generator": generator.get_state()}}


def _learning_rate(config: FieldFitConfig, step: int) -> float:
    return config.lr * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * min(step / max(config.steps, 1), 1.0))))


def _evaluate(model: FieldModel, shape: Shape, config: FieldFitConfig, device: torch.device) -> dict[str, Any]:
    if config.eval_resolution <= 0 or not shape.is_mesh:
        return {}
    v, f = extract_field_mesh(model.field, model.mesh_bounds, config.eval_resolution, model.level, model.inside,
                              device)
    if len(f) == 0:
        return {"mesh_faces": 0, "fscore": 0.0}
    vertices = model.normalization.to_original(v.cpu().double().numpy())
    metrics = mesh_metrics(vertices, f.cpu().numpy(), shape.points, shape.faces, samples=config.eval_samples,
                           seed=config.seed)
    return {"mesh_faces": int(len(f)), **metrics}


# ----------------------------------------------------------------------------- the loop
def fit(source: Path, config: FieldFitConfig, run_dir: Path, *, resume: bool,
        device: torch.device, on_step: Callable[[int, Any, torch.Tensor], None] | None = None) -> dict[str, Any]:
    """Fit an SDF or occupancy field to the shape at ``source``; writes ``run_dir``, returns the metrics."""
    from tqdm import tqdm

    run_dir, source = Path(run_dir), Path(source)
    state, config = rundir.resume_state(run_dir, config.kind, config, resume=resume)
    if config.steps < 1 or config.batch_size < 1:
        raise ReconError(f"--steps and --batch-size must be at least 1, got {config.steps} and {config.batch_size}")
    if config.far_margin <= 0 or config.far_weight < 0:
        raise ReconError(f"--far-margin must be positive and --far-weight at least 0, got {config.far_margin} and "
                         f"{config.far_weight}")
    shape = read_shape(source)
    if config.kind == "occupancy" and not shape.is_mesh:
        raise ReconError(f"{source}: occupancy fitting needs a mesh (.ply/.obj with faces) to tell inside from outside")
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    if state is not None:
        model = FieldModel.from_checkpoint(state, device).train()
        data = _Samples(**state["samples"])
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"]["torch"])
        generator.set_state(state["rng"]["generator"])
        start = int(state["step"])
        rundir.log_line(run_dir, f"resume at step {start}")
    else:
        norm = shape_normalization(shape.points)
        data = prepare_samples(shape, norm, config, generator)
        model = FieldModel(_architecture(config), norm).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        start = 0
        run_dir.mkdir(parents=True, exist_ok=True)
        rundir.write_config(run_dir, {"model": config.kind, "source": str(source), **asdict(config)})
        what = "mesh" if shape.is_mesh else "oriented points" if shape.normals is not None else "unoriented points"
        rundir.log_line(run_dir, f"start: {config.kind} fit to {len(shape.points)} {what}")

    if config.kind == "sdf" and config.far_weight > 0 and data.far_distance is None:
        data.far_distance, data.far_side = far_field_grid(data.surface, data.normals, config.far_margin)
    loss_fn = sdf_loss if config.kind == "sdf" else occupancy_loss
    started = time.perf_counter()
    bar = tqdm(range(start, config.steps), initial=start, total=config.steps, desc=config.kind, leave=False)
    loss = torch.zeros(())
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(config, step)
        loss = loss_fn(model, data, config, generator, device)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        done = step + 1
        if on_step is not None:  # e.g. the live viewer of `recon fit --view`
            on_step(done, model, loss)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if done % config.checkpoint_every == 0 or done == config.steps:
            rundir.save_checkpoint(run_dir, _checkpoint(model, optimizer, data, generator, config, done, source))
            rundir.log_line(run_dir, f"checkpoint at step {done}")
    bar.close()
    model.eval()
    metrics = {"steps": config.steps, "final_loss": loss.item(), "train_seconds": time.perf_counter() - started,
               **_evaluate(model, shape, config, device)}
    rundir.write_metrics(run_dir, metrics)
    rundir.log_line(run_dir, "evaluation: " + ", ".join(f"{k}={v}" for k, v in metrics.items()))
    return metrics
