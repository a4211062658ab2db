"""CPU thread choice for fits: the idle cores by load average, an explicit count, restored afterwards."""
from __future__ import annotations

import torch

from recon.engine.train.threads import cpu_threads, idle_cores


def test_idle_cores_from_load():
    assert idle_cores(2, 0.0) == 2
    assert idle_cores(2, 0.7) == 1  # round(1.3)
    assert idle_cores(2, 12.0) == 1  # never below one
    assert idle_cores(16, 3.4) == 13
    assert idle_cores() >= 1


def test_cpu_threads_sets_and_restores(monkeypatch):
    before = torch.get_num_threads()
    with cpu_threads(1, torch.device("cpu")) as count:
        assert count == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    monkeypatch.setenv("OMP_NUM_THREADS", str(before))
    with cpu_threads(0, torch.device("cpu")) as count:  # the user's OMP_NUM_THREADS is kept
        assert count == before == torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr("os.getloadavg", lambda: (1e3, 0.0, 0.0))
    with cpu_threads(0, torch.device("cpu")) as count:  # a saturated machine: one thread
        assert count == 1 == torch.get_num_threads()
    assert torch.get_num_threads() == before
    with cpu_threads(0, torch.device("meta")) as count:  # not a CPU fit: nothing changes
        assert count == before
