"""Accuracy of SMPL fits over many seeds: the scenes of tests/test_smpl_fit.py and tests/test_smpl_mocap.py,
fitted in a loop, one line per seed and a summary (the figures quoted in those tests' docstrings and docs/smpl.md).

    .venv/bin/python bench/smpl_accuracy.py scan --seeds 3000-3099 441796484
    .venv/bin/python bench/smpl_accuracy.py keypoints2d --seeds 7000-7059
    .venv/bin/python bench/smpl_accuracy.py photos --seeds 5000-5039          # three people per photo (CMU motion)
    .venv/bin/python bench/smpl_accuracy.py makehuman --seeds 8000-8026       # ../shared/data/makehuman
    .venv/bin/python bench/smpl_accuracy.py sequence --seeds 101-103          # 60-frame clips through the CLI

Modes other than scan and keypoints2d need ../shared/data/mocap (or $RECON_SHARED_DATA). CPU, one thread.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import SHARED_DATA  # noqa: E402
from mocap_scenes import keypoint_scene, random_camera, write_camera, write_openpose_sequence  # noqa: E402
from test_smpl_fit import _rotation_angle_deg, fit_keypoint_case, fit_scan_case  # noqa: E402
from test_smpl_mocap import _pelvis_aligned_mpjpe_mm, _truth_joints  # noqa: E402

from recon.apps.cli import main as cli  # noqa: E402
from recon.engine.models.smpl import SMPL  # noqa: E402
from recon.engine.smpl.fit import FitConfig, _body_priors, fit_keypoints2d  # noqa: E402
from recon.engine.smpl.synthetic import write_test_model  # noqa: E402

Row = dict[str, float]


def scan(model: SMPL, seed: int) -> list[Row]:
    """test_fit_scan_recovers_the_body's scan: per-vertex error (median, mean) and the chamfer RMS before/after."""
    error, start, result = fit_scan_case(model, seed)
    rms = max(result.report["model_to_scan_rms_mm"], result.report["scan_to_model_rms_mm"])
    return [{"median_mm": float(np.median(error)), "mean_mm": float(error.mean()), "chamfer_rms_mm": rms,
             "start_rms_mm": start}]


def keypoints2d(model: SMPL, seed: int) -> list[Row]:
    """test_fit_keypoints2d_recovers_under_2px's two frames: reprojection (px), orientation error (degrees) and the
    largest joint angle (rad)."""
    truth, camera, xy, result = fit_keypoint_case(model, seed)
    with torch.no_grad():
        reproj = np.linalg.norm(camera.project(torch.as_tensor(result.joints)).numpy() - xy, axis=-1)
    orient = result.params["global_orient"]
    return [{"reprojection_px": float(reproj[f].mean()),
             "orientation_deg": _rotation_angle_deg(orient[f], truth["global_orient"][f].numpy()),
             "max_angle_rad": float(np.abs(result.params["body_pose"][f]).max())} for f in range(2)]


def _scene_rows(model: SMPL, scenes: list, joints: np.ndarray, betas: np.ndarray) -> list[Row]:
    """Depth error (%), pelvis-aligned MPJPE (mm), largest |beta|, limb overlap (mm) and mean reprojection error
    over the detected keypoints (px) per fitted person."""
    _, capsules = _body_priors(model)
    rows = []
    for k, scene in enumerate(scenes):
        truth, fit = _truth_joints(model, scene), joints[k:k + 1]
        overlap = float(capsules.overlaps(torch.as_tensor(fit, dtype=torch.float32)).max()) * 1000 if capsules else 0.0
        seen = scene.confidence[0] > 0
        projected = scene.camera.project(torch.as_tensor(fit[0], dtype=torch.float64)).numpy()
        rows.append({"depth_error_pct": float(100 * abs(fit[0, 0, 2] - truth[0, 0, 2]) / truth[0, 0, 2]),
                     "mpjpe_mm": float(_pelvis_aligned_mpjpe_mm(fit, truth)[0]),
                     "max_beta": float(np.abs(betas[k]).max()), "overlap_mm": overlap,
                     "reprojection_px": float(np.linalg.norm(projected[seen] - scene.xy[0][seen], axis=-1).mean())})
    return rows


