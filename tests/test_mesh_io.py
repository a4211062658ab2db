"""Mesh and point-cloud files: round trips, polygon triangulation, clear errors."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import shared_path
from recon.engine.errors import ReconError
from recon.engine.io.mesh import read_mesh, read_shape, write_mesh


def _random_mesh(rng: np.random.Generator, n_vertices: int = 17, n_faces: int = 23):
    return (rng.standard_normal((n_vertices, 3)).astype(np.float32),
            rng.integers(0, n_vertices, (n_faces, 3)).astype(np.int64))


@pytest.mark.parametrize("suffix", [".ply", ".obj"])
def test_mesh_round_trip(tmp_path, suffix, seed):
    v, f = _random_mesh(np.random.default_rng(seed))
    path = tmp_path / f"m{suffix}"
    write_mesh(path, v, f)
    v2, f2 = read_mesh(path)
    np.testing.assert_allclose(v2, v, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(f2, f)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind


def test_obj_polygons_negative_indices_and_normals(tmp_path):
    path = tmp_path / "quad.obj"
    path.write_text("v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nvn 0 0 1\nvn 0 0 1\nvn 0 0 1\nvn 0 0 1\n"
                    "f 1//1 2//2 3//3 4//4\nf -4 -3 -1\n")
    shape = read_shape(path)
    np.testing.assert_array_equal(shape.faces, [[0, 1, 2], [0, 2, 3], [0, 1, 3]])
    assert shape.normals.shape == (4, 3)


def test_point_clouds(tmp_path, seed):
    rng = np.random.default_rng(seed)
    pts = rng.standard_normal((11, 6))
    np.savetxt(tmp_path / "a.xyz", pts)
    np.savetxt(tmp_path / "b.xyz", pts[:, :3])
    a, b = read_shape(tmp_path / "a.xyz"), read_shape(tmp_path / "b.xyz")
    np.testing.assert_allclose(a.normals, pts[:, 3:], rtol=1e-6)
    assert b.normals is None and not b.is_mesh
    np.testing.assert_allclose(b.points, pts[:, :3], rtol=1e-6)
    from plyfile import PlyData, PlyElement
    vert = np.empty(11, dtype=[(c, "f4") for c in ("x", "y", "z", "nx", "ny", "nz")])
    for i, c in enumerate(("x", "y", "z", "nx", "ny", "nz")):
        vert[c] = pts[:, i]
    PlyData([PlyElement.describe(vert, "vertex")]).write(str(tmp_path / "c.ply"))
    c = read_shape(tmp_path / "c.ply")
    assert not c.is_mesh
    np.testing.assert_allclose(c.normals, pts[:, 3:], rtol=1e-6)


def test_shared_meshes_read():
    v, f = read_mesh(shared_path("meshes", "spot.obj"))
    assert v.shape[1] == 3 and f.shape[1] == 3 and f.max() < len(v)


def test_bad_files_are_clear_errors(tmp_path):
    (tmp_path / "bad.xyz").write_text("1 2\n3 4\n")
    (tmp_path / "bad.obj").write_text("v 0 0 0\nf 1 2 3\n")
    (tmp_path / "pts.obj").write_text("v 0 0 0\n")
    (tmp_path / "junk.ply").write_text("not a ply")
    for name, message in (("bad.xyz", "columns"), ("bad.obj", "does not exist"), ("pts.obj", "no faces"),
                          ("junk.ply", "PLY"), ("missing.obj", "no such file"), ("x.stl", "unsupported")):
        with pytest.raises(ReconError, match=message) as info:
            read_mesh(tmp_path / name)
        assert name in str(info.value)
    with pytest.raises(ReconError, match="unsupported"):
        write_mesh(tmp_path / "out.stl", np.zeros((3, 3)), np.zeros((1, 3)))
