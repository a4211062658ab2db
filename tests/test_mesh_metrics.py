"""Mesh metrics: zero distance to itself, known offsets, F-score threshold behaviour."""
from __future__ import annotations

import numpy as np
import torch

from recon.engine.eval.mesh_metrics import mesh_metrics, sample_surface
from recon.kernels import marching_cubes


def _sphere_mesh(radius: float, n: int = 40):
    x = torch.linspace(-1.2, 1.2, n)
    X, Y, Z = torch.meshgrid(x, x, x, indexing="ij")
    v, f = marching_cubes((X ** 2 + Y ** 2 + Z ** 2).sqrt() - radius, spacing=[2.4 / (n - 1)] * 3, origin=[-1.2] * 3)
    return v.numpy(), f.numpy()


def test_samples_lie_on_the_surface_with_unit_normals(seed):
    v, f = _sphere_mesh(0.8)
    p, n = sample_surface(torch.from_numpy(v).double(), torch.from_numpy(f), 5000, torch.Generator().manual_seed(seed))
    assert torch.allclose(p.norm(dim=1), torch.full((5000,), 0.8, dtype=torch.float64), atol=0.02)
    assert torch.allclose(n.norm(dim=1), torch.ones(5000, dtype=torch.float64))
    assert float((n * p).sum(1).gt(0).double().mean()) > 0.99  # outward normals from marching cubes


def test_identical_and_offset_meshes(seed):
    v, f = _sphere_mesh(0.8)
    same = mesh_metrics(v, f, v, f, samples=10000, seed=seed)
    # Two independent samplings of one surface: distances are the sampling gap (~0.014 at 10k samples).
    assert same["chamfer_l1"] < 0.017 and same["fscore"] > 0.9 and same["normal_consistency"] > 0.99
    bigger = _sphere_mesh(0.9)
    off = mesh_metrics(*bigger, v, f, samples=10000, seed=seed)
    assert abs(off["chamfer_l1"] - 0.1) < 0.01  # concentric spheres 0.1 apart
    assert off["fscore"] < 0.05  # 0.1 is far beyond 1% of the diagonal (~0.028)
    assert off["normal_consistency"] > 0.95
    shifted = mesh_metrics(v + np.float32(0.01), f, v, f, samples=10000, seed=seed)
    assert shifted["fscore"] > 0.85 and shifted["chamfer_l1"] > same["chamfer_l1"]
