"""SDF / occupancy fitting: spot reaches an F-score floor, resume is exact, exports land in original units."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import shared_path
from recon.apps.cli import main as cli_main
from recon.engine.errors import ReconError
from recon.engine.io.mesh import read_mesh, read_shape, write_mesh
from recon.engine.eval.mesh_metrics import nearest_neighbours
from recon.engine.mesh_export import export_run_mesh
from recon.engine.models.registry import load_run
from recon.engine.models.sdf import FieldArchitecture, FieldModel
from recon.engine.train.field import FieldFitConfig, fit, winding_numbers
from recon.kernels import marching_cubes

CPU = torch.device("cpu")
# Evaluation needs enough surface samples that their spacing is well under the 1% F-score threshold.
SMALL = dict(hidden=32, layers=2, frequencies=3, batch_size=256, surface_samples=4000, eval_resolution=32,
             eval_samples=10000)


def _sphere_file(path, radius=2.0, center=(5.0, -1.0, 3.0)):
    x = torch.linspace(-1.2, 1.2, 20)
    X, Y, Z = torch.meshgrid(x, x, x, indexing="ij")
    v, f = marching_cubes((X ** 2 + Y ** 2 + Z ** 2).sqrt() - 1.0, spacing=[2.4 / 19] * 3, origin=[-1.2] * 3)
    write_mesh(path, v.numpy() * radius + np.asarray(center, np.float32), f.numpy())
    return path


def test_sdf_fit_to_spot_reaches_fscore_floor(tmp_path):
    spot = shared_path("meshes", "spot.obj")
    config = FieldFitConfig(kind="sdf", steps=80, lr=5e-3, **{**SMALL, "hidden": 64, "frequencies": 4,
                                                               "batch_size": 512, "surface_samples": 20000,
                                                               "eval_resolution": 64})
    metrics = fit(spot, config, tmp_path / "run", resume=False, device=CPU)
    # The initial sphere scores ~0.17; a fit that learns nothing (or a broken extraction/normalisation) cannot pass.
    assert metrics["fscore"] > 0.8, metrics
    assert metrics["chamfer_l1"] < 0.03 and metrics["normal_consistency"] > 0.85
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["fscore"] == metrics["fscore"]
    _, report = export_run_mesh(tmp_path / "run", tmp_path / "spot.obj", resolution=40)
    v, f = read_mesh(tmp_path / "spot.obj")
    assert (len(v), len(f)) == (report.vertices, report.faces)
    ref_v, _ = read_mesh(spot)
    np.testing.assert_allclose(v.min(0), ref_v.min(0), atol=0.06)  # original coordinates, not normalised
    np.testing.assert_allclose(v.max(0), ref_v.max(0), atol=0.06)


def test_resume_continues_exactly(tmp_path, seed):
    rng = np.random.default_rng(seed)
    points = rng.standard_normal((300, 3))
    points = 3.0 * points / np.linalg.norm(points, axis=1, keepdims=True) + 7.0
    np.savetxt(tmp_path / "ball.xyz", points)  # unoriented cloud
    base = dict(kind="sdf", seed=seed % 1000, checkpoint_every=3, eval_resolution=0, **{
        k: v for k, v in SMALL.items() if k != "eval_resolution"})
    config = FieldFitConfig(steps=6, **base)
    fit(tmp_path / "ball.xyz", config, tmp_path / "run", resume=False, device=CPU)
    (a, sa) = load_run(tmp_path / "run")
    (tmp_path / "run" / "checkpoints" / "step_0000006.pt").unlink()  # as if interrupted after step 3
    fit(tmp_path / "ball.xyz", config, tmp_path / "run", resume=True, device=CPU)
    (b, sb) = load_run(tmp_path / "run")
    assert sa["step"] == sb["step"] == 6
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name


def test_winding_numbers_label_inside_and_outside(tmp_path):
    shape = read_shape(_sphere_file(tmp_path / "s.ply", radius=1.0, center=(0.0, 0.0, 0.0)))
    pts = torch.tensor([[0.0, 0.0, 0.0], [0.5, -0.3, 0.2], [1.5, 0.0, 0.0], [0.0, 3.0, -2.0]], dtype=torch.float64)
    w = winding_numbers(pts, torch.as_tensor(shape.points, dtype=torch.float64), torch.as_tensor(shape.faces))
    torch.testing.assert_close(w, torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.float64), atol=1e-6, rtol=0)


def test_occupancy_fit_and_cli_export(tmp_path, capsys):
    source = _sphere_file(tmp_path / "ball.ply")
    code = cli_main(["fit", str(source), "--model", "occupancy", "-o", str(tmp_path / "occ"), "--steps", "40",
                     "--lr", "1e-2", "--hidden", "32", "--layers", "2", "--frequencies", "2",
                     "--batch-size", "512", "--surface-samples", "3000", "--occupancy-samples", "6000",
                     "--eval-resolution", "32", "--eval-samples", "5000"])
    assert code == 0
    metrics = json.loads((tmp_path / "occ" / "metrics.json").read_text())
    assert metrics["chamfer_l1"] < 0.15, metrics  # sphere of radius 2
    model, state = load_run(tmp_path / "occ")
    assert state["kind"] == "occupancy" and model.level == 0.5 and model.inside == "above"
    assert cli_main(["export", str(tmp_path / "occ"), "--mesh", str(tmp_path / "occ.ply"), "--resolution", "24"]) == 0
    v, f = read_mesh(tmp_path / "occ.ply")
    assert len(f) > 0
    assert np.linalg.norm(v - np.array([5.0, -1.0, 3.0]), axis=1).mean() == pytest.approx(2.0, abs=0.3)


def test_field_model_contract():
    for kind, level, inside in (("sdf", 0.0, "below"), ("occupancy", 0.5, "above")):
        model = FieldModel(FieldArchitecture(kind=kind, hidden=16, layers=2, frequencies=2))
        assert (model.level, model.inside) == (level, inside)
        values = model.field(torch.rand(7, 3) * 2 - 1)
        assert values.shape == (7,)
    sphere = FieldModel(FieldArchitecture(kind="sdf", hidden=256, layers=2, init_radius=0.5))  # geometric init
    directions = torch.nn.functional.normalize(torch.randn(200, 3), dim=1)
    near, far = sphere.field(directions * 0.2), sphere.field(directions * 0.8)
    # |x| - 0.5 would give -0.3 and +0.3; the init only approximates it: on 200 weight seeds the means ranged over
    # -0.24..-0.17 and 0.20..0.45 (the former bound of +-0.1 around +-0.3 failed for 92 of them)
    assert -0.4 < float(near.mean()) < -0.1 and 0.1 < float(far.mean()) < 0.6
    assert bool((near < 0).all()) and float((far > 0).float().mean()) > 0.95


def test_bad_inputs(tmp_path):
    np.savetxt(tmp_path / "p.xyz", np.random.default_rng(0).standard_normal((20, 3)))
    with pytest.raises(ReconError, match="needs a mesh"):
        fit(tmp_path / "p.xyz", FieldFitConfig(kind="occupancy", steps=1), tmp_path / "r", resume=False, device=CPU)
    with pytest.raises(ReconError, match="no checkpoint"):
        fit(tmp_path / "p.xyz", FieldFitConfig(steps=1), tmp_path / "r2", resume=True, device=CPU)
    with pytest.raises(ReconError, match="unsupported"):
        export_run_mesh(tmp_path / "r", tmp_path / "x.stl")


class _BallDensity:
    """A stand-in with NerfModel's mesh contract: density high inside a ball of radius 0.5."""

    mesh_level = 10.0
    mesh_bounds = np.array([[-1.0] * 3, [1.0] * 3])

    def density(self, points: torch.Tensor) -> torch.Tensor:  # [N, 3] -> [N]
        return 20.0 * torch.sigmoid(40.0 * (0.5 - points.norm(dim=-1)))


