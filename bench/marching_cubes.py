"""Benchmark: recon marching cubes (GPU when present, and the CPU torch path) vs scikit-image (and PyMCubes).

Field: a gyroid clipped by a sphere (many small surface pieces, non-trivial topology), level 0, on an
N^3 grid. Every implementation gets the same grid; times are the median of ``--repeats`` runs after a
warm-up, in seconds, with output sizes. On a GPU a chunked ``--chunked-size``^3 run (1024 by default)
is timed too.

    python bench/marching_cubes.py --sizes 256 512            # the figures for docs/benchmarks.md
    python bench/marching_cubes.py --sizes 32 --repeats 1      # smoke run on a CPU
    python bench/marching_cubes.py --sizes --noise-fields 60   # self-intersecting meshes on noise (open3d, exact)
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import time

import torch

from recon.kernels import marching_cubes


def gyroid_field(n: int, device: torch.device | str) -> torch.Tensor:
    """[n, n, n] float32: gyroid of period ~1/4 of the box, clipped by a sphere of radius 0.9."""
    x = torch.linspace(-1.0, 1.0, n, device=device)
    X, Y, Z = torch.meshgrid(x, x, x, indexing="ij")
    k = 4.0 * torch.pi
    gyroid = torch.sin(k * X) * torch.cos(k * Y) + torch.sin(k * Y) * torch.cos(k * Z) + torch.sin(k * Z) * torch.cos(k * X)
    sphere = (X * X + Y * Y + Z * Z).sqrt() - 0.9
    return torch.maximum(gyroid.abs() - 0.3, sphere * 4.0)


def timed(fn, repeats: int, sync: bool) -> tuple[float, object]:
    """Median seconds of ``repeats`` calls after one warm-up, and the last result."""
    result = fn()
    times = []
    for _ in range(repeats):
        if sync:
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = fn()
        if sync:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def report(name: str, n: int, seconds: float, n_vertices: int, n_faces: int) -> None:
    print(f"{name:<28} {n:>5}^3  {seconds:9.4f} s  {n_vertices:>10} vertices  {n_faces:>10} faces", flush=True)


def count_self_intersecting(fields: int) -> None:
    """How many of ``fields`` noise grids (seeds 0..fields-1: 10x9x8 standard-normal values padded with an
    outside layer) give a mesh that open3d calls self-intersecting, and how many have faces that cross (decided
    exactly, ``recon.engine.mesh_topology``), for recon and scikit-image's two methods."""
    import numpy as np
    import open3d as o3d
    from skimage.measure import marching_cubes as skimage_mc

    from recon.engine.mesh_topology import self_intersecting_pairs

    def flagged(vertices, faces) -> tuple[bool, bool]:
        mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(np.asarray(vertices, np.float64)),
                                         o3d.utility.Vector3iVector(np.asarray(faces, np.int32)))
        return mesh.is_self_intersecting(), len(self_intersecting_pairs(vertices, faces)) > 0

    counts = {name: np.zeros(2, np.int64) for name in ("recon torch", "skimage lorensen", "skimage lewiner")}
    for seed in range(fields):
        rng = np.random.default_rng(seed)
        grid = np.pad(rng.standard_normal((10, 9, 8)).astype(np.float32), 1, constant_values=1.0)
        v, f = marching_cubes(torch.from_numpy(grid), 0.0, backend="torch")
        counts["recon torch"] += flagged(v.numpy(), f.numpy())
        for method in ("lorensen", "lewiner"):
            out = skimage_mc(grid, 0.0, method=method)
            counts[f"skimage {method}"] += flagged(out[0], out[1])
    for name, (open3d_count, exact_count) in counts.items():
        print(f"{name:<28} of {fields} noise fields: {open3d_count} self-intersecting by open3d, "
              f"{exact_count} with crossing faces (exact)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[256, 512],
                        help="grid sizes N (N^3 grids; none: skip the timings)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="device of the recon GPU run (the CPU path and skimage always run on the CPU)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (median reported)")
    parser.add_argument("--chunked-size", type=int, default=1024, help="size of the chunked GPU run (0: skip)")
    parser.add_argument("--skip-skimage", action="store_true", help="do not time scikit-image")
    parser.add_argument("--noise-fields", type=int, default=0,
                        help="also count self-intersecting meshes on this many noise grids (needs open3d)")
    args = parser.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}")
    for n in args.sizes:
        cpu_grid = gyroid_field(n, "cpu")
        if gpu:
            grid = cpu_grid.to(device)
            seconds, (v, f) = timed(lambda: marching_cubes(grid, 0.0), args.repeats, sync=True)
            report("recon triton (gpu)", n, seconds, len(v), len(f))
        seconds, (v, f) = timed(lambda: marching_cubes(cpu_grid, 0.0, backend="torch"), args.repeats, sync=False)
        report("recon torch (cpu)", n, seconds, len(v), len(f))
        array = cpu_grid.numpy()
        if not args.skip_skimage:
            from skimage.measure import marching_cubes as skimage_mc

            for method in ("lorensen", "lewiner"):
                seconds, out = timed(lambda: skimage_mc(array, 0.0, method=method), args.repeats, sync=False)
                report(f"skimage {method} (cpu)", n, seconds, len(out[0]), len(out[1]))
        if importlib.util.find_spec("mcubes") is not None:
            import mcubes

            seconds, out = timed(lambda: mcubes.marching_cubes(array, 0.0), args.repeats, sync=False)
            report("PyMCubes (cpu)", n, seconds, len(out[0]), len(out[1]))
    if gpu and args.chunked_size > 0:
        n = args.chunked_size
        grid = gyroid_field(n, device)
        seconds, (v, f) = timed(lambda: marching_cubes(grid, 0.0), 1, sync=True)
        report("recon triton chunked (gpu)", n, seconds, len(v), len(f))
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    elif args.chunked_size > 0:
        print("chunked run skipped: no GPU")
    if args.noise_fields > 0:
        count_self_intersecting(args.noise_fields)


if __name__ == "__main__":
    main()
