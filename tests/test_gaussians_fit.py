"""End-to-end Gaussian fits on a tiny demo scene (CPU, torch rasterizer): quality floor and exact resume."""
from __future__ import annotations

import json

import pytest
import torch

from recon.apps.cli import main
from recon.engine.train import rundir

# Measured (2026-11-23, CPU, torch rasterizer): this 120-step fit reaches a test PSNR of 15.7 dB (SSIM 0.75)
# on the two 32x32 demo test views; a constant mean-colour image scores 9.6 and 11.8 dB. The floor sits
# below the measurement by ~2.7 dB and above what an untrained or broken pipeline reaches.
PSNR_FLOOR = 13.0


@pytest.fixture(scope="module")
def demo_scene(tmp_path_factory):
    from recon.engine.scene.demo import write_demo_scene

    return write_demo_scene(tmp_path_factory.mktemp("demo") / "scene", views=10, resolution=32)


def test_short_fit_beats_floor(demo_scene, tmp_path):
    run = tmp_path / "run"
    assert main(["fit", str(demo_scene), "-o", str(run), "--steps", "120", "--init-points", "400",
                 "--max-gaussians", "1200", "--seed", "1"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test_psnr"] > PSNR_FLOOR, metrics
    assert 0 < metrics["num_gaussians"] <= 1200
    assert len(list((run / "test_renders").glob("*.png"))) == metrics["test_views"] > 0
    assert rundir.checkpoint_paths(run)[-1].name == "step_0000120.pt"


def test_resume_is_bitwise_exact(demo_scene, tmp_path):
    """Stopping at a checkpoint and resuming reproduces the uninterrupted run exactly (CPU)."""
    run = tmp_path / "run"
    argv = ["fit", str(demo_scene), "-o", str(run), "--steps", "24", "--init-points", "300",
            "--checkpoint-every", "12", "--seed", "3"]
    assert main(argv) == 0
    final = rundir.checkpoint_paths(run)[-1]
    straight = torch.load(final, weights_only=False)
    final.unlink()  # as if the run had been stopped right after step 12
    assert main(argv + ["--resume"]) == 0
    resumed = torch.load(rundir.checkpoint_paths(run)[-1], weights_only=False)
    assert resumed["step"] == straight["step"] == 24
    for name, value in straight["model"]["params"].items():
        assert torch.equal(resumed["model"]["params"][name], value), name
    for key, state in straight["optimizer"]["state"].items():
        for moment in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(resumed["optimizer"]["state"][key][moment], state[moment])
    assert "resume at step 12" in (run / "log.txt").read_text()
