"""Adaptive density control of 3D Gaussians, as small strategy objects with saveable state.

``DefaultStrategy`` is the 3DGS scheme (clone small / split large Gaussians whose screen-space mean
gradient is high, prune transparent and huge ones, reset opacities periodically); ``MCMCStrategy``
relocates dead Gaussians onto live ones and grows by a fixed fraction up to a cap (3DGS-MCMC).
Both work on the named parameters of ``GaussianModel`` (raw values: ``means``, ``quats``, log
``scales``, logit ``opacities``, ``sh0``, ``shN``) and keep the Adam state in step via ``optim``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import torch

from recon.engine.errors import ReconError
from recon.engine.models.gaussians import quat_to_rotmat
from recon.engine.train.optim import Params, append_rows, keep_rows, reset_rows

STANDARD_STEPS = 30_000


@dataclass
class Schedule:
    """When density control runs, in optimisation steps."""

    refine_start: int = 500
    refine_stop: int = 15_000
    refine_every: int = 100
    reset_every: int = 3_000

    @classmethod
    def scaled(cls, steps: int) -> "Schedule":
        """The standard 30k-step schedule shrunk in proportion to ``steps`` (unchanged for >= 30k).

        Intervals keep a floor (10 steps between refinements) so gradient statistics still average
        over several views.
        """
        f = min(1.0, steps / STANDARD_STEPS)
        return cls(refine_start=round(500 * f), refine_stop=round(15_000 * f),
                   refine_every=max(10, round(100 * f)), reset_every=max(30, round(3_000 * f)))

    def refines_at(self, step: int) -> bool:
        return self.refine_start < step < self.refine_stop and step % self.refine_every == 0

    def resets_at(self, step: int) -> bool:
        return 0 < step < self.refine_stop and step % self.reset_every == 0


_MASK32 = 0xFFFFFFFF


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """An integer hash of int64 tensors holding 32-bit values (Wellons' lowbias32; products wrap in int64)."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _MASK32
    return x ^ (x >> 16)


def _split64(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return ids & _MASK32, (ids >> 32) & _MASK32


def child_ids(ids: torch.Tensor, step: int, child: int) -> torch.Tensor:
    """Identities [M] (int64, 62 bits) of the ``child``-th Gaussian made from each of ``ids`` at ``step``."""
    low, high = _split64(ids)
    a = _hash32(low ^ _hash32(high ^ ((step * 8 + child) & _MASK32)))
    b = _hash32(a ^ high ^ 0x5BD1E995)
    return (a << 30) ^ b


def keyed_normal(ids: torch.Tensor, step: int, draws: int) -> torch.Tensor:
    """Standard normal samples [draws, M, 3] that depend only on the identities ``ids`` [M] (int64) and ``step``.

    A counter-based generator (hash of identity, step and counter; Box-Muller): unlike a stream generator, a
    row's samples do not depend on which other rows are drawn with it, nor in which order, nor where.
    """
    low, high = _split64(ids)
    seed = _hash32(high ^ _hash32(low ^ _hash32(torch.full_like(low, step & _MASK32))))
    counter = torch.arange(draws * 3 * 2, device=ids.device).view(draws, 1, 3, 2)
    uniform = (_hash32(seed[None, :, None, None] ^ _hash32(counter + 0x9E3779B9)).double() + 0.5) / 2.0 ** 32
    radius = torch.sqrt(-2.0 * torch.log(uniform[..., 0]))
    return (radius * torch.cos(2.0 * math.pi * uniform[..., 1])).float()


class RowScope:
    """The whole model as one process sees it, for density decisions made on the whole model.

    This one is a model held by a single process; a distributed fit gives each process's strategy a
    ``shards.ShardedScope``, whose answers cover every shard (and which every process must call alike).
    """

    def total(self, count: int) -> int:
        """Gaussians in the whole model, given the ``count`` this process holds."""
        return count

    def highest(self, scores: torch.Tensor, k: int) -> torch.Tensor:
        """Mask [N] of the rows whose ``scores`` are among the ``k`` highest non-negative ones of the whole
        model (every non-negative one when there are at most ``k``)."""
        candidates = scores >= 0
        if int(candidates.sum()) <= k:
            return candidates
        mask = torch.zeros_like(candidates)
        mask[torch.topk(scores, k).indices] = True
        return mask

    def share(self, count: int) -> int:
        """This process's part of ``count`` new rows for the whole model."""
        return count


def screen_grad_norms(info: dict[str, Any], absgrad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Norms of the 2D-mean gradients in pixel-independent units, with the Gaussians they belong to.

    As in gsplat, gradients w.r.t. pixel coordinates are multiplied by (W/2, H/2) and the number of
    cameras whose losses the step averages (``info["n_cameras"]``, by default the cameras of ``info``), so the
    threshold depends neither on the image size nor on the batch size. Views resampled from photos of another
    size (undistorted images are larger than their photos at the same focal length) give
    ``info["photo_size"]`` (W0, H0): the loss averages over W * H rendered pixels, so the factors become
    (W H / 2 H0, W H / 2 W0), the gradients the photos themselves would give. Returns (norms [M], gaussian
    ids [M]) over the visible (camera, Gaussian) pairs.
    """
    means2d = info["means2d"]
    grad = getattr(means2d, "absgrad", None) if absgrad else means2d.grad
    if grad is None:
        raise ReconError("absgrad density control needs rasterize(..., absgrad=True) in the training step"
                         if absgrad else "no gradient reached the 2D means (was backward() called?)")
    grad = grad.detach().clone()
    n_cameras = info.get("n_cameras", grad.shape[0])
    width, height = info["width"], info["height"]
    photo_width, photo_height = info.get("photo_size") or (width, height)
    grad[..., 0] *= width * height / (2.0 * photo_height) * n_cameras
    grad[..., 1] *= width * height / (2.0 * photo_width) * n_cameras
    visible = (info["radii"] > 0).all(dim=-1)  # [C, N]
    ids = torch.where(visible)[1]
    return grad[visible].norm(dim=-1), ids


@dataclass
class DefaultStrategy:
    """3DGS adaptive density control.

    Attributes:
        grad_threshold: clone/split when the mean screen gradient exceeds this (2e-4; use ~8e-4 with absgrad).
        absgrad: accumulate absolute gradients (AbsGS) instead of plain ones.
        prune_opacity: remove Gaussians more transparent than this.
        grow_scale3d: Gaussians larger than this fraction of the scene extent are split, smaller cloned.
        prune_scale3d: after the first opacity reset, remove Gaussians larger than this fraction.
        max_gaussians: never grow beyond this count (0: no cap); the highest gradients go first.
        schedule: the steps at which refinement and opacity resets run.
    """

    grad_threshold: float = 2e-4
    absgrad: bool = False
    prune_opacity: float = 0.005
    grow_scale3d: float = 0.01
    prune_scale3d: float = 0.1
    max_gaussians: int = 0
    schedule: Schedule = field(default_factory=Schedule)
    scope: RowScope = field(default_factory=RowScope, repr=False)
    ROW_STATE: ClassVar[tuple[str, ...]] = ("grad2d", "count", "ids")  # per Gaussian (sharded like parameters)
    grad2d: torch.Tensor | None = None  # [N] summed gradient norms since the last refinement
    count: torch.Tensor | None = None  # [N] how many views saw each Gaussian
    ids: torch.Tensor | None = None  # [N] int64 identity of each Gaussian (keys the noise of its splits)

    def state_dict(self) -> dict[str, Any]:
        return {"grad2d": self.grad2d, "count": self.count, "ids": self.ids}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.grad2d, self.count, self.ids = state["grad2d"], state["count"], state.get("ids")

    def number_rows(self, first: int, count: int, device: torch.device | str) -> None:
        """Give rows without an identity the identities ``first``, ``first + 1``, ... (their index in the whole
        model: a process holding a shard passes the index of its first row)."""
        if self.ids is None:
            self.ids = torch.arange(first, first + count, device=device)

    def _row_ids(self, n: int, device: torch.device) -> torch.Tensor:
        self.number_rows(0, n, device)  # a model held by one process: identities are row indices
        if self.ids.shape[0] != n:
            raise RuntimeError(f"density control: {n} Gaussians but {self.ids.shape[0]} identities")
        return self.ids

    def step_pre_optimizer(self, params: Params, info: dict[str, Any], step: int) -> None:
        """Accumulate the screen-space gradient statistics of this step (after ``backward``)."""
        if step >= self.schedule.refine_stop:
            return
        n = params["means"].shape[0]
        if self.grad2d is None or self.grad2d.shape[0] != n:
            self.grad2d = torch.zeros(n, device=params["means"].device)
            self.count = torch.zeros(n, device=params["means"].device)
        norms, ids = screen_grad_norms(info, self.absgrad)
        self.grad2d.index_add_(0, ids, norms)
        self.count.index_add_(0, ids, torch.ones_like(norms))

    def regularization(self, params: Params) -> torch.Tensor | None:
        """No extra loss term."""
        return None

    def step_post_optimizer(self, params: Params, optimizer: torch.optim.Optimizer, step: int, extent: float,
                            generator: torch.Generator | None = None, means_lr: float = 0.0) -> dict[str, int]:
        """Refine and reset on schedule (after ``optimizer.step()``); returns counts of what changed.

        ``generator`` and ``means_lr`` are unused here (the MCMC strategy samples with them); splits draw
        ``keyed_normal`` samples instead.
        """
        stats = {"cloned": 0, "split": 0, "pruned": 0}
        if self.schedule.refines_at(step) and self.grad2d is not None:
            stats["cloned"], stats["split"] = self._grow(params, optimizer, extent, step)
            stats["pruned"] = self._prune(params, optimizer, extent, step)
            n = params["means"].shape[0]
            self.grad2d = torch.zeros(n, device=params["means"].device)
            self.count = torch.zeros(n, device=params["means"].device)
        if self.schedule.resets_at(step):
            ceiling = torch.logit(torch.tensor(2.0 * self.prune_opacity)).item()
            reset_rows(optimizer, params, "opacities", params["opacities"].detach().clamp_max(ceiling))
        return stats

    def _grow(self, params: Params, optimizer: torch.optim.Optimizer, extent: float, step: int) -> tuple[int, int]:
        ids = self._row_ids(params["means"].shape[0], params["means"].device)
        avg = self.grad2d / self.count.clamp_min(1)
        high = avg > self.grad_threshold
        if self.max_gaussians > 0:
            budget = max(0, self.max_gaussians - self.scope.total(params["means"].shape[0]))
            high = self.scope.highest(torch.where(high, avg, torch.full_like(avg, -1.0)), budget)
        small = torch.exp(params["scales"].detach()).max(dim=-1).values <= self.grow_scale3d * extent
        clone, split = high & small, high & ~small
        if clone.any():
            append_rows(optimizer, params, {k: p.detach()[clone] for k, p in params.items()})
            ids = torch.cat([ids, child_ids(ids[clone], step, 0)])
        if split.any():
            split = torch.cat([split, torch.zeros(int(clone.sum()), dtype=torch.bool, device=split.device)])
            ids = self._split(params, optimizer, split, ids, step)
        self.ids = ids
        return int(clone.sum()), int(split.sum())

    @staticmethod
    def _split(params: Params, optimizer: torch.optim.Optimizer, split: torch.Tensor, ids: torch.Tensor,
               step: int) -> torch.Tensor:
        """Replace each selected Gaussian by two samples from it, with scales shrunk by 1.6; returns the new ids.

        The samples are ``keyed_normal`` of the Gaussian's identity and the step: a Gaussian splits the same
        way wherever it is stored, so a fit sharded across processes makes the splits of a single-process one.
        """
        rows = {k: p.detach()[split] for k, p in params.items()}
        scales = torch.exp(rows["scales"])
        rot = quat_to_rotmat(rows["quats"])
        noise = keyed_normal(ids[split], step, draws=2).to(scales)
        offsets = torch.einsum("nij,bnj->bni", rot, noise * scales)  # [2, M, 3]
        new = {k: torch.cat([v, v]) for k, v in rows.items()}
        new["means"] = (rows["means"][None] + offsets).reshape(-1, 3)
        new["scales"] = torch.log(scales / 1.6).repeat(2, 1)
        keep_rows(optimizer, params, ~split)
        append_rows(optimizer, params, new)
        return torch.cat([ids[~split], child_ids(ids[split], step, 1), child_ids(ids[split], step, 2)])

    def _prune(self, params: Params, optimizer: torch.optim.Optimizer, extent: float, step: int) -> int:
        prune = torch.sigmoid(params["opacities"].detach()) < self.prune_opacity
        if step > self.schedule.reset_every:
            prune |= torch.exp(params["scales"].detach()).max(dim=-1).values > self.prune_scale3d * extent
        if prune.all():  # never empty the scene
            prune[torch.argmax(params["opacities"].detach())] = False
        if prune.any():
            keep_rows(optimizer, params, ~prune)
            self.ids = self.ids[~prune]
        return int(prune.sum())

    def describe(self) -> dict[str, Any]:
        """The settings (for logs and configs)."""
        return {k: v for k, v in asdict(self).items() if k not in ("grad2d", "count", "ids", "scope")}


@dataclass
class MCMCStrategy:
    """3DGS as MCMC: dead Gaussians are relocated onto live ones, the count grows 5% per refinement to a cap.

    Training adds position noise scaled by the learning rate and an opacity/scale regulariser (see
    ``_noise_means`` and ``regularization``); density control never clones by gradient. Simplification
    against the paper: relocated and added Gaussians keep their source's scale (only opacity is shared).
    """

    max_gaussians: int = 1_000_000
    min_opacity: float = 0.005
    grow_rate: float = 0.05
    noise_lr: float = 5e5
    opacity_reg: float = 0.01
    scale_reg: float = 0.01
    schedule: Schedule = field(default_factory=Schedule)
    scope: RowScope = field(default_factory=RowScope, repr=False)
    ROW_STATE: ClassVar[tuple[str, ...]] = ()

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def number_rows(self, first: int, count: int, device: torch.device | str) -> None:
        """MCMC keeps no identities (its sampling is per process)."""

    def step_pre_optimizer(self, params: Params, info: dict[str, Any], step: int) -> None:
        """MCMC needs no gradient statistics."""

    def regularization(self, params: Params) -> torch.Tensor:
        """L1 penalties on activated opacities and scales (keep Gaussians small and sparse)."""
        return (self.opacity_reg * torch.sigmoid(params["opacities"]).mean()
                + self.scale_reg * torch.exp(params["scales"]).mean())

    def step_post_optimizer(self, params: Params, optimizer: torch.optim.Optimizer, step: int, extent: float,
                            generator: torch.Generator | None = None, means_lr: float = 0.0) -> dict[str, int]:
        """Relocate and grow on schedule, then perturb positions of transparent Gaussians."""
        stats = {"relocated": 0, "added": 0}
        if self.schedule.refines_at(step):
            stats["relocated"] = self._relocate(params, optimizer, generator)
            stats["added"] = self._grow(params, optimizer, generator)
        self._noise_means(params, means_lr, generator)
        return stats

    def _sample_live(self, params: Params, count: int, generator: torch.Generator | None) -> torch.Tensor:
        """``count`` indices of live Gaussians drawn with probability proportional to opacity."""
        probs = torch.sigmoid(params["opacities"].detach()).flatten().cpu()
        probs = torch.where(probs > self.min_opacity, probs, torch.zeros_like(probs))
        return torch.multinomial(probs, count, replacement=True, generator=generator).to(params["means"].device)

    def _relocate(self, params: Params, optimizer: torch.optim.Optimizer, generator: torch.Generator | None) -> int:
        dead = torch.sigmoid(params["opacities"].detach()) <= self.min_opacity
        n_dead = int(dead.sum())
        if n_dead == 0 or n_dead == dead.numel():
            return 0
        sources = self._sample_live(params, n_dead, generator)
        opacity = torch.sigmoid(params["opacities"].detach()[sources])
        counts = torch.bincount(sources, minlength=dead.numel())[sources].clamp_min(1).float()
        new_opacity = 1.0 - torch.pow(1.0 - opacity, 1.0 / (counts + 1.0))
        with torch.no_grad():
            for name, p in params.items():
                p[dead] = p[sources]
            p_op = params["opacities"]
            p_op[dead] = torch.logit(new_opacity.clamp(1e-4, 1 - 1e-4))
            p_op[sources] = p_op[dead]
        for group in optimizer.param_groups:  # moved Gaussians start with fresh moments
            state = optimizer.state.get(group["params"][0])
            if state:
                state["exp_avg"][dead] = 0
                state["exp_avg_sq"][dead] = 0
        return n_dead

    def _grow(self, params: Params, optimizer: torch.optim.Optimizer, generator: torch.Generator | None) -> int:
        total = self.scope.total(params["means"].shape[0])
        add = self.scope.share(max(0, min(self.max_gaussians, math.ceil(total * (1.0 + self.grow_rate))) - total))
        if add <= 0:
            return 0
        sources = self._sample_live(params, add, generator)
        rows = {k: p.detach()[sources] for k, p in params.items()}
        new_opacity = 1.0 - torch.sqrt((1.0 - torch.sigmoid(rows["opacities"])).clamp_min(0))
        rows["opacities"] = torch.logit(new_opacity.clamp(1e-4, 1 - 1e-4))
        with torch.no_grad():
            params["opacities"][sources] = rows["opacities"]
        append_rows(optimizer, params, rows)
        return add

    def _noise_means(self, params: Params, means_lr: float, generator: torch.Generator | None) -> None:
        if means_lr <= 0:
            return
        with torch.no_grad():
            opacity = torch.sigmoid(params["opacities"])
            gate = torch.sigmoid(100.0 * ((1.0 - opacity) - 0.995))  # ~1 for nearly transparent Gaussians
            scales = torch.exp(params["scales"])
            rot = quat_to_rotmat(params["quats"])
            noise = torch.randn(params["means"].shape, generator=generator, device="cpu").to(scales)
            step = torch.einsum("nij,nj->ni", rot, noise * scales ** 2)  # covariance-shaped noise, approx.
            params["means"].add_(step * (gate * self.noise_lr * means_lr)[:, None])

    def describe(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "scope"}