def test_nerf_density_branch_meshes_the_level_set():
    from recon.engine.mesh_export import run_mesh

    v, f = run_mesh(_BallDensity(), "nerf", 40, "cpu")
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 0.5, atol=0.01)
    normals = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    assert ((normals * v[f].mean(1)).sum(1) > 0).mean() > 0.99  # outward: density is "inside above"


def test_gaussians_run_fuses_depth_into_a_mesh(tmp_path):
    pytest.importorskip("open3d")
    from recon.engine.models.gaussians import GaussianModel
    from recon.engine.render.paths import look_at
    from recon.engine.scene.camera import Camera
    from recon.engine.scene.scene import Normalization
    from recon.engine.train import rundir

    gen = torch.Generator().manual_seed(0)
    points = torch.nn.functional.normalize(torch.randn(3000, 3, generator=gen), dim=1) * 0.5
    eyes = [np.array(e, float) * 1.5 for e in ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1))]
    cams = [Camera(48, 48, 50.0, 50.0, 24.0, 24.0, look_at(e, np.zeros(3), np.array([0.0, 0.0, 1.0])))
            for e in eyes]
    norm = Normalization(center=np.array([1.0, 2.0, 3.0]), scale=0.5)
    model = GaussianModel.from_points(points, torch.full((3000, 3), 0.5), sh_degree=0, init_opacity=0.99,
                                      normalization=norm, cameras={"train": cams, "test": []})
    rundir.write_config(tmp_path / "run", {"model": "gaussians"})
    rundir.save_checkpoint(tmp_path / "run", {"kind": "gaussians", "step": 1, "model": model.state_dict(),
                                              "normalization": norm.to_dict()})
    _, report = export_run_mesh(tmp_path / "run", tmp_path / "g.ply", resolution=64)
    v, f = read_mesh(tmp_path / "g.ply")
    assert report.faces > 100 and len(f) == report.faces
    radius = np.linalg.norm(v - norm.center, axis=1)  # original units: normalised radius 0.5 / scale 0.5
    assert abs(float(np.median(radius)) - 1.0) < 0.1


