"""Benchmark the hash-grid encoding: forward and forward+backward throughput (points per second) of every
backend that can run on the device, in the same call, plus their largest disagreement.

Defaults are the instant-ngp configuration: 2^20 points, L=16 levels, F=2 features, T=2^19 table rows,
base resolution 16, finest 2048. On a CPU the Triton kernels only run in the interpreter
(``TRITON_INTERPRET=1``), which is for correctness, not speed; ``--tiny`` shrinks everything.

Examples:
  python bench/hashgrid.py --device cpu --tiny
  python bench/hashgrid.py --device cuda
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

from recon.kernels import hash_encode
from recon.kernels.backend import resolve_backend
from recon.kernels.hashgrid import per_level_scale_for


def _time(fn, device: torch.device, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--points", type=int, default=2**20)
    p.add_argument("--levels", type=int, default=16)
    p.add_argument("--features", type=int, default=2)
    p.add_argument("--log2-table-size", type=int, default=19)
    p.add_argument("--base-resolution", type=int, default=16)
    p.add_argument("--max-resolution", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--tiny", action="store_true", help="4096 points, 4 levels, T=2^12, 2 repeats")
    args = p.parse_args()
    if args.tiny:
        args.points, args.levels, args.log2_table_size, args.repeats = 4096, 4, 12, 2
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    positions = torch.rand(args.points, 3, generator=gen).to(device)
    table = (torch.rand(args.levels, 2**args.log2_table_size, args.features, generator=gen) * 2e-4 - 1e-4).to(device)
    scale = per_level_scale_for(args.levels, args.base_resolution, args.max_resolution)
    with warnings.catch_warnings():  # no Triton here: measure the reference alone
        warnings.simplefilter("ignore")
        backends = list(dict.fromkeys(["torch", resolve_backend("hash_encode", device, "triton")]))
    print(f"hash_encode on {device}: N={args.points} L={args.levels} F={args.features} "
          f"T=2^{args.log2_table_size} base={args.base_resolution} max={args.max_resolution}")
    outputs = {}
    for backend in backends:
        leaf = table.clone().requires_grad_()

        def forward() -> torch.Tensor:
            with torch.no_grad():
                return hash_encode(positions, leaf, base_resolution=args.base_resolution, per_level_scale=scale,
                                   backend=backend)

        def forward_backward() -> None:
            out = hash_encode(positions, leaf, base_resolution=args.base_resolution, per_level_scale=scale,
                              backend=backend)
            out.sum().backward()
            leaf.grad = None

        fwd = _time(forward, device, args.repeats)
        both = _time(forward_backward, device, args.repeats)
        outputs[backend] = forward()
        print(f"  {backend:7s} forward {fwd * 1e3:9.2f} ms ({args.points / fwd:.3g} points/s)   "
              f"fwd+bwd {both * 1e3:9.2f} ms ({args.points / both:.3g} points/s)")
    if len(outputs) > 1:
        diff = (outputs[backends[1]] - outputs["torch"]).abs().max().item()
        print(f"  max |{backends[1]} - torch| = {diff:.3g}")


if __name__ == "__main__":
    main()
