"""Occupancy grid updates (warm-up, then random subsets plus the occupied cells) and empty-space skipping.

The fields here are constant on each grid cell, so "the cell holds density" has one meaning and skipping
can be checked exactly: a rendering that skips the grid's empty cells must equal one that samples all.
"""
from __future__ import annotations

import numpy as np
import torch

from recon.engine.models.nerf import NerfArchitecture, NerfModel
from recon.engine.scene.camera import Camera
from recon.engine.train.occupancy_grid import OccupancyGrid


def _cell_index(points: torch.Tensor, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Grid cell [N] of unit-cube points and whether they are inside the cube [N]."""
    inside = ((points >= 0) & (points < 1)).all(-1)
    ijk = (points.clamp(0, 1 - 1e-6) * resolution).long()
    return (ijk[:, 0] * resolution + ijk[:, 1]) * resolution + ijk[:, 2], inside


def _cell_field(values: torch.Tensor, resolution: int):
    """A density function of unit-cube points that is ``values[cell]`` on each cell (0 outside the cube)."""
    def density(points: torch.Tensor) -> torch.Tensor:
        cell, inside = _cell_index(points, resolution)
        return torch.where(inside, values[cell], 0.0)
    return density


def _cells(resolution: int) -> torch.Tensor:  # [r^3, 3] cell centres in the grid's cell order
    ijk = torch.stack(torch.meshgrid(*[torch.arange(resolution)] * 3, indexing="ij"), -1).reshape(-1, 3)
    return (ijk + 0.5) / resolution


def test_subset_updates_keep_every_dense_cell_and_find_new_ones(seed):
    """After warm-up the updates sample a quarter of the cells plus the occupied ones: every cell whose
    density is above the threshold stays occupied at every update, empty cells decay by exactly 0.95
    per update, and cells that become dense later are found. A new cell is missed by one update with
    probability (1 - 1/n)^(n/4) ~ e^-0.25, so by all 100 updates with ~1e-11: the bound holds for every seed."""
    g = torch.Generator().manual_seed(seed)
    r, threshold = 12, 2.0
    values = torch.where(torch.rand(r**3, generator=g) < 0.1, threshold + 40 * torch.rand(r**3, generator=g), 0.0)
    grid = OccupancyGrid(r, threshold=threshold, warmup_updates=2)
    for _ in range(2):
        grid.update(_cell_field(values, r), g)
    dense = values > threshold
    assert torch.equal(grid.occupied, dense)  # warm-up sampled every cell
    later = torch.where(torch.rand(r**3, generator=g) < 0.05, threshold + 10 * torch.rand(r**3, generator=g), 0.0)
    field = torch.maximum(values, later)  # some cells fill in after the warm-up
    before = grid.density.clone()
    for _ in range(100):
        grid.update(_cell_field(field, r), g)
        assert grid.occupied[dense].all()
    assert grid.occupied[field > threshold].all() and not grid.occupied[field == 0].any()
    # The cells that held density keep the maximum of their decayed value and a fresh (equal) sample.
    torch.testing.assert_close(grid.density[dense], torch.maximum(before[dense] * 0.95**100, field[dense]))
    emptied = grid.density.clone()
    for _ in range(3):  # everything gone: every cell decays by exactly 0.95 per update
        grid.update(lambda p: torch.zeros(len(p)), g)
    torch.testing.assert_close(grid.density, emptied * 0.95**3)


def test_update_samples_points_inside_their_cells(seed):
    """The one random point per cell lies inside that cell (also for cells far from the origin, where a
    float32 ``ijk + jitter`` near 1 would round onto the next cell)."""
    g = torch.Generator().manual_seed(seed)
    r = 128
    seen = []
    grid = OccupancyGrid(r, warmup_updates=1)
    grid.update(lambda p: seen.append(p) or torch.zeros(len(p)), g)
    points = torch.cat(seen)
    ijk = (points * r).floor().long()
    expected = torch.stack(torch.meshgrid(*[torch.arange(r)] * 3, indexing="ij"), -1).reshape(-1, 3)
    assert torch.equal(ijk, expected)


def _model_with_cell_field(values: torch.Tensor, r: int, generator: torch.Generator) -> NerfModel:
    """A NeRF whose density and geometry features (so colours) are constant on each cell of an r^3 grid."""
    model = NerfModel(NerfArchitecture(n_levels=2, log2_table_size=8, n_samples=96, background=(0.2, 0.3, 0.4)))
    features = torch.randn(r**3, 15, generator=generator)

    def field(unit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cell, inside = _cell_index(unit, r)
        return torch.where(inside, values[cell], 0.0), features[cell]
    model._field = field
    return model


def test_skipping_renders_the_same_as_sampling_everything(seed):
    """Rays through a cell-constant field: the grid built by updates skips only empty cells, so rgb, depth
    and opacity equal those of an all-occupied grid (to float32 rounding of the packed sums); and the
    training path (gradients on, samples past the early-termination point dropped before the
    differentiable pass) gives the same outputs as the plain pass."""
    g = torch.Generator().manual_seed(seed)
    r = 16
    centres = _cells(r)
    blob = ((centres - 0.5).norm(dim=-1) < 0.3) & (torch.rand(r**3, generator=g) < 0.7)
    values = torch.where(blob, 2.0 + 60 * torch.rand(r**3, generator=g), 0.0)
    model = _model_with_cell_field(values, r, g)
    cameras = []
    for k in range(2):
        angle = 2 * np.pi * torch.rand(1, generator=g).item()
        c, s = np.cos(angle), np.sin(angle)
        w2c = np.eye(4)
        w2c[:3, :3] = [[c, 0, -s], [0, 1, 0], [s, 0, c]]
        w2c[:3, 3] = [0.0, 0.0, 3.0]
        cameras.append(Camera(width=13 + k, height=11, fx=14.0, fy=14.0, cx=6.5, cy=5.5, world_to_camera=w2c))
    grid = OccupancyGrid(r, threshold=1.0, warmup_updates=1)
    for _ in range(4):
        grid.update(model.unit_density, g)
    assert 0 < grid.occupied.float().mean() < 0.2
    for camera in cameras:
        model.grid = OccupancyGrid(r)  # every cell occupied: no skipping
        full = model.render(camera)
        model.grid = grid
        skipped = model.render(camera)
        for key in ("rgb", "depth", "alpha"):
            torch.testing.assert_close(skipped[key], full[key], atol=1e-5, rtol=1e-5)
        assert full["alpha"].max() > 0.99 and full["alpha"].min() < 0.01  # rays both hit and miss
    from recon.engine.models.rays import camera_rays

    origins, directions = camera_rays(cameras[0])
    jitter = torch.rand(len(origins), 1, generator=g)
    bg = torch.tensor([0.2, 0.3, 0.4])
    with torch.no_grad():
        plain = model.render_rays(origins, directions, bg, jitter)
    with torch.enable_grad():
        trained = model.render_rays(origins, directions, bg, jitter)
    assert trained["samples"] < plain["samples"]  # samples behind opaque cells were dropped
    for key in ("rgb", "depth", "opacity"):
        torch.testing.assert_close(trained[key], plain[key], atol=1e-5, rtol=1e-5)