def test_hashgrid_sdf_fit(tmp_path):
    """The hash-grid encoding (finite-difference gradients) also fits: a sphere mesh, few steps."""
    source = _sphere_file(tmp_path / "ball.obj")
    config = FieldFitConfig(kind="sdf", steps=30, lr=1e-2, encoding="hashgrid", n_levels=4, log2_table_size=10,
                            base_resolution=8, max_resolution=32, **{**SMALL, "batch_size": 128,
                                                                    "eval_samples": 5000})
    metrics = fit(source, config, tmp_path / "run", resume=False, device=CPU)
    assert metrics["chamfer_l1"] < 0.1, metrics  # sphere of radius 2 (the initial sphere is ~0.75 away)
    model, _ = load_run(tmp_path / "run")
    assert model.arch.encoding == "hashgrid"


def test_frequency_gradient_matches_finite_differences(seed):
    model = FieldModel(FieldArchitecture(kind="sdf", hidden=32, layers=2, frequencies=2)).double()
    x = torch.rand(20, 3, dtype=torch.float64) * 1.6 - 0.8
    _, grad = model.with_gradient(x)
    h, eye = 1e-5, torch.eye(3, dtype=torch.float64)
    numeric = torch.stack([(model(x + h * eye[i]) - model(x - h * eye[i])) / (2 * h) for i in range(3)], dim=1)
    torch.testing.assert_close(grad, numeric, atol=1e-5, rtol=1e-5)


