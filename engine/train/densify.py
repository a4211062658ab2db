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
from typing import Any

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


def screen_grad_norms(info: dict[str, Any], absgrad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Norms of the 2D-mean gradients in pixel-independent units, with the Gaussians they belong to.

    As in gsplat, gradients w.r.t. pixel coordinates are multiplied by (W/2, H/2) and the number of
    cameras, so the threshold does not depend on the image size. Returns (norms [M], gaussian ids [M])
    over the visible (camera, Gaussian) pairs.
    """
    means2d = info["means2d"]
    grad = getattr(means2d, "absgrad", None) if absgrad else means2d.grad
    if grad is None:
        raise ReconError("absgrad density control needs rasterize(..., absgrad=True) in the training step"
                         if absgrad else "no gradient reached the 2D means (was backward() called?)")
    grad = grad.detach().clone()
    n_cameras = grad.shape[0]
    grad[..., 0] *= info["width"] / 2.0 * n_cameras
    grad[..., 1] *= info["height"] / 2.0 * n_cameras
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
    grad2d: torch.Tensor | None = None  # [N] summed gradient norms since the last refinement
    count: torch.Tensor | None = None  # [N] how many views saw each Gaussian

    def state_dict(self) -> dict[str, Any]:
        return {"grad2d": self.grad2d, "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.grad2d, self.count = state["grad2d"], state["count"]

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

        ``means_lr`` is unused here (the MCMC strategy scales its noise by it).
        """
        stats = {"cloned": 0, "split": 0, "pruned": 0}
        if self.schedule.refines_at(step) and self.grad2d is not None:
            stats["cloned"], stats["split"] = self._grow(params, optimizer, extent, generator)
            stats["pruned"] = self._prune(params, optimizer, extent, step)
            n = params["means"].shape[0]
            self.grad2d = torch.zeros(n, device=params["means"].device)
            self.count = torch.zeros(n, device=params["means"].device)
        if self.schedule.resets_at(step):
            ceiling = torch.logit(torch.tensor(2.0 * self.prune_opacity)).item()
            reset_rows(optimizer, params, "opacities", params["opacities"].detach().clamp_max(ceiling))
        return stats

    def _grow(self, params: Params, optimizer: torch.optim.Optimizer, extent: float,
              generator: torch.Generator | None) -> tuple[int, int]:
        avg = self.grad2d / self.count.clamp_min(1)
        high = avg > self.grad_threshold
        if self.max_gaussians > 0:
            budget = max(0, self.max_gaussians - params["means"].shape[0])
            if int(high.sum()) > budget:
                top = torch.topk(torch.where(high, avg, torch.full_like(avg, -1.0)), budget).indices
                high = torch.zeros_like(high)
                high[top] = True
        small = torch.exp(params["scales"].detach()).max(dim=-1).values <= self.grow_scale3d * extent
        clone, split = high & small, high & ~small
        if clone.any():
            append_rows(optimizer, params, {k: p.detach()[clone] for k, p in params.items()})
        if split.any():
            split = torch.cat([split, torch.zeros(int(clone.sum()), dtype=torch.bool, device=split.device)])
            self._split(params, optimizer, split, generator)
        return int(clone.sum()), int(split.sum())

    @staticmethod
    def _split(params: Params, optimizer: torch.optim.Optimizer, split: torch.Tensor,
               generator: torch.Generator | None) -> None:
        """Replace each selected Gaussian by two samples from it, with scales shrunk by 1.6."""
        rows = {k: p.detach()[split] for k, p in params.items()}
        scales = torch.exp(rows["scales"])
        rot = quat_to_rotmat(rows["quats"])
        noise = torch.randn((2, *scales.shape), generator=generator, device="cpu").to(scales)
        offsets = torch.einsum("nij,bnj->bni", rot, noise * scales)  # [2, M, 3]
        new = {k: torch.cat([v, v]) for k, v in rows.items()}
        new["means"] = (rows["means"][None] + offsets).reshape(-1, 3)
        new["scales"] = torch.log(scales / 1.6).repeat(2, 1)
        keep_rows(optimizer, params, ~split)
        append_rows(optimizer, params, new)

    def _prune(self, params: Params, optimizer: torch.optim.Optimizer, extent: float, step: int) -> int:
        prune = torch.sigmoid(params["opacities"].detach()) < self.prune_opacity
        if step > self.schedule.reset_every:
            prune |= torch.exp(params["scales"].detach()).max(dim=-1).values > self.prune_scale3d * extent
        if prune.all():  # never empty the scene
            prune[torch.argmax(params["opacities"].detach())] = False
        if prune.any():
            keep_rows(optimizer, params, ~prune)
        return int(prune.sum())

    def describe(self) -> dict[str, Any]:
        """The settings (for logs and configs)."""
        return {k: v for k, v in asdict(self).items() if k not in ("grad2d", "count")}


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

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

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
        n = params["means"].shape[0]
        add = min(self.max_gaussians, math.ceil(n * (1.0 + self.grow_rate))) - n
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
        return asdict(self)
