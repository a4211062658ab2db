"""How many CPU threads a CPU fit uses: the cores other processes leave idle, so a shared machine is not
oversubscribed.

Every torch op on the CPU splits its work over ``torch.get_num_threads()`` OpenMP threads (all cores by
default). When other processes already keep the cores busy, those threads wait on each other at every
op's barrier, spinning: on the 2-core project machine at load 10, a NeRF training pass took 4.5x the CPU
time and 2.7x the wall time with 2 threads than with 1 (docs/benchmarks.md, issue 19).
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch


def idle_cores(cores: int | None = None, load: float | None = None) -> int:
    """Cores the 1-minute load average leaves idle, rounded, between 1 and ``cores``."""
    cores = cores or os.cpu_count() or 1
    load = os.getloadavg()[0] if load is None and hasattr(os, "getloadavg") else (load or 0.0)
    return max(1, min(cores, round(cores - load)))


@contextlib.contextmanager
def cpu_threads(requested: int, device: torch.device) -> Iterator[int]:
    """Run the block with ``requested`` torch threads on a CPU device (0: ``idle_cores``, capped at torch's
    default; the ``OMP_NUM_THREADS`` setting is kept when given); yields the count and restores it after."""
    before = torch.get_num_threads()
    if device.type != "cpu" or (requested == 0 and os.environ.get("OMP_NUM_THREADS")):
        yield before
        return
    count = requested or min(before, idle_cores())
    torch.set_num_threads(count)
    try:
        yield count
    finally:
        torch.set_num_threads(before)
