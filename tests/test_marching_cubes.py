"""Marching cubes (torch path): all 256 cases, agreement with scikit-image, watertightness, edge cases."""
from __future__ import annotations

import numpy as np
import torch


def edge_counts(faces: torch.Tensor) -> tuple[dict, dict]:
    """(undirected edge -> number of faces, directed edge -> number of faces) of faces [F, 3]."""
    f = faces.cpu().numpy()
    directed = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    undirected = np.sort(directed, axis=1)
    und_keys, und_n = np.unique(undirected, axis=0, return_counts=True)
    dir_keys, dir_n = np.unique(directed, axis=0, return_counts=True)
    return dict(zip(map(tuple, und_keys), und_n)), dict(zip(map(tuple, dir_keys), dir_n))


def assert_closed_oriented(faces: torch.Tensor) -> None:
    """Every edge in exactly two faces, traversed once in each direction (watertight, oriented)."""
    und, directed = edge_counts(faces)
    assert len(und) and set(und.values()) == {2}, "an edge is not shared by exactly two faces"
    assert set(directed.values()) == {1}, "inconsistent winding: a directed edge repeats"
    assert all((b, a) in directed for a, b in directed)


def signed_volume(vertices: torch.Tensor, faces: torch.Tensor) -> float:
    """Volume enclosed by a closed mesh, positive when the normals point outward."""
    v = vertices.double()[faces]
    return float(torch.linalg.det(v).sum() / 6.0)


def has_ambiguous_face(grid: np.ndarray, level: float) -> bool:
    """True when a cell face has its two inside corners diagonal (the classic table's ambiguity)."""
    inside = grid < level
    for axis in range(3):
        g = np.moveaxis(inside, axis, 0)
        a, b, c, d = g[:, :-1, :-1], g[:, 1:, :-1], g[:, 1:, 1:], g[:, :-1, 1:]
        if np.any((a == c) & (b == d) & (a != b)):
            return True
    return False


import pytest  # noqa: E402
from skimage.measure import marching_cubes as skimage_marching_cubes  # noqa: E402

from recon.engine.mesh_topology import self_intersecting_pairs  # noqa: E402
from recon.kernels import marching_cubes  # noqa: E402
from recon.kernels.isosurface.tables import triangle_table  # noqa: E402


def case_grid(case: int, rng: np.random.Generator, pad: bool) -> np.ndarray:
    """A 2x2x2 grid with corner c inside (< 0) when bit c of ``case`` is set, optionally padded outside."""
    cube = np.empty((2, 2, 2), dtype=np.float32)
    for c in range(8):
        sign = -1.0 if case >> c & 1 else 1.0
        cube[c & 1, c >> 1 & 1, c >> 2 & 1] = sign * rng.uniform(0.2, 1.0)
    if pad:
        cube = np.pad(cube, 1, constant_values=1.0)
    return cube


def unique_rows(v: np.ndarray) -> np.ndarray:
    return np.unique(np.round(v.astype(np.float64), 5), axis=0)


def test_all_256_cases_closed_and_outward(seed):
    rng = np.random.default_rng(seed)
    _, counts = triangle_table()
    for case in range(256):
        single_v, single_f = marching_cubes(torch.from_numpy(case_grid(case, rng, pad=False)))
        assert single_f.shape[0] == counts[case]
        if case in (0, 255):
            assert single_f.shape[0] == 0
            continue
        v, f = marching_cubes(torch.from_numpy(case_grid(case, rng, pad=True)))
        assert_closed_oriented(f)
        assert signed_volume(v, f) > 0, f"case {case}: normals point inward"


def test_unambiguous_cases_match_skimage(seed):
    rng = np.random.default_rng(seed)
    compared = 0
    for case in range(1, 255):
        grid = case_grid(case, rng, pad=False)
        if has_ambiguous_face(grid, 0.0):
            continue
        v, f = marching_cubes(torch.from_numpy(grid))
        sv, sf, _, _ = skimage_marching_cubes(grid, 0.0, method="lorensen")
        np.testing.assert_allclose(unique_rows(v.numpy()), unique_rows(sv), atol=1e-5)
        assert f.shape[0] == sf.shape[0], f"case {case}"
        compared += 1
    assert compared > 100  # most of the 254 non-empty cases have no ambiguous face


