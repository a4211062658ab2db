"""What `recon fit --view` costs when no browser is connected: the same fit with and without the viewer.

    .venv/bin/python bench/viewer_overhead.py --tiny                  # demo scene, 8 views of 32 px, 60 steps
    .venv/bin/python bench/viewer_overhead.py --steps 300 --repeats 5

Each repeat runs `recon fit` twice in subprocesses, alternating which goes first, and records the child's CPU
time (user + sys, start-up included), its wall time and the training loop's own time (``train_seconds`` in
metrics.json); the medians are compared. The per-step hook alone is timed too (a million
``LiveView.on_step`` calls with no tab connected). Target: at most 10% slower with the viewer.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed_fit(scene: Path, out: Path, steps: int, view: bool) -> tuple[float, float, float]:
    """(CPU seconds of the child, wall seconds, training-loop seconds) of one `recon fit`."""
    args = [sys.executable, "-m", "recon.apps.cli", "fit", str(scene), "-o", str(out), "--steps", str(steps),
            "--init-points", "1000", "--max-gaussians", "3000"] + (["--view", "--view-port", "0"] if view else [])
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    loop = json.loads((out / "metrics.json").read_text())["train_seconds"]
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall, loop


def hook_cost(calls: int = 1_000_000) -> float:
    """Seconds per ``on_step`` call of an idle live viewer (no tab connected)."""
    from types import SimpleNamespace

    from recon.engine.viewer.live import LiveView

    live = LiveView(SimpleNamespace(connected=0), total_steps=calls)
    start = time.perf_counter()
    for step in range(calls):
        live.on_step(step, None, 0.0)
    return (time.perf_counter() - start) / calls


def main() -> None:
    from recon.engine.scene.demo import write_demo_scene

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="8 views of 32 px, 60 steps, 2 repeats")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--resolution", type=int, default=64)
    args = parser.parse_args()
    steps, repeats, resolution = (60, 2, 32) if args.tiny else (args.steps, args.repeats, args.resolution)
    print(f"idle hook: {hook_cost() * 1e9:.0f} ns per step")
    with tempfile.TemporaryDirectory() as work:
        scene = write_demo_scene(Path(work) / "scene", views=8 if args.tiny else 16, resolution=resolution)
        results: dict[bool, list[tuple[float, float, float]]] = {False: [], True: []}
        for repeat in range(repeats):
            for view in ((False, True) if repeat % 2 == 0 else (True, False)):
                results[view].append(timed_fit(scene, Path(work) / f"run_{repeat}_{int(view)}", steps, view))
    print(f"\n`recon fit` of the demo scene ({resolution} px), {steps} steps, median of {repeats}:\n")
    print("| | CPU s (user+sys) | wall s | training loop s |\n|---|---|---|---|")
    medians = {}
    for view, runs in results.items():
        medians[view] = [statistics.median(r[i] for r in runs) for i in range(3)]
        label = "--view, no browser" if view else "plain"
        print(f"| {label} | " + " | ".join(f"{m:.1f}" for m in medians[view]) + " |")
    cpu, wall, loop = (medians[True][i] / medians[False][i] - 1 for i in range(3))
    print(f"\n--view: CPU {cpu:+.1%}, wall {wall:+.1%}, training loop {loop:+.1%}")

if __name__ == "__main__":
    main()
