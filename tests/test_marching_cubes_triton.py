"""Triton marching cubes (TRITON_INTERPRET=1 without a GPU) against the torch reference: equal outputs."""
from __future__ import annotations

import pytest
import torch

from conftest import KERNEL_DEVICE
from recon.kernels import marching_cubes

pytestmark = pytest.mark.kernels


def _smooth_field(shape: tuple[int, int, int]) -> torch.Tensor:
    """A random blobby field (few ambiguous cells) of the given shape."""
    axes = [torch.linspace(-1, 1, n) for n in shape]
    X, Y, Z = torch.meshgrid(*axes, indexing="ij")
    centers = torch.rand(3, 3) * 1.2 - 0.6
    field = sum(torch.exp(-((X - c[0]) ** 2 + (Y - c[1]) ** 2 + (Z - c[2]) ** 2) / 0.15) for c in centers)
    return 0.5 - field


@pytest.mark.parametrize("shape", [(2, 2, 2), (5, 3, 7), (9, 8, 6), (3, 12, 4)])
@pytest.mark.parametrize("inside", ["below", "above"])
def test_triton_equals_reference_on_random_grids(shape, inside, seed):
    grid = torch.randn(shape, device=KERNEL_DEVICE)
    level = float(torch.randn(()) * 0.3)
    ref_v, ref_f = marching_cubes(grid, level, inside=inside, backend="torch")
    for slab in (None, 1, 3):
        v, f = marching_cubes(grid, level, inside=inside, backend="triton", slab_cells=slab)
        assert torch.equal(f, ref_f)
        torch.testing.assert_close(v, ref_v, rtol=0, atol=1e-6)


def test_triton_equals_reference_on_smooth_field_and_empty(seed):
    grid = _smooth_field((11, 10, 9)).to(KERNEL_DEVICE)
    ref = marching_cubes(grid, 0.0, backend="torch")
    out = marching_cubes(grid, 0.0, backend="triton", slab_cells=4)
    assert ref[1].shape[0] > 0 and torch.equal(out[1], ref[1])
    torch.testing.assert_close(out[0], ref[0], rtol=0, atol=1e-6)
    empty_v, empty_f = marching_cubes(torch.ones(4, 5, 6, device=KERNEL_DEVICE), 0.0, backend="triton")
    assert empty_v.shape == (0, 3) and empty_f.shape == (0, 3)


def test_values_exactly_at_level_same_rule(seed):
    grid = torch.randint(-1, 2, (6, 7, 5), device=KERNEL_DEVICE).float()  # many values exactly at the level 0
    for inside in ("below", "above"):
        ref = marching_cubes(grid, 0.0, inside=inside, backend="torch")
        out = marching_cubes(grid, 0.0, inside=inside, backend="triton")
        assert torch.equal(out[1], ref[1]) and torch.equal(out[0], ref[0])