def test_render_finds_the_surface():
    from recon.engine.render.paths import look_at
    from recon.engine.scene.camera import Camera

    class ExactSphere(FieldModel):
        def forward(self, points):  # the SDF of the radius-0.5 sphere
            return points.norm(dim=-1) - 0.5

    model = ExactSphere(FieldArchitecture(kind="sdf", hidden=8, layers=1))
    camera = Camera(24, 20, 30.0, 30.0, 12.0, 10.0, look_at(np.array([0.0, -2.0, 0.0]), np.zeros(3),
                                                            np.array([0.0, 0.0, 1.0])))
    out = model.render(camera, samples=64)
    assert out["rgb"].shape == (20, 24, 3) and out["depth"].shape == out["alpha"].shape == (20, 24, 1)
    assert out["alpha"][10, 12, 0] == 1.0 and out["alpha"][0, 0, 0] == 0.0
    assert abs(float(out["depth"][10, 12, 0]) - 1.5) < 3e-3  # the front at 2 - 0.5 (pixel centre slightly off-axis)
    hits = out["alpha"][..., 0] > 0
    assert 0.1 < float(hits.float().mean()) < 0.9 and bool((out["rgb"][~hits] == 1.0).all())


def test_far_points_lie_away_from_the_surface_on_their_true_side(seed):
    """A sphere of radius 0.6 sampled with outward normals: far points and their sides match |p| - 0.6."""
    from recon.engine.train.field import far_points

    gen = torch.Generator().manual_seed(seed)
    normals = torch.nn.functional.normalize(torch.randn(20000, 3, generator=gen), dim=1)
    uniform = torch.rand(5000, 3, generator=gen) * 2 - 1
    points, side = far_points(uniform, 0.6 * normals, normals, 0.05)
    sdf = points.norm(dim=1) - 0.6
    assert len(points) > 3000 and torch.all(sdf.abs() > 0.05 - 0.01)  # the samples are ~0.008 apart
    assert torch.equal(side, torch.sign(sdf))
    kept = (sdf.abs() > 0.06).sum()  # every point clearly farther than the margin is kept
    assert kept == ((uniform.norm(dim=1) - 0.6).abs() > 0.06).sum()
    cloud, cloud_side = far_points(uniform, 0.6 * normals, None, 0.05)  # no normals: only outside the box
    assert torch.all(cloud_side == 1) and torch.all((cloud.abs() > 0.64).any(1)) and len(cloud) > 1000


def test_sdf_fit_export_is_one_clean_component(tmp_path, capsys):
    """A short fit to the bunny (holes in its base) exports by default as one watertight component without
    self-intersections, and that component is the bunny (its vertices lie near the reference surface)."""
    bunny = shared_path("meshes", "bunny.obj")
    config = FieldFitConfig(kind="sdf", steps=80, lr=5e-3, **{**SMALL, "hidden": 64, "frequencies": 4,
                                                               "batch_size": 512, "surface_samples": 20000,
                                                               "eval_resolution": 0})
    fit(bunny, config, tmp_path / "run", resume=False, device=CPU)
    assert cli_main(["export", str(tmp_path / "run"), "--mesh", str(tmp_path / "bunny.ply"), "--resolution",
                     "64"]) == 0
    out = capsys.readouterr().out
    assert "1 component, watertight, no self-intersections" in out, out
    v, f = read_mesh(tmp_path / "bunny.ply")
    ref_v, _ = read_mesh(bunny)
    diagonal = float(np.linalg.norm(ref_v.max(0) - ref_v.min(0)))
    distance, _ = nearest_neighbours(torch.as_tensor(v), torch.as_tensor(ref_v))
    assert float(distance.max()) < 0.1 * diagonal  # the surface kept is the bunny's
    assert cli_main(["export", str(tmp_path / "run"), "--mesh", str(tmp_path / "all.ply"), "--resolution", "64",
                     "--keep-components", "all"]) == 0
    assert "all components kept" in capsys.readouterr().out
    assert len(read_mesh(tmp_path / "all.ply")[1]) >= len(f)
    assert cli_main(["export", str(tmp_path / "run"), "--mesh", str(tmp_path / "x.ply"), "--keep-components",
                     "most"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--keep-components must be 'all' or a fraction" in err
