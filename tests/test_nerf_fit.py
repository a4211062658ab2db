"""Hash-grid NeRF: rays, occupancy grid, a short CPU fit on the demo scene, resume and load_run."""
from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from recon.engine.models.rays import camera_rays, ray_box_intersection
from recon.engine.models.registry import load_run
from recon.engine.scene.camera import Camera
from recon.engine.train.nerf import NerfFitConfig, fit
from recon.engine.train.occupancy_grid import OccupancyGrid

TINY = NerfFitConfig(steps=150, batch_rays=256, batch_samples=4096, samples_per_ray=32, n_levels=6, log2_table_size=12,
                     base_resolution=8, max_resolution=96, hidden=32, grid_resolution=16, grid_update_every=8,
                     box_radius=0.5, checkpoint_every=100, test_every=5, lr=2e-2)


@pytest.fixture(scope="module")
def demo_scene(tmp_path_factory):
    from recon.engine.scene.demo import write_demo_scene

    return write_demo_scene(tmp_path_factory.mktemp("nerf") / "demo", seed=3, views=10, resolution=24, supersample=1)


def test_camera_rays_through_pixel_centres():
    w2c = np.eye(4)
    w2c[:3, 3] = [0.0, 0.0, 2.0]
    cam = Camera(width=5, height=3, fx=10.0, fy=8.0, cx=2.5, cy=1.5, world_to_camera=w2c)
    origins, dirs = camera_rays(cam)
    assert origins.shape == dirs.shape == (15, 3)
    torch.testing.assert_close(origins[0], torch.tensor([0.0, 0.0, -2.0]))
    torch.testing.assert_close(dirs[7], torch.tensor([0.0, 0.0, 1.0]))  # centre pixel (2, 1) looks down +z
    d = dirs[0]  # pixel (0, 0): image point (0.5, 0.5) -> x = (0.5 - 2.5) / 10, y = (0.5 - 1.5) / 8
    torch.testing.assert_close(d / d[2], torch.tensor([-0.2, -0.125, 1.0]))
    box = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    near, far = ray_box_intersection(origins[7:8], dirs[7:8], box)
    torch.testing.assert_close(torch.stack([near, far]).flatten(), torch.tensor([1.0, 3.0]))


def test_occupancy_grid_finds_and_forgets_a_ball(seed):
    g = torch.Generator().manual_seed(seed)
    grid = OccupancyGrid(16, threshold=0.5, warmup_updates=2)
    ball = lambda p: 10.0 * ((p - 0.5).norm(dim=-1) < 0.25).float()  # noqa: E731
    for _ in range(2):
        grid.update(ball, g)
    centres = (torch.stack(torch.meshgrid(*[torch.arange(16)] * 3, indexing="ij"), -1).reshape(-1, 3) + 0.5) / 16
    distance = (centres - 0.5).norm(dim=-1)
    assert grid.is_occupied(centres)[distance < 0.2].all()
    assert not grid.is_occupied(centres)[distance > 0.32].any()
    assert not grid.is_occupied(torch.tensor([[1.2, 0.5, 0.5], [0.5, 0.5, 0.5]]))[0]
    before = grid.density.clone()
    grid.update(lambda p: torch.zeros(len(p)), g)  # nothing there any more: densities decay by 0.95
    torch.testing.assert_close(grid.density, before * 0.95)
    restored = OccupancyGrid.from_state_dict(grid.state_dict())
    assert torch.equal(restored.occupied, grid.occupied) and restored.updates == grid.updates


def _mean_colour_psnr(scene) -> float:
    """PSNR on the test views of the best constant image (the training mean): what a broken fit scores."""
    mean = np.mean([scene.load_image(i).reshape(-1, 3).mean(0) for i in scene.train_indices], axis=0)
    mse = np.mean([np.mean((scene.load_image(i) - mean) ** 2) for i in scene.test_indices])
    return float(-10 * math.log10(mse))


