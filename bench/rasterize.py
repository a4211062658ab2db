"""Benchmark the Gaussian rasterizer: forward and forward+backward median times, peak GPU memory, and an
agreement check against gsplat.

Scenes (as gsplat's own tests build them from ../shared/data/gsplat-garden/test_garden.npz, seed 0):
  garden  the points cropped to [-2, 2]^3, scales uniform in [1e-4, 0.02], unit quaternions, opacities
          uniform in [0, 1], colours from the file; all 3 cameras at 648x420.
  tiled   the uncropped points tiled 3x3 (9 copies offset by the cloud's extent in x and y: ~1.25M
          Gaussians), camera 0 with intrinsics scaled to 1920x1080.
``--tiny`` keeps every 50th Gaussian and divides the image size by 8 (runs on a CPU in seconds).

Examples:
  python bench/rasterize.py --device cpu --tiny
  python bench/rasterize.py --device cuda --scene garden --vs-gsplat
  python bench/rasterize.py --device cuda --scene garden --check
  python bench/rasterize.py --device cuda --backends triton,cuda --vs-gsplat   # a column per implementation
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from recon.kernels import rasterize
from recon.kernels.backend import BACKENDS, resolve_backend

GARDEN = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gsplat-garden" / "test_garden.npz"


def garden_scene(path: Path, scene: str, tiny: bool, device: torch.device) -> dict:
    """Tensors of the ``garden`` or ``tiled`` scene (see the module docstring)."""
    data = np.load(path)
    means = torch.from_numpy(data["means3d"]).float()
    colors = torch.from_numpy(data["colors"]).float() / 255.0
    viewmats = torch.from_numpy(data["viewmats"]).float()
    Ks = torch.from_numpy(data["Ks"]).float()
    width, height = int(data["width"]), int(data["height"])
    if scene == "garden":
        keep = ((means > -2) & (means < 2)).all(-1)
        means, colors = means[keep], colors[keep]
    else:
        extent = means.max(0).values - means.min(0).values
        offsets = [torch.tensor([i * extent[0], j * extent[1], 0.0]) for i in (-1, 0, 1) for j in (-1, 0, 1)]
        means = torch.cat([means + o for o in offsets])
        colors = colors.repeat(len(offsets), 1)
        viewmats, Ks = viewmats[:1], Ks[:1].clone()
        Ks[:, 0] *= 1920 / width
        Ks[:, 1] *= 1080 / height
        width, height = 1920, 1080
    if tiny:
        means, colors = means[::50], colors[::50]
        Ks = Ks.clone()
        Ks[:, :2] /= 8
        width, height = width // 8, height // 8
    gen = torch.Generator().manual_seed(0)
    n = means.shape[0]
    scene_tensors = {
        "means": means,
        "quats": F.normalize(torch.randn(n, 4, generator=gen), dim=-1),
        "scales": torch.rand(n, 3, generator=gen) * (0.02 - 1e-4) + 1e-4,
        "opacities": torch.rand(n, generator=gen),
        "colors": colors,
        "viewmats": viewmats,
        "Ks": Ks,
    }
    out = {k: v.to(device).contiguous() for k, v in scene_tensors.items()}
    out.update(width=width, height=height)
    return out


def median_ms(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median wall time of ``fn`` in milliseconds (triton.testing.do_bench on CUDA)."""
    if device.type == "cuda":
        import triton.testing

        return float(triton.testing.do_bench(fn, return_mode="median"))
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def recon_render(scene: dict, backend: str | None, max_alpha: float, grad: bool) -> Callable[[], object]:
    """A closure rendering the scene with recon (and backpropagating a sum when ``grad``)."""
    names = ("means", "quats", "scales", "opacities", "colors")

    def run():
        leaves = [scene[k].detach().requires_grad_(grad) for k in names]
        img, alpha, _ = rasterize(*leaves, scene["viewmats"], scene["Ks"], scene["width"], scene["height"],
                                  max_alpha=max_alpha, backend=backend)
        if grad:
            (img.sum() + alpha.sum()).backward()
        return img, alpha

    return run


def gsplat_render(scene: dict, grad: bool) -> Callable[[], object]:
    """The same render with ``gsplat.rasterization(..., packed=False)``."""
    import gsplat

    names = ("means", "quats", "scales", "opacities", "colors")

    def run():
        leaves = [scene[k].detach().requires_grad_(grad) for k in names]
        img, alpha, _ = gsplat.rasterization(*leaves, scene["viewmats"], scene["Ks"], scene["width"],
                                             scene["height"], packed=False)
        if grad:
            (img.sum() + alpha.sum()).backward()
        return img, alpha

    return run


