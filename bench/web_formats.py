"""Web splat formats against the INRIA 3DGS PLY: file size and render round trip (export, import, render).

    .venv/bin/python bench/web_formats.py --tiny                 # a random blob of 3000 Gaussians (SH degree 3)
    .venv/bin/python bench/web_formats.py runs/x                 # a fitted Gaussian run, all its cameras

For each format the run is written in the data's own coordinates, read back into the run's normalisation and
rendered at every camera of the run (train and test); PSNR is against the original model's renders of the same
cameras, over all of them at once.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

SUFFIX = {"ply": ".ply", "compressed": ".compressed.ply", "spz": ".spz", "splat": ".splat"}


def tiny_source():
    """A random blob with SH degree 3 and a ring of 8 cameras (what the tests use)."""
    from recon.engine.io.ply import SplatArrays
    from recon.engine.models.gaussians import GaussianModel
    from recon.engine.render.paths import look_at
    from recon.engine.scene.camera import Camera

    rng = np.random.default_rng(0)
    n = 3000
    arrays = {"means": 0.4 * rng.normal(size=(n, 3)), "sh0": 0.8 * rng.normal(size=(n, 1, 3)),
              "shN": 0.15 * rng.normal(size=(n, 15, 3)), "opacities": rng.normal(1.0, 1.5, n),
              "scales": rng.normal(-3.2, 0.4, (n, 3)), "quats": rng.normal(size=(n, 4))}
    splats = SplatArrays(**{k: v.astype(np.float32) for k, v in arrays.items()})
    cameras = [Camera(width=96, height=80, fx=100.0, fy=100.0, cx=48.0, cy=40.0,
                      world_to_camera=look_at(np.array([1.6 * np.cos(t), 1.6 * np.sin(t), 0.5]), np.zeros(3),
                                              np.array([0.0, 0.0, 1.0])))
               for t in np.linspace(0, 2 * np.pi, 8, endpoint=False)]
    return GaussianModel.from_splats(splats, background=(0.0, 0.0, 0.0)), cameras


def run_source(run_dir: Path, device: torch.device):
    from recon.engine.render.sources import load_run_source

    source = load_run_source(run_dir, device)
    if source.kind != "gaussians":
        sys.exit(f"{run_dir}: a Gaussian run is needed, this one is {source.kind}")
    return source.model, source.train + source.test


def main() -> None:
    from recon.engine.io.splat_files import read_splats, write_splats
    from recon.engine.models.gaussians import GaussianModel
    from recon.engine.train.metrics import psnr

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", nargs="?", help="a fitted Gaussian run directory")
    parser.add_argument("--tiny", action="store_true", help="a random blob instead of a run")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if not args.run and not args.tiny:
        parser.error("give a run directory or --tiny")
    device = torch.device(args.device)
    model, cameras = tiny_source() if args.tiny else run_source(Path(args.run), device)

    def render(m) -> torch.Tensor:
        return torch.stack([m.render(c)["rgb"] for c in cameras])

    reference = render(model)
    splats = model.to_splats()
    print(f"{model.num_gaussians} Gaussians, SH degree {model.active_sh_degree}, {len(cameras)} cameras "
          f"of {cameras[0].width}x{cameras[0].height}\n")
    print("| format | file | bytes | bytes / Gaussian | vs INRIA PLY | round-trip PSNR |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as work:
        ply_bytes = None
        for fmt, suffix in SUFFIX.items():
            path = Path(work) / f"model{suffix}"
            write_splats(path, splats, fmt)
            size = path.stat().st_size
            ply_bytes = ply_bytes or size
            back = GaussianModel.from_splats(read_splats(path), model.normalization, device,
                                             background=model.background, antialiased=model.antialiased)
            value = psnr(render(back), reference).item()
            print(f"| {fmt} | `{path.name}` | {size:,} | {size / model.num_gaussians:.1f} | "
                  f"{size / ply_bytes:.3f} | {value:.2f} dB |")


if __name__ == "__main__":
    main()