def photos(model: SMPL, seed: int) -> list[Row]:
    """test_fit_real_motion_keypoints_of_two_people's photo, with three people fitted together."""
    rng = np.random.default_rng(seed)
    camera = random_camera(rng)
    scenes = [keypoint_scene(model, rng, camera=camera, betas_std=0.3) for _ in range(3)]
    result = fit_keypoints2d(model, np.concatenate([s.xy for s in scenes]),
                             np.concatenate([s.confidence for s in scenes]), camera, FitConfig())
    return _scene_rows(model, scenes, result.joints, result.params["betas"])


def makehuman(model: SMPL, seed: int) -> list[Row]:
    """test_makehuman_body_model_fits_real_motion's person, fitted by the library (the test goes through the CLI)."""
    scene = keypoint_scene(model, np.random.default_rng(seed), betas_std=0.3)
    result = fit_keypoints2d(model, scene.xy, scene.confidence, scene.camera, FitConfig())
    return _scene_rows(model, [scene], result.joints, result.params["betas"])


def sequence(model: SMPL, seed: int, model_path: Path) -> list[Row]:
    """test_cli_fits_a_60_frame_openpose_sequence_with_one_shape's clip through ``recon smpl fit``: depth error and
    MPJPE, mean and worst frame."""
    scene = keypoint_scene(model, np.random.default_rng(seed), frames=60, stride=2, betas_std=0.3)
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_openpose_sequence(scene, model.joint_names, Path(tmp) / "frames")
        cam = write_camera(scene.camera, Path(tmp) / "cam.json")
        out = Path(tmp) / "out"
        if cli(["smpl", "fit", "--model", str(model_path), "--keypoints2d", str(folder), "--camera", str(cam),
                "-o", str(out)]) != 0:
            raise SystemExit(f"seed {seed}: recon smpl fit failed")
        params = np.load(out / "params.npz")
        with torch.no_grad():
            fit = model.joints(**{k: torch.as_tensor(v, dtype=torch.float32) for k, v in params.items()}).numpy()
    truth = _truth_joints(model, scene)
    depth = 100 * np.abs(fit[:, 0, 2] - truth[:, 0, 2]) / truth[:, 0, 2]
    mpjpe = _pelvis_aligned_mpjpe_mm(fit, truth)
    return [{"depth_mean_pct": float(depth.mean()), "depth_worst_pct": float(depth.max()),
             "mpjpe_mean_mm": float(mpjpe.mean()), "mpjpe_worst_mm": float(mpjpe.max())}]


def _seeds(specs: list[str]) -> list[int]:
    """Seeds from "3000-3099" style ranges and single numbers."""
    seeds = []
    for spec in specs:
        low, _, high = spec.partition("-")
        seeds.extend(range(int(low), int(high or low) + 1))
    return seeds


def _summary(rows: list[Row]) -> str:
    lines = []
    for key in rows[0]:
        v = np.array([r[key] for r in rows])
        lines.append(f"  {key:>16}: median {np.median(v):8.2f}  95th {np.percentile(v, 95):8.2f}  "
                     f"max {v.max():8.2f}  min {v.min():8.2f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("scan", "keypoints2d", "photos", "makehuman", "sequence"))
    parser.add_argument("--seeds", nargs="+", required=True, help="seeds or ranges, e.g. 3000-3099 441796484")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model_path = Path(tempfile.mkdtemp()) / "body.npz"
    if args.mode == "makehuman":
        source = SHARED_DATA / "makehuman"
        if cli(["smpl", "make-makehuman-model", str(model_path), "--source", str(source)]) != 0:
            raise SystemExit(f"could not build the MakeHuman body from {source}")
    else:
        write_test_model(model_path)
    model = SMPL.from_file(model_path)
    fit: Callable[[SMPL, int], list[Row]] = {
        "scan": scan, "keypoints2d": keypoints2d, "photos": photos, "makehuman": makehuman,
        "sequence": partial(sequence, model_path=model_path)}[args.mode]
    rows = []
    for seed in _seeds(args.seeds):
        began = time.perf_counter()
        found = fit(model, seed)
        rows.extend(found)
        cells = "; ".join(", ".join(f"{k} {v:.2f}" for k, v in row.items()) for row in found)
        print(f"seed {seed} ({time.perf_counter() - began:.1f} s): {cells}", flush=True)
    print(f"{args.mode}: {len(rows)} fits over {len(_seeds(args.seeds))} seeds")
    print(_summary(rows))


if __name__ == "__main__":
    main()