def measure(name: str, fwd: Callable, fwd_bwd: Callable, device: torch.device, repeats: int) -> tuple[str, ...]:
    """Print forward and forward+backward medians and peak GPU memory for one implementation; return them."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t_fwd = median_ms(fwd, device, repeats)
    t_all = median_ms(fwd_bwd, device, repeats)
    peak = f"{torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB" if device.type == "cuda" else "n/a (cpu)"
    print(f"{name:>8}: forward {t_fwd:9.2f} ms   forward+backward {t_all:9.2f} ms   peak memory {peak}")
    return f"{t_fwd:.2f} ms", f"{t_all:.2f} ms", peak


def print_columns(columns: dict[str, tuple[str, ...]]) -> None:
    """One column per implementation: forward, forward+backward, peak memory."""
    width = max(14, *(len(name) + 2 for name in columns))
    print(f"{'':<18}" + "".join(f"{name:>{width}}" for name in columns))
    for row, label in enumerate(("forward", "forward+backward", "peak memory")):
        print(f"{label:<18}" + "".join(f"{values[row]:>{width}}" for values in columns.values()))


def parse_backends(text: str) -> list[str]:
    """``"triton,cuda"`` -> ``["triton", "cuda"]``, each one of ``BACKENDS``."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in BACKENDS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"expected a comma list of {', '.join(BACKENDS)}, got {text!r}")
    return names


def check_agreement(scene: dict) -> None:
    """Compare recon (max_alpha 0.999) with gsplat on the same tensors: mean/max abs diff, pixels off > 1e-2."""
    with torch.no_grad():
        ours, _ = recon_render(scene, None, 0.999, grad=False)()
        theirs, _ = gsplat_render(scene, grad=False)()
    diff = (ours - theirs).abs()
    off = int((diff.amax(-1) > 1e-2).sum())
    print(f"agreement vs gsplat: mean abs diff {diff.mean().item():.3e}, max diff {diff.max().item():.3e}, "
          f"pixels off by >1e-2: {off} of {diff.shape[0] * diff.shape[1] * diff.shape[2]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--scene", choices=("garden", "tiled"), default="garden")
    parser.add_argument("--data", type=Path, default=GARDEN, help="path of test_garden.npz")
    parser.add_argument("--tiny", action="store_true", help="every 50th Gaussian at 1/8 of the image size")
    parser.add_argument("--backend", choices=BACKENDS, default=None)
    parser.add_argument("--backends", type=parse_backends, default=None,
                        help="comma list (e.g. triton,cuda): time each, printed as recon-<backend> columns")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs on the CPU (CUDA uses do_bench)")
    parser.add_argument("--vs-gsplat", action="store_true", help="also time gsplat when it imports")
    parser.add_argument("--check", action="store_true", help="agreement check against gsplat (max_alpha 0.999)")
    args = parser.parse_args()
    device = torch.device(args.device)
    scene = garden_scene(args.data, args.scene, args.tiny, device)
    n_cams = scene["viewmats"].shape[0]
    chosen = ",".join(args.backends) if args.backends else args.backend or "default"
    print(f"scene {args.scene}{' (tiny)' if args.tiny else ''}: {scene['means'].shape[0]} Gaussians, {n_cams} "
          f"camera(s) at {scene['width']}x{scene['height']}, device {device}, backend {chosen}")
    columns = {}
    for backend in args.backends or [args.backend]:
        name = "recon" if backend is None else f"recon-{backend}"
        if backend is not None and resolve_backend("rasterize", device, backend) != backend:
            print(f"{name}: cannot run here (see the warning); its column times the fallback")
        columns[name] = measure(name, recon_render(scene, backend, 0.99, False),
                                recon_render(scene, backend, 0.99, True), device, args.repeats)
    if args.vs_gsplat or args.check:
        try:
            import gsplat
        except ImportError:
            print("gsplat is not importable here: skipping the comparison")
        else:
            print(f"peer: gsplat {getattr(gsplat, '__version__', '(version unknown)')}")
            if args.vs_gsplat:
                columns["gsplat"] = measure("gsplat", gsplat_render(scene, False), gsplat_render(scene, True), device,
                                            args.repeats)
            if args.check:
                check_agreement(scene)
    if len(columns) > 1:
        print_columns(columns)


if __name__ == "__main__":
    main()
