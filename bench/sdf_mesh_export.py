"""SDF fits of the shared meshes, exported as meshes: fragments, accuracy and topology, with and without the
far-field term, before and after the component filter.

    OMP_NUM_THREADS=1 python bench/sdf_mesh_export.py --steps 500 --resolution 256

For each mesh in ../shared/data/meshes and each far-field weight (0 = the old training, and the default)
it fits an SDF on the CPU, extracts the zero level set at ``--resolution`` and prints one markdown row
per export (all components, then the default filter): components, Chamfer-L1 and Hausdorff distance (both
as % of the reference's bounding-box diagonal; Hausdorff is the larger of the two directed maxima over
``--samples`` surface samples), F-score@1%, watertightness and self-intersecting face pairs.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from recon.engine.eval.mesh_metrics import mesh_metrics, nearest_neighbours, sample_surface
from recon.engine.io.mesh import read_mesh
from recon.engine.mesh_export import MIN_COMPONENT_FRACTION, run_mesh
from recon.engine.mesh_topology import face_components, keep_components, mesh_report
from recon.engine.models.registry import load_run
from recon.engine.scene.scene import Normalization
from recon.engine.train.field import FieldFitConfig, fit

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "meshes"


def hausdorff(v: np.ndarray, f: np.ndarray, ref_v: np.ndarray, ref_f: np.ndarray, samples: int) -> float:
    """Symmetric Hausdorff distance between two surfaces, over ``samples`` area-uniform samples of each."""
    gen = torch.Generator().manual_seed(0)
    a, _ = sample_surface(torch.as_tensor(v, dtype=torch.float64), torch.as_tensor(f), samples, gen)
    b, _ = sample_surface(torch.as_tensor(ref_v, dtype=torch.float64), torch.as_tensor(ref_f), samples, gen)
    return max(float(nearest_neighbours(a, b)[0].max()), float(nearest_neighbours(b, a)[0].max()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--samples", type=int, default=50_000)
    p.add_argument("--meshes", nargs="*", default=["bunny", "spot"])
    p.add_argument("--far-weights", type=float, nargs="*", default=[0.0, FieldFitConfig.far_weight])
    args = p.parse_args()
    print(f"torch threads {torch.get_num_threads()}, steps {args.steps}, resolution {args.resolution}")
    print("| mesh | far weight | fit s | export | components | chamfer % | Hausdorff % | F-score | watertight "
          "| self-intersecting pairs |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in args.meshes:
        source = DATA / f"{name}.obj"
        ref_v, ref_f = read_mesh(source)
        diagonal = float(np.linalg.norm(ref_v.max(0) - ref_v.min(0)))
        for weight in args.far_weights:
            with tempfile.TemporaryDirectory() as tmp:
                started = time.perf_counter()
                fit(source, FieldFitConfig(kind="sdf", steps=args.steps, far_weight=weight, eval_resolution=0,
                                           checkpoint_every=args.steps), Path(tmp) / "run", resume=False,
                    device=torch.device("cpu"))
                seconds = time.perf_counter() - started
                model, state = load_run(Path(tmp) / "run")
            v, f = run_mesh(model, "sdf", args.resolution, "cpu")
            v = Normalization.from_dict(state["normalization"]).to_original(v.astype(np.float64))
            before = face_components(f, len(v))[1]
            for label, (mv, mf) in (("all", (v, f)), ("filtered", keep_components(v, f, MIN_COMPONENT_FRACTION))):
                report = mesh_report(mv, mf)
                metrics = mesh_metrics(mv, mf, ref_v, ref_f, samples=args.samples)
                h = hausdorff(mv, mf, ref_v, ref_f, args.samples)
                water = "yes" if report.watertight else f"no ({report.boundary_edges} boundary edges)"
                comps = f"{report.components}" if label == "all" else f"{before} -> {report.components}"
                print(f"| {name} | {weight:g} | {seconds:.0f} | {label} | {comps} | "
                      f"{100 * metrics['chamfer_l1'] / diagonal:.3f} | {100 * h / diagonal:.2f} | "
                      f"{metrics['fscore']:.4f} | {water} | {report.intersecting_pairs} |", flush=True)


if __name__ == "__main__":
    main()
