"""Benchmark distributed Gaussian fits: time and test PSNR on 1, 2, 4, ... processes at the same total batch.

    .venv/bin/python bench/fit_distributed.py --tiny                 # CPU, gloo: demo scene at 32 px, proves it runs
    python bench/fit_distributed.py --scene plush --processes 1 2 4 --batch-size 4 --steps 7500   # GPUs, NCCL

Each row runs ``recon fit SCENE --gpus N --batch-size B --steps S`` in a fresh process tree (N processes under
torchrun's launcher: one GPU each, or CPU processes with gloo where there is no GPU) and reports the fit's own
training time (``train_seconds`` of metrics.json: set-up and evaluation excluded), the wall time of the whole
command, the CPU time (user + sys) of all its processes, the Gaussians at the end and the test PSNR/SSIM. On
the CPU, N > 1 processes get ``OMP_NUM_THREADS`` = cores / N unless it is set; one process uses torch's default.
Steps count optimiser steps of B views each, so ``--steps 7500 --batch-size 4`` sees as many views as the
standard 30,000 single-view steps (Grendel-GS counts the same way).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fit_gaussians import scene_source  # noqa: E402  (a sibling script)


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_fit(source: Path, run_dir: Path, processes: int, args: argparse.Namespace) -> dict:
    """One ``recon fit`` with ``processes`` processes; its metrics plus wall and CPU seconds."""
    command = [sys.executable, "-m", "recon", "fit", str(source), "-o", str(run_dir), "--gpus", str(processes),
               "--batch-size", str(args.batch_size), "--steps", str(args.steps), "--seed", str(args.seed),
               "--init-points", str(args.init_points), "--checkpoint-every", str(args.steps),
               "--downscale", str(args.downscale), *args.extra]
    cpu0, wall0 = children_cpu_seconds(), time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-4000:]}")
    wall, cpu = time.perf_counter() - wall0, children_cpu_seconds() - cpu0
    return {**json.loads((run_dir / "metrics.json").read_text()), "wall": wall, "cpu": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scene", default="demo", choices=["demo", "lego", "plush"])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=7500)
    parser.add_argument("--init-points", type=int, default=100_000)
    parser.add_argument("--downscale", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true",
                        help="CPU size: demo scene of 10 views at 32 px, 60 steps of batch 2, 300 initial points")
    parser.add_argument("extra", nargs="*", help="more `recon fit` options (after --)")
    args = parser.parse_args()
    if args.tiny:
        args.batch_size, args.steps, args.init_points = 2, 60, 300
        args.extra = ["--max-gaussians", "600", *args.extra]
    import torch

    device = f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else (
        f"CPU, {os.cpu_count()} cores, gloo")
    print(f"{device}; torch {torch.__version__}; scene {args.scene}; batch {args.batch_size}; steps {args.steps}")
    print("| processes | train s | wall s | CPU s | Gaussians | test PSNR | test SSIM |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.scene == "demo" and args.tiny:
            from recon.engine.scene.demo import write_demo_scene

            source = write_demo_scene(work / "demo", views=10, resolution=32)
        else:
            source = scene_source(args.scene, work, tiny=False)
        for n in args.processes:
            m = run_fit(source, work / f"run{n}", n, args)
            print(f"| {n} | {m['train_seconds']:.1f} | {m['wall']:.1f} | {m['cpu']:.1f} | {m['num_gaussians']} |"
                  f" {m.get('test_psnr', float('nan')):.2f} | {m.get('test_ssim', float('nan')):.3f} |")


if __name__ == "__main__":
    main()
