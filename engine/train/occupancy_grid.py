"""instant-ngp occupancy grid: which cells of the unit cube hold density, to skip empty space.

The grid covers the model's unit cube [0, 1]^3 (the box of an object scene, or the contracted space of
an unbounded one) with ``resolution``^3 cells. Every update decays the stored densities by ``decay``
(0.95) and raises the sampled cells to the density the model has now at a random point inside them.
During the first ``warmup_updates`` updates every cell is sampled; afterwards a random ``fraction`` of
all cells (new density anywhere is found within a few updates) plus every occupied cell (so an occupied
cell keeps the maximum of its decayed value and a fresh sample, and never drops out while its density
stays above the threshold). A cell is occupied when its density exceeds ``min(mean density, threshold)``.
"""
from __future__ import annotations

from typing import Callable

import torch

DensityFn = Callable[[torch.Tensor], torch.Tensor]  # unit-cube points [N, 3] -> densities [N]


class OccupancyGrid:
    """A dense ``resolution``^3 grid of decayed density maxima and its occupancy bits."""

    def __init__(self, resolution: int = 128, *, decay: float = 0.95, threshold: float = 0.01,
                 warmup_updates: int = 16, fraction: float = 0.25, device: torch.device | str = "cpu"):
        self.resolution, self.decay, self.threshold = resolution, decay, threshold
        self.warmup_updates, self.fraction = warmup_updates, fraction
        self.density = torch.zeros(resolution**3, device=device)
        self.occupied = torch.ones(resolution**3, dtype=torch.bool, device=device)  # all until first update
        self.updates = 0

    def _cells_to_sample(self, generator: torch.Generator | None) -> torch.Tensor:
        """All cells during warm-up, then a random ``fraction`` of them plus the occupied ones."""
        n = self.density.numel()
        device = self.density.device
        if self.updates < self.warmup_updates:
            return torch.arange(n, device=device)
        uniform = torch.randint(0, n, (max(1, int(n * self.fraction)),), generator=generator).to(device)
        return torch.cat([uniform, self.occupied.nonzero()[:, 0]])

    @torch.no_grad()
    def update(self, density_fn: DensityFn, generator: torch.Generator | None = None, chunk: int = 2**16) -> None:
        """Decay, re-sample cells with ``density_fn`` and recompute occupancy."""
        cells = self._cells_to_sample(generator)
        r = self.resolution
        ijk = torch.stack([cells // (r * r), (cells // r) % r, cells % r], dim=-1).float()
        # In (0.001, 0.999): a float32 ijk + jitter close to 1 would round onto the next cell's face.
        jitter = 0.001 + 0.998 * torch.rand(ijk.shape, generator=generator).to(ijk.device)
        points = (ijk + jitter) / r  # [M, 3] unit-cube points, one inside each sampled cell
        fresh = torch.cat([density_fn(points[i:i + chunk]).float() for i in range(0, len(points), chunk)])
        self.density.mul_(self.decay)
        self.density.scatter_reduce_(0, cells, fresh, "amax")
        self.occupied = self.density > min(float(self.density.mean()), self.threshold)
        self.updates += 1

    def is_occupied(self, points: torch.Tensor) -> torch.Tensor:  # [N, 3] unit cube -> [N] bool
        """Occupancy of the cells holding ``points`` (points outside the cube are unoccupied)."""
        r = self.resolution
        inside = ((points >= 0) & (points < 1)).all(-1)
        ijk = (points.clamp(0, 1 - 1e-6) * r).long()
        return self.occupied[(ijk[:, 0] * r + ijk[:, 1]) * r + ijk[:, 2]] & inside

    def state_dict(self) -> dict:
        return {"resolution": self.resolution, "decay": self.decay, "threshold": self.threshold,
                "warmup_updates": self.warmup_updates, "fraction": self.fraction, "density": self.density.cpu(),
                "occupied": self.occupied.cpu(), "updates": self.updates}

    @classmethod
    def from_state_dict(cls, state: dict, device: torch.device | str = "cpu") -> "OccupancyGrid":
        grid = cls(state["resolution"], decay=state["decay"], threshold=state["threshold"],
                   warmup_updates=state["warmup_updates"], fraction=state.get("fraction", 0.25), device=device)
        grid.density = state["density"].to(device)
        grid.occupied = state["occupied"].to(device)
        grid.updates = state["updates"]
        return grid
