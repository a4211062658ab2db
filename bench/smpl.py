"""Frames per second of batched SMPL fitting (3D joints and 2D keypoints) on the synthetic body model.

    python bench/smpl.py --device cpu --frames 16 --iterations 10

Prints one line per mode: frames, seconds, frames per second, and the fit's residual.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from recon.engine.models.smpl import SMPL
from recon.engine.smpl.fit import FitConfig, PinholeCamera, fit_joints3d, fit_keypoints2d
from recon.engine.smpl.synthetic import make_test_model


def _targets(model: SMPL, frames: int, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    pose = 0.2 * rnd(frames, 69)
    for joint, axis, sign in ((4, 0, 1.0), (5, 0, 1.0), (18, 1, -1.0), (19, 1, 1.0)):
        pose[:, 3 * (joint - 1) + axis] = sign * rnd(frames).abs() * 0.6
    params = {"betas": 0.5 * rnd(frames, 10), "global_orient": torch.tensor([np.pi, 0.0, 0.0]) + 0.2 * rnd(frames, 3),
              "body_pose": pose, "transl": torch.tensor([0.0, 0.2, 3.0]) + 0.1 * rnd(frames, 3)}
    device = model.v_template.device
    return {k: v.to(device) for k, v in params.items()}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--frames", type=int, default=16, help="frames fitted in one batch")
    parser.add_argument("--iterations", type=int, default=10, help="solver iterations per stage")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    device = torch.device(args.device)
    model = SMPL(make_test_model()).to(device)
    params = _targets(model, args.frames, args.seed)
    config = FitConfig(iterations=args.iterations)
    camera = PinholeCamera(600.0, 600.0, 320.0, 240.0)
    with torch.no_grad():
        joints = model.joints(**params)
        xy = camera.project(joints).cpu().numpy()
    joints = joints.cpu().numpy()
    print(f"device {device}, torch threads {torch.get_num_threads()}, {args.frames} frames, "
          f"{args.iterations} iterations/stage, model {model.num_vertices} vertices")
    runs = [("joints3d", lambda: fit_joints3d(model, joints, config), "mpjpe_mm"),
            ("keypoints2d", lambda: fit_keypoints2d(model, xy, np.ones(xy.shape[:2]), camera, config),
             "reprojection_px")]
    for name, run, metric in runs:
        _sync(device)
        start = time.perf_counter()
        result = run()
        _sync(device)
        seconds = time.perf_counter() - start
        print(f"{name:12s} {args.frames} frames in {seconds:.2f} s = {args.frames / seconds:.2f} frames/s, "
              f"{metric} {result.report[metric]:.4f}")


if __name__ == "__main__":
    main()
