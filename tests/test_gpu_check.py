"""``make gpu-check`` on a machine without a GPU says so (exit 2), and every command it would run on a GPU names
options its script really has (so the one call on a lent GPU does not die on a stale flag)."""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "bench" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_without_a_gpu_it_says_so_and_exits_2(tmp_path):
    run = subprocess.run(["make", "-s", "gpu-check"], cwd=REPO, capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable})
    assert run.returncode == 2, run.stderr
    assert "needs an NVIDIA GPU" in run.stderr and "Traceback" not in run.stderr


def test_every_step_uses_options_its_script_has():
    module = _gpu_check()
    steps = module.steps(Path("garden.npz"), "90")
    assert {s.name for s in steps} >= {"cuda-build", "kernel-tests", "gsplat-check", "rasterize", "hashgrid",
                                       "marching", "fit-3dgs", "fit-nerf"}
    helps: dict[str, str] = {}
    for step in steps:
        scripts = [part for part in step.command if part.startswith("bench/")]
        if not scripts:
            continue
        if scripts[0] not in helps:
            helps[scripts[0]] = subprocess.run([sys.executable, scripts[0], "--help"], cwd=REPO, capture_output=True,
                                               text=True).stdout
        help_text = helps[scripts[0]]
        for flag in (part for part in step.command if part.startswith("--")):
            assert re.search(rf"(^|\s){re.escape(flag)}\b", help_text), f"{step.name}: {scripts[0]} has no {flag}"