def sphere(n: int, center, radius: float) -> np.ndarray:
    x = np.linspace(-1.0, 1.0, n, dtype=np.float64)
    X, Y, Z = np.meshgrid(x, x, x, indexing="ij")
    return (np.sqrt((X - center[0]) ** 2 + (Y - center[1]) ** 2 + (Z - center[2]) ** 2) - radius).astype(np.float32)


def torus(n: int, major: float, minor: float) -> np.ndarray:
    x = np.linspace(-1.0, 1.0, n, dtype=np.float64)
    X, Y, Z = np.meshgrid(x, x, x, indexing="ij")
    return (np.sqrt((np.sqrt(X ** 2 + Y ** 2) - major) ** 2 + Z ** 2) - minor).astype(np.float32)


@pytest.mark.parametrize("n", [17, 24, 31])
def test_sphere_and_torus_match_skimage(n, seed):
    rng = np.random.default_rng(seed)
    fields = [sphere(n, rng.uniform(-0.1, 0.1, 3), rng.uniform(0.5, 0.7)),
              torus(n, rng.uniform(0.5, 0.6), rng.uniform(0.2, 0.3))]
    compared = 0
    for grid in fields:
        if has_ambiguous_face(grid, 0.0):
            continue  # the classic table differs there by design (tori sometimes have such faces)
        compared += 1
        v, f = marching_cubes(torch.from_numpy(grid))
        sv, sf, _, _ = skimage_marching_cubes(grid, 0.0, method="lorensen")
        # One vertex per crossed edge in both. Not unique_rows(sv): a grid value within ~1e-7 of the level puts
        # its edges' vertices within 1e-5 of each other, and rounding merges them (seed 409: 1933 of 1934).
        assert v.shape[0] == sv.shape[0]
        np.testing.assert_allclose(unique_rows(v.numpy()), unique_rows(sv), atol=1e-5)
        assert f.shape[0] == sf.shape[0]
        assert_closed_oriented(f)
        assert signed_volume(v, f) > 0
    assert compared >= 1  # spheres at these sizes never have an ambiguous face


def test_torus_genus_one():
    v, f = marching_cubes(torch.from_numpy(torus(32, 0.55, 0.25)))
    assert_closed_oriented(f)
    euler = v.shape[0] - len(edge_counts(f)[0]) + f.shape[0]
    assert euler == 0


@pytest.mark.parametrize("shape", [(9, 9, 9), (8, 13, 6), (15, 4, 11)])
def test_random_fields_watertight(shape, seed):
    """Random fields are full of ambiguous faces: the mesh must still close up around every component."""
    rng = np.random.default_rng(seed)
    grid = np.pad(rng.standard_normal(shape).astype(np.float32), 1, constant_values=1.0)
    for inside, field, level in (("below", grid, 0.0), ("above", -grid, 0.0)):
        v, f = marching_cubes(torch.from_numpy(field), level, inside=inside)
        assert_closed_oriented(f)
        assert signed_volume(v, f) > 0
        assert v.shape[0] == len({int(i) for i in f.reshape(-1)})  # no unused vertex


def test_surface_through_the_border_is_open_but_consistent(seed):
    rng = np.random.default_rng(seed)
    grid = sphere(20, (rng.uniform(0.6, 0.8), 0.0, 0.0), 0.7)  # cut by the x = +1 face of the box
    v, f = marching_cubes(torch.from_numpy(grid))
    und, directed = edge_counts(f)
    assert set(directed.values()) == {1}
    border = [e for e, n in und.items() if n == 1]
    assert border and set(und.values()) == {1, 2}
    ends = v[torch.tensor(border).reshape(-1)]
    assert torch.allclose(ends[:, 0], torch.full_like(ends[:, 0], 19.0))  # open only on the grid face


