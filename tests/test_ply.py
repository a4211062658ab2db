"""INRIA 3DGS PLY: exact layout, round trips through the model (render equal), refusal of bad files."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from recon.apps.cli import main
from recon.engine.errors import ReconError
from recon.engine.io.ply import SplatArrays, read_splat_ply, write_splat_ply
from recon.engine.models.gaussians import GaussianModel
from recon.engine.scene.camera import Camera
from recon.engine.scene.scene import Normalization


def random_splats(n: int, degree: int, rng: np.random.Generator) -> SplatArrays:
    k = (degree + 1) ** 2
    f32 = np.float32
    return SplatArrays(means=rng.normal(size=(n, 3)).astype(f32), sh0=rng.normal(size=(n, 1, 3)).astype(f32),
                       shN=rng.normal(size=(n, k - 1, 3)).astype(f32), opacities=rng.normal(size=n).astype(f32),
                       scales=rng.normal(size=(n, 3)).astype(f32) - 3, quats=rng.normal(size=(n, 4)).astype(f32))


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_layout_and_round_trip(tmp_path, seed, degree):
    from plyfile import PlyData

    rng = np.random.default_rng(seed)
    splats = random_splats(37, degree, rng)
    path = tmp_path / "s.ply"
    write_splat_ply(path, splats)
    ply = PlyData.read(str(path))
    rest = 3 * ((degree + 1) ** 2 - 1)
    expected = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{i}" for i in range(rest)]
                + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])
    assert [p.name for p in ply["vertex"].properties] == expected
    assert not ply.text and ply.byte_order == "<"
    assert all(p.val_dtype in ("f4", "float32", "float") for p in ply["vertex"].properties)
    if degree > 0:  # channel-major: f_rest_0..K-2 are all red coefficients
        np.testing.assert_array_equal(ply["vertex"]["f_rest_1"], splats.shN[:, 1, 0])
        np.testing.assert_array_equal(ply["vertex"][f"f_rest_{rest // 3}"], splats.shN[:, 0, 1])
    back = read_splat_ply(path)
    assert back.sh_degree == degree
    for name in ("means", "sh0", "shN", "opacities", "scales", "quats"):
        np.testing.assert_array_equal(getattr(back, name), getattr(splats, name))


def test_export_import_render_equal(tmp_path, seed):
    """A model exported in original coordinates and imported again renders the same image."""
    rng = np.random.default_rng(seed)
    splats = random_splats(60, 3, rng)
    splats.means *= 0.3
    splats.scales = np.full_like(splats.scales, -2.5)
    norm = Normalization(center=rng.normal(size=3), scale=float(rng.uniform(0.2, 3.0)))
    params = {k: torch.as_tensor(getattr(splats, k)) for k in ("means", "sh0", "shN", "opacities", "scales", "quats")}
    model = GaussianModel(params, sh_degree=3, normalization=norm)
    w2c = np.eye(4)
    w2c[2, 3] = 2.0
    camera = Camera(width=33, height=27, fx=30.0, fy=30.0, cx=16.5, cy=13.5, world_to_camera=w2c)
    model.save_ply(tmp_path / "m.ply")
    stored = read_splat_ply(tmp_path / "m.ply")
    np.testing.assert_allclose(stored.means, norm.to_original(splats.means), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(stored.scales, splats.scales - np.log(norm.scale), rtol=1e-5, atol=1e-5)
    again = GaussianModel.load_ply(tmp_path / "m.ply", normalization=norm)
    a, b = model.render(camera), again.render(camera)
    assert a["alpha"].max() > 0.1  # the camera sees the Gaussians
    for key in ("rgb", "alpha"):
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-4)


def _write_fields(path, names, n=4, value=0.0):
    from plyfile import PlyData, PlyElement

    data = np.zeros(n, dtype=[(name, "<f4") for name in names])
    for name in names:
        data[name] = value
    PlyData([PlyElement.describe(data, "vertex")], byte_order="<").write(str(path))


BASE = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
        "rot_0", "rot_1", "rot_2", "rot_3"]


@pytest.mark.parametrize("case, message", [
    ("missing", "missing field(s) opacity"),
    ("rest12", "12 f_rest fields"),
    ("nan", "NaN"),
    ("garbage", "not a readable PLY"),
])
def test_bad_ply_refused(tmp_path, case, message, capsys):
    path = tmp_path / f"{case}.ply"
    if case == "missing":
        _write_fields(path, [n for n in BASE if n != "opacity"])
    elif case == "rest12":
        _write_fields(path, BASE + [f"f_rest_{i}" for i in range(12)])
    elif case == "nan":
        _write_fields(path, BASE, value=np.nan)
    else:
        path.write_bytes(b"this is not a ply\n")
    with pytest.raises(ReconError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_splat_ply(path)
    # Through the CLI: exit 2 and one line naming the file (the PLY is checked before the scene).
    assert main(["render", str(path), "--scene", str(tmp_path / "no_scene"), "-o", str(tmp_path / "o.mp4")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0]
    assert not (tmp_path / "o.mp4").exists()


def test_other_tools_ply_without_normals(tmp_path):
    """Some 3DGS tools omit nx/ny/nz; such files are read."""
    _write_fields(tmp_path / "a.ply", BASE + [f"f_rest_{i}" for i in range(9)], value=0.5)
    splats = read_splat_ply(tmp_path / "a.ply")
    assert splats.sh_degree == 1 and splats.shN.shape == (4, 3, 3)
