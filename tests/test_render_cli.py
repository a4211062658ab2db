"""``recon render`` and ``recon export --ply`` on a small Gaussian run built directly (no fitting needed)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from recon.apps.cli import main
from recon.engine.models.gaussians import GaussianModel
from recon.engine.render.paths import camera_path, look_at
from recon.engine.scene.camera import Camera
from recon.engine.scene.scene import Normalization
from recon.engine.train import rundir


def _ring(count: int, radius: float = 1.0) -> list[Camera]:
    cams = []
    for i in range(count):
        t = 2 * np.pi * i / count
        eye = np.array([radius * np.cos(t), radius * np.sin(t), 0.3])
        cams.append(Camera(width=30, height=22, fx=28.0, fy=28.0, cx=15.0, cy=11.0,
                           world_to_camera=look_at(eye, np.zeros(3), np.array([0.0, 0.0, 1.0]))))
    return cams


@pytest.fixture
def gaussian_run(tmp_path, seed):
    g = torch.Generator().manual_seed(seed)
    model = GaussianModel.from_points(0.3 * torch.randn(200, 3, generator=g), torch.rand(200, 3, generator=g),
                                      sh_degree=1, init_opacity=0.6,
                                      normalization=Normalization(center=np.array([1.0, 2.0, 3.0]), scale=0.5),
                                      cameras={"train": _ring(6), "test": _ring(3, 1.2)})
    model.active_sh_degree = 1
    run = tmp_path / "run"
    rundir.write_config(run, {"model": "gaussians", "source": str(tmp_path / "gone")})  # the scene is absent
    rundir.save_checkpoint(run, {"kind": "gaussians", "step": 1, "model": model.state_dict(),
                                 "normalization": model.normalization.to_dict()})
    return run, model


def test_render_mp4_frames_and_depth(gaussian_run, tmp_path):
    import imageio.v3 as iio

    run, _ = gaussian_run
    out = tmp_path / "v" / "orbit.mp4"
    assert main(["render", str(run), "--path", "orbit", "--frames", "7", "--fps", "10", "-o", str(out), "--depth"]) == 0
    frames = iio.imread(out)
    assert frames.shape == (7, 22, 30, 3)
    assert frames.std() > 1.0  # not a blank video
    assert iio.imread(tmp_path / "v" / "orbit_depth.mp4").shape[0] == 7


@pytest.mark.parametrize("path, count", [("spiral", 4), ("interpolate", 5), ("test", 3)])
def test_render_png_folder(gaussian_run, tmp_path, path, count):
    import imageio.v3 as iio

    run, _ = gaussian_run
    folder = tmp_path / "pngs"
    assert main(["render", str(run), "--path", path, "--frames", str(count + 2 * (path == "test")),
                 "-o", str(folder) + "/"]) == 0
    files = sorted(folder.glob("*.png"))
    assert len(files) == count
    assert iio.imread(files[0]).shape == (22, 30, 3)


def test_test_path_matches_model_render(gaussian_run, tmp_path):
    """Frames of --path test are the model's renders of the stored test cameras."""
    import imageio.v3 as iio

    run, model = gaussian_run
    assert main(["render", str(run), "--path", "test", "-o", str(tmp_path / "t") + "/"]) == 0
    first = iio.imread(tmp_path / "t" / "00000.png").astype(np.float32) / 255
    expected = model.render(model.cameras["test"][0])["rgb"].numpy()
    assert np.abs(first - expected).max() <= 1 / 255 + 1e-6


def test_orbit_looks_at_the_focus():
    cams = _ring(8)
    for cam in camera_path("orbit", cams, [], 5):
        p = cam.world_to_camera @ np.array([0.0, 0.0, 0.0, 1.0])
        assert p[2] > 0 and abs(p[0]) < 1e-6 and abs(p[1]) < 1e-6  # the origin is straight ahead
        assert np.isclose(np.linalg.norm(cam.center[:2]), 1.0)


def test_export_ply_in_original_coordinates(gaussian_run, tmp_path):
    from recon.engine.io.ply import read_splat_ply

    run, model = gaussian_run
    assert main(["export", str(run), "--ply", str(tmp_path / "x.ply")]) == 0
    splats = read_splat_ply(tmp_path / "x.ply")
    assert len(splats) == 200 and splats.sh_degree == 1
    np.testing.assert_allclose(splats.means, model.params["means"].detach().numpy() / 0.5 + [1, 2, 3], atol=1e-5)


@pytest.mark.parametrize("args, message", [
    (["render", "{tmp}/nowhere"], "no such run directory"),
    (["render", "{tmp}"], "not a run directory"),
    (["export", "{tmp}", "--ply", "{tmp}/o.ply"], "not a run directory"),
    (["export", "{run}"], "nothing to export"),
    (["render", "{run}", "--path", "orbit", "--frames", "0", "-o", "{tmp}/o.mp4"], "--frames"),
    (["fit", "{tmp}/empty", "-o", "{tmp}/r", "--steps", "2"], "empty"),
])
def test_bad_input_exits_2(gaussian_run, tmp_path, capsys, args, message):
    run, _ = gaussian_run
    (tmp_path / "empty").mkdir()
    argv = [a.format(tmp=tmp_path, run=run) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("recon: error:") and message in err[0]
    assert not (tmp_path / "o.mp4").exists() and not (tmp_path / "o.ply").exists()


def test_render_ply_with_scene(gaussian_run, tmp_path):
    """A 3DGS PLY renders with the cameras and normalisation of a scene folder."""
    import imageio.v3 as iio

    from recon.engine.scene.demo import write_demo_scene

    run, _ = gaussian_run
    scene = write_demo_scene(tmp_path / "scene", views=4, resolution=16)
    assert main(["export", str(run), "--ply", str(tmp_path / "x.ply")]) == 0
    assert main(["render", str(tmp_path / "x.ply"), "--scene", str(scene), "--path", "spiral", "--frames", "3",
                 "-o", str(tmp_path / "x.mp4")]) == 0
    assert iio.imread(tmp_path / "x.mp4").shape == (3, 16, 16, 3)
