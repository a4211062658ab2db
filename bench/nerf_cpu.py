"""CPU time of the NeRF demo fit of issue 19: ``recon fit D --model nerf --steps 300 --downscale 4``.

Writes the demo scene (``recon demo-scene`` defaults: 64 views of 128 px, so 32 px at downscale 4) unless
``--scene`` names one, runs ``recon.engine.train.nerf.fit`` with the CLI's defaults and the given overrides,
and prints wall time, user and system CPU time (``getrusage``), minor page faults, torch threads and the
test PSNR; ``--profile N`` adds the N costliest functions of a cProfile run (by own time and cumulative).
Only uses ``fit`` and ``NerfFitConfig``, so it also measures older checkouts (run it with their venv).

Examples:
  python bench/nerf_cpu.py                       # the issue's command
  python bench/nerf_cpu.py --steps 40 --profile 20
  python bench/nerf_cpu.py --set grid_resolution=128 batch_rays=4096
  python bench/nerf_cpu.py --field-pass 65536 --threads 2   # one field forward + backward, 3 repeats
"""
from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import resource
import tempfile
import time
from dataclasses import fields, replace
from pathlib import Path

import torch

from recon.engine.train.nerf import NerfFitConfig, fit


def _override(config: NerfFitConfig, pairs: list[str]) -> NerfFitConfig:
    types = {f.name: type(f.default) for f in fields(config)}
    values = {}
    for pair in pairs:
        name, value = pair.split("=", 1)
        values[name] = types[name](value) if types[name] is not bool else value.lower() in ("1", "true", "yes")
    return replace(config, **values)


def _field_pass(points: int, threads: int) -> None:
    from recon.engine.models.nerf import NerfArchitecture, NerfModel

    if threads:
        torch.set_num_threads(threads)
    model, x = NerfModel(NerfArchitecture()), torch.rand(points, 3)
    for _ in range(3):
        before, tick = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        sigma, geo = model._field(x)
        (sigma.sum() + geo.sum()).backward()
        after = resource.getrusage(resource.RUSAGE_SELF)
        print(f"field forward + backward, {points} points, {torch.get_num_threads()} threads: wall "
              f"{time.perf_counter() - tick:.2f} s, user {after.ru_utime - before.ru_utime:.2f} s, system "
              f"{after.ru_stime - before.ru_stime:.2f} s, minor faults {after.ru_minflt - before.ru_minflt}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scene", default=None, help="scene folder (default: a fresh demo scene)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--downscale", type=int, default=4)
    p.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE", help="other NerfFitConfig fields")
    p.add_argument("--profile", type=int, default=0, metavar="N", help="print the N costliest functions")
    p.add_argument("--field-pass", type=int, default=0, metavar="POINTS",
                   help="instead of a fit, time a forward + backward of the default field over POINTS points")
    p.add_argument("--threads", type=int, default=0, help="torch threads for --field-pass (0: torch's default)")
    args = p.parse_args()
    if args.field_pass:
        _field_pass(args.field_pass, args.threads)
        return
    config = _override(NerfFitConfig(steps=args.steps, downscale=args.downscale, checkpoint_every=args.steps),
                       args.set)
    with tempfile.TemporaryDirectory(prefix="recon-bench-nerf-cpu-") as tmp:
        source = Path(args.scene) if args.scene else None
        if source is None:
            from recon.engine.scene.demo import write_demo_scene

            source = write_demo_scene(Path(tmp) / "demo")
        profiler = cProfile.Profile() if args.profile else None
        load_before = os.getloadavg()[0]
        before, tick = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        if profiler:
            profiler.enable()
        metrics = fit(source, config, Path(tmp) / "run", resume=False, device=torch.device("cpu"))
        if profiler:
            profiler.disable()
        wall, after = time.perf_counter() - tick, resource.getrusage(resource.RUSAGE_SELF)
    user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    print(f"nerf cpu fit: steps={config.steps} downscale={config.downscale} overrides={args.set or 'none'} "
          f"torch's default threads={torch.get_num_threads()} (a fit may choose fewer: --threads), "
          f"load before {load_before:.1f}")
    print(f"  wall {wall:.1f} s, user {user:.1f} s, system {system:.1f} s, user+system {user + system:.1f} s, "
          f"minor faults {after.ru_minflt - before.ru_minflt}, peak RSS {after.ru_maxrss / 1024:.0f} MiB")
    nan = float("nan")
    print(f"  test PSNR {metrics.get('test_psnr', nan):.2f} dB, SSIM {metrics.get('test_ssim', nan):.3f}, "
          f"occupied {metrics.get('occupied_fraction', float('nan')):.3f}, load after {os.getloadavg()[0]:.1f}")
    if profiler:
        for key in ("tottime", "cumulative"):
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats(key).print_stats(args.profile)
            print(out.getvalue().split("\n", 4)[-1].rstrip())


if __name__ == "__main__":
    main()