def test_short_fit_beats_floor_and_loads(demo_scene, tmp_path):
    from recon.engine.scene import load_scene

    run = tmp_path / "run"
    metrics = fit(demo_scene, TINY, run, resume=False, device=torch.device("cpu"))
    scene = load_scene(demo_scene, test_every=TINY.test_every)
    floor = _mean_colour_psnr(scene)
    assert metrics["test_psnr"] > max(15.0, floor + 5.0), (metrics, floor)
    assert json.loads((run / "metrics.json").read_text())["test_psnr"] == pytest.approx(metrics["test_psnr"])
    assert len(list((run / "test_renders").glob("*.png"))) == len(scene.test_indices)
    model, state = load_run(run)
    assert state["kind"] == "nerf" and state["step"] == TINY.steps
    camera = scene.frames[scene.test_indices[0]].camera
    out = model.render(camera, background=(0.0, 0.0, 0.0))
    assert out["rgb"].shape == (24, 24, 3) and out["depth"].shape == out["alpha"].shape == (24, 24, 1)
    # The objects sit inside a radius-0.4 ball (normalised); the box corners are empty.
    inside = model.density(torch.zeros(1, 3) + torch.tensor(scene.normalization.to_normalized(np.zeros(3)),
                                                            dtype=torch.float32))
    corners = model.density(torch.tensor([[0.49, 0.49, 0.49], [-0.49, -0.49, 0.49], [2.0, 0.0, 0.0]]))
    assert corners[2] == 0 and torch.isfinite(inside).all() and model.mesh_level > 0


def test_resume_continues_exactly(demo_scene, tmp_path):
    """A run stopped after its step-3 checkpoint and resumed ends where an uninterrupted run ends."""
    from recon.engine.train.rundir import checkpoint_paths

    small = replace(TINY, steps=6, checkpoint_every=3, grid_update_every=2, test_every=0)
    fit(demo_scene, small, tmp_path / "straight", resume=False, device=torch.device("cpu"))
    fit(demo_scene, small, tmp_path / "split", resume=False, device=torch.device("cpu"))
    checkpoint_paths(tmp_path / "split")[-1].unlink()  # as if killed before the step-6 checkpoint
    fit(demo_scene, small, tmp_path / "split", resume=True, device=torch.device("cpu"))
    a, _ = load_run(tmp_path / "straight")
    b, _ = load_run(tmp_path / "split")
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(pa, pb, msg=name)
    assert torch.equal(a.grid.density, b.grid.density)


def test_render_of_an_opaque_plane_gives_its_depth():
    """A field that is empty for z < 0.3 and opaque beyond: every pixel sees camera z = 2.3 (z-depth)."""
    from recon.engine.models.nerf import NerfArchitecture, NerfModel

    model = NerfModel(NerfArchitecture(n_levels=2, log2_table_size=8, n_samples=256, background=(0.0, 0.0, 1.0)))
    model._field = lambda unit: (1e4 * (unit[:, 2] > 0.65).float(), torch.zeros(len(unit), 15))  # z > 0.3
    w2c = np.eye(4)
    w2c[:3, 3] = [0.0, 0.0, 2.0]  # camera at z = -2 looking down +z
    out = model.render(Camera(width=7, height=5, fx=20.0, fy=20.0, cx=3.5, cy=2.5, world_to_camera=w2c))
    step = float(model.nominal_step)
    torch.testing.assert_close(out["depth"], torch.full((5, 7, 1), 2.3), atol=step, rtol=0)
    torch.testing.assert_close(out["alpha"], torch.ones(5, 7, 1))
    away = np.diag([1.0, -1.0, -1.0, 1.0])  # at the origin, looking down -z into the empty half
    empty = model.render(Camera(width=3, height=3, fx=6.0, fy=6.0, cx=1.5, cy=1.5, world_to_camera=away))
    torch.testing.assert_close(empty["rgb"], torch.tensor([0.0, 0.0, 1.0]).expand(3, 3, 3))


def test_batch_and_grid_sized_by_device():
    """0 means "by device": instant-ngp's 4096 rays, 2^18 samples and 128^3 cells on a GPU, 1024, 2^15 and
    64^3 on the CPU; explicit values are kept. The rays per step follow the sample budget."""
    from recon.engine.train.nerf import sized_for

    cpu = sized_for(NerfFitConfig(), torch.device("cpu"))
    gpu = sized_for(NerfFitConfig(), torch.device("cuda"))
    assert (cpu.batch_rays, cpu.grid_resolution, gpu.batch_rays, gpu.grid_resolution) == (1024, 64, 4096, 128)
    assert (cpu.batch_samples, gpu.batch_samples) == (2**15, 2**18)
    assert sized_for(TINY, torch.device("cpu")) == TINY
    from recon.engine.train.nerf import next_ray_count

    assert next_ray_count(1000, 2**16, cpu) == 500  # twice the budget: half the rays
    assert next_ray_count(1000, 2**13, cpu) == 2000  # a quarter: at most doubled per step
    assert next_ray_count(1000, 0, cpu) == 2000 and next_ray_count(100, 2**20, cpu) == 64
    assert next_ray_count(16000, 10, cpu) == 16 * cpu.batch_rays
