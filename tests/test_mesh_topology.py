"""Mesh topology checks (engine/mesh_topology.py) on meshes whose answers are known by construction."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from recon.engine.mesh_topology import (component_areas, keep_components, mesh_report, segments_cross_triangles,
                                        self_intersecting_pairs)
from recon.kernels import marching_cubes

TETRA_V = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], float)
TETRA_F = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])


def _box(lo, hi) -> tuple[np.ndarray, np.ndarray]:
    """A closed axis-aligned box: 8 vertices, 12 outward-wound triangles."""
    v = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])], float)
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    return v, np.array([t for a, b, c, d in quads for t in ((a, b, c), (a, c, d))])


def _join(*meshes):
    vs, fs, base = [], [], 0
    for v, f in meshes:
        vs.append(v)
        fs.append(f + base)
        base += len(v)
    return np.concatenate(vs), np.concatenate(fs)


def test_tetrahedron_is_one_watertight_component():
    r = mesh_report(TETRA_V, TETRA_F)
    assert (r.components, r.boundary_edges, r.nonmanifold_edges, r.intersecting_pairs) == (1, 0, 0, 0)
    assert r.watertight


def test_open_and_nonmanifold_meshes():
    v, f = _box((0, 0, 0), (1, 1, 1))
    r = mesh_report(v, f[:-2])  # one square face removed: its 4 edges are boundary edges
    assert (r.boundary_edges, r.nonmanifold_edges, r.watertight) == (4, 0, False)
    fin = np.concatenate([TETRA_V, [[0.5, 0.5, -1.0]]])
    r = mesh_report(fin, np.concatenate([TETRA_F, [[0, 1, 4]]]))  # a third face on edge 0-1
    assert (r.boundary_edges, r.nonmanifold_edges, r.components) == (2, 1, 1)


def test_two_intersecting_boxes(seed):
    rng = np.random.default_rng(seed)
    shift = rng.uniform(0.2, 0.8, 3)  # box 2 overlaps box 1 through a corner region
    v, f = _join(_box((0, 0, 0), (1, 1, 1)), _box(shift, shift + rng.uniform(0.9, 1.5, 3)))
    r = mesh_report(v, f)
    assert r.components == 2 and r.watertight and r.intersecting_pairs > 0
    pairs = self_intersecting_pairs(v, f)
    assert np.all((pairs[:, 0] < 12) & (pairs[:, 1] >= 12))  # only faces of different boxes cross
    apart = _join(_box((0, 0, 0), (1, 1, 1)), _box((2, 0, 0), (3, 1, 1)))
    assert mesh_report(*apart).intersecting_pairs == 0


def test_segment_crossing_against_brute_force(seed):
    """Random segments and triangles: the orientation test agrees with solving the plane/barycentric system."""
    gen = torch.Generator().manual_seed(seed)
    p, q = torch.rand(2, 4000, 3, generator=gen, dtype=torch.float64)
    tri = torch.rand(4000, 3, 3, generator=gen, dtype=torch.float64)
    got = segments_cross_triangles(p, q, tri)
    a, b, c = tri.unbind(1)
    m = torch.stack([q - p, a - b, a - c], -1)  # p + t (q - p) = a + u (b - a) + w (c - a)
    t, u, w = torch.linalg.solve(m, (a - p)[..., None])[..., 0].unbind(-1)
    want = (t > 0) & (t < 1) & (u >= 0) & (w >= 0) & (u + w <= 1)
    assert torch.equal(got, want)


@pytest.mark.parametrize("resolution", [17, 40])
def test_marching_cubes_spheres_and_component_filter(resolution, seed):
    """Two spheres of known radii (areas in ratio r1^2 : r2^2); the filter keeps what the fraction says."""
    rng = np.random.default_rng(seed)
    r_small = rng.uniform(0.15, 0.25)
    x = torch.linspace(-1, 1, resolution * 2)
    X, Y, Z = torch.meshgrid(x, x, x, indexing="ij")
    big = ((X + 0.35) ** 2 + Y ** 2 + Z ** 2).sqrt() - 0.5
    small = ((X - 0.65) ** 2 + Y ** 2 + Z ** 2).sqrt() - r_small
    v, f = marching_cubes(torch.minimum(big, small), 0.0, spacing=[2 / (resolution * 2 - 1)] * 3, origin=[-1] * 3)
    v, f = v.numpy(), f.numpy()
    r = mesh_report(v, f)
    assert (r.components, r.watertight, r.intersecting_pairs) == (2, True, 0)
    labels, areas = component_areas(v, f)
    ratio = areas.min() / areas.max()
    assert abs(ratio - (r_small / 0.5) ** 2) < 0.1 * (r_small / 0.5) ** 2
    kept_v, kept_f = keep_components(v, f, ratio * 1.01)  # just above the small sphere: it goes
    assert mesh_report(kept_v, kept_f).components == 1 and len(kept_f) == np.bincount(labels).max()
    assert np.linalg.norm(kept_v - [-0.35, 0, 0], axis=1).max() < 0.55  # the big one stayed
    same_v, same_f = keep_components(v, f, ratio * 0.99)
    assert len(same_f) == len(f) and len(same_v) == len(v)


def test_grid_broad_phase_misses_no_pair(seed):
    """A random soup of triangles of mixed sizes: the grid finds every crossing pair that testing all pairs finds."""
    rng = np.random.default_rng(seed)
    n = 150
    centres = rng.uniform(0, 1, (n, 1, 3))
    v = (centres + rng.normal(0, 1, (n, 3, 3)) * rng.choice([0.03, 0.1, 0.3], (n, 1, 1))).reshape(-1, 3)
    f = np.arange(3 * n).reshape(n, 3)
    i, j = np.triu_indices(n, 1)
    vt = torch.from_numpy(v)
    crossed = torch.zeros(len(i), dtype=torch.bool)
    for one, other in ((i, j), (j, i)):
        for k in range(3):
            crossed |= segments_cross_triangles(vt[f[one, k]], vt[f[one, (k + 1) % 3]], vt[f[other]])
    want = {(a, b) for a, b, c in zip(i, j, crossed.numpy()) if c}
    got = {tuple(p) for p in self_intersecting_pairs(v, f).tolist()}
    assert got == want and len(want) > 0


def test_faces_touching_at_a_repeated_corner_do_not_cross():
    """Two faces of a Spot SDF export (marching cubes at 256^3, original coordinates) meeting at one position
    held by two vertices: float64 signs called them crossing, exact arithmetic does not."""
    v = np.array([[0.28210765882550776, 0.727383687605429, -0.3194323893757728],
                  [0.28210765882550776, 0.7200779068084379, -0.32785351160945664],
                  [0.2736865365918239, 0.727383687605429, -0.32064660633000563],
                  [0.29012687927915776, 0.7189625653717452, -0.32785351160945664],
                  [0.28210765882550776, 0.727383687605429, -0.3194323893757728],
                  [0.2905287810591916, 0.7189625653717452, -0.32779156241788454]])
    assert len(self_intersecting_pairs(v, np.array([[0, 1, 2], [3, 4, 5]]))) == 0