def test_values_at_the_level_count_as_outside():
    grid = torch.zeros(3, 3, 3)
    assert marching_cubes(grid, 0.0)[1].shape[0] == 0
    assert marching_cubes(grid, 0.0, inside="above")[1].shape[0] == 0
    grid[1, 1, 1] = -1.0  # inside; its six neighbours sit exactly at the level -> vertices on them
    v, f = marching_cubes(grid, 0.0)
    assert v.shape[0] == 6 and f.shape[0] == 8
    np.testing.assert_allclose(np.abs(v.numpy() - 1.0).sum(1), np.ones(6))
    assert_closed_oriented(f)


def test_spacing_origin_and_slabs(seed):
    rng = np.random.default_rng(seed)
    grid = torch.from_numpy(sphere(21, rng.uniform(-0.2, 0.2, 3), 0.6))
    v, f = marching_cubes(grid)
    spacing, origin = (0.1, 0.2, 0.3), (-1.0, 2.0, 0.5)
    vs, fs = marching_cubes(grid, spacing=spacing, origin=origin)
    assert torch.equal(fs, f)
    torch.testing.assert_close(vs, v * torch.tensor(spacing) + torch.tensor(origin))
    for slab in (1, 2, 7):
        vv, ff = marching_cubes(grid, slab_cells=slab)
        assert torch.equal(vv, v) and torch.equal(ff, f)


def test_bad_input_refused():
    grid = torch.randn(4, 4, 4)
    grid[1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        marching_cubes(grid)
    with pytest.raises(ValueError, match="3-D"):
        marching_cubes(torch.randn(4, 4))
    with pytest.raises(ValueError, match="inside"):
        marching_cubes(torch.randn(4, 4, 4), inside="left")


def _open3d_mesh(v: torch.Tensor, f: torch.Tensor):
    o3d = pytest.importorskip("open3d")
    return o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(v.double().numpy()),
                                     o3d.utility.Vector3iVector(f.int().numpy()))


def test_open3d_edge_and_vertex_manifold_on_random_fields(seed):
    rng = np.random.default_rng(seed)
    grid = np.pad(rng.standard_normal((10, 9, 8)).astype(np.float32), 1, constant_values=1.0)
    vertices, faces = marching_cubes(torch.from_numpy(grid))
    mesh = _open3d_mesh(vertices, faces)
    assert mesh.is_edge_manifold(allow_boundary_edges=False)
    assert mesh.is_vertex_manifold()
    assert_no_crossing(vertices, faces)


def assert_no_crossing(vertices: torch.Tensor, faces: torch.Tensor) -> None:
    """No two faces cross, decided exactly. Not open3d's is_watertight(): its self-intersection test has a
    tolerance and flags faces ~1e-5 apart, which marching cubes makes where the surface passes within ~1e-5 of
    a grid value (seed 3187367114: a grid value of 4e-6; 5 of 60 noise fields, every pair false, see
    docs/benchmarks.md)."""
    crossing = self_intersecting_pairs(vertices.numpy(), faces.numpy())
    assert len(crossing) == 0, f"faces cross each other: {crossing[:5].tolist()}"


def test_open3d_watertight_on_smooth_fields(seed):
    rng = np.random.default_rng(seed)
    fields = ((sphere(25, rng.uniform(-0.1, 0.1, 3), rng.uniform(0.4, 0.7)), 2), (torus(28, 0.55, 0.25), 0))
    for grid, euler in fields:
        vertices, faces = marching_cubes(torch.from_numpy(grid))
        mesh = _open3d_mesh(vertices, faces)
        assert mesh.is_edge_manifold(allow_boundary_edges=False) and mesh.is_vertex_manifold()
        assert mesh.is_orientable() and mesh.euler_poincare_characteristic() == euler
        assert_no_crossing(vertices, faces)
