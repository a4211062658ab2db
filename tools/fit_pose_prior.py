"""Regenerate recon's shipped pose prior, engine/smpl/data/pose_prior_cmu.npz, from CMU motion capture.

    .venv/bin/python tools/fit_pose_prior.py ../shared/data/mocap [-o engine/smpl/data/pose_prior_cmu.npz]

Every BVH clip in the folder is retargeted to the SMPL 24-joint tree (recon.engine.smpl.mocap, rest joints of
recon's synthetic SMPL-layout model), clips repeating an earlier one (95% of the channel values within 0.01:
the shared 03_03.bvh is 02_02.bvh rounded, with one channel zeroed) are skipped, every pose is also mirrored
left-right, and a Gaussian mixture with full covariances is fitted by EM (fixed seed: the output is
reproducible). ``REGULARISATION`` is added to every covariance: joints the clips never move (toes, hands, a spine
joint some skeletons lack) get a standard deviation of about 0.1 rad, not a point mass.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from recon.engine.smpl.mocap import read_bvh, retarget
from recon.engine.smpl.pose_prior import DEFAULT_PRIOR, PoseMixture
from recon.engine.smpl.symmetry import mirror_pose
from recon.engine.smpl.synthetic import JOINT_NAMES, PARENTS, rest_joints

COMPONENTS = 8
REGULARISATION = 0.01  # rad^2 added to every covariance diagonal
ITERATIONS = 200


def collect_poses(folder: Path) -> tuple[np.ndarray, list[str]]:
    """Body poses [N, 69] of every distinct clip in ``folder`` with their mirror images, and the clips used."""
    poses, used, motions = [], [], []
    for path in sorted(folder.glob("*.bvh")):
        bvh = read_bvh(path)
        if any(m.shape == bvh.motion.shape and np.mean(np.abs(m - bvh.motion) <= 0.01) > 0.95 for m in motions):
            print(f"skipping {path.name}: repeats an earlier clip", file=sys.stderr)
            continue
        motions.append(bvh.motion)
        params = retarget(bvh, rest_joints(), PARENTS, JOINT_NAMES)
        poses.append(params["body_pose"])
        used.append(f"{path.name} ({len(bvh.motion)} frames)")
    body = np.concatenate(poses)
    return np.concatenate([body, mirror_pose(torch.as_tensor(body), JOINT_NAMES).numpy()]), used


def fit_mixture(data: np.ndarray, components: int, seed: int = 0) -> PoseMixture:
    """EM for a full-covariance Gaussian mixture of ``data`` [N, D] (k-means++ style seeding)."""
    rng = np.random.default_rng(seed)
    n, dim = data.shape
    centres = [data[rng.integers(n)]]
    for _ in range(components - 1):
        d2 = np.min([((data - c) ** 2).sum(-1) for c in centres], 0)
        centres.append(data[rng.choice(n, p=d2 / d2.sum())])
    means = np.asarray(centres)
    covs = np.tile(np.cov(data.T) + REGULARISATION * np.eye(dim), (components, 1, 1))
    weights = np.full(components, 1.0 / components)
    for _ in range(ITERATIONS):
        chol = np.linalg.cholesky(np.linalg.inv(covs))  # precision factors, P = L L^T
        z = np.einsum("nkd,kde->nke", data[:, None] - means, chol)
        log_p = (np.log(weights) + np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(-1)
                 - 0.5 * (z**2).sum(-1))  # [N, K], up to a constant
        log_p -= log_p.max(1, keepdims=True)
        resp = np.exp(log_p)
        resp /= resp.sum(1, keepdims=True)
        mass = resp.sum(0) + 1e-9
        weights = mass / n
        means = (resp.T @ data) / mass[:, None]
        for k in range(components):
            diff = data - means[k]
            covs[k] = (resp[:, k, None] * diff).T @ diff / mass[k] + REGULARISATION * np.eye(dim)
    chol = np.linalg.cholesky(np.linalg.inv(covs))
    return PoseMixture(weights, means, chol, tuple(JOINT_NAMES))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mocap", type=Path, help="folder of CMU BVH clips (../shared/data/mocap)")
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_PRIOR)
    args = parser.parse_args()
    data, used = collect_poses(args.mocap)
    mixture = fit_mixture(data, COMPONENTS)
    provenance = (f"Gaussian mixture ({COMPONENTS} components, full covariance + {REGULARISATION} rad^2) over SMPL "
                  f"body poses from CMU motion capture (mocap.cs.cmu.edu, via MakeHuman's BVH files): "
                  f"{', '.join(used)}, each mirrored; made by tools/fit_pose_prior.py")
    mixture.save(args.output, provenance)
    print(f"wrote {args.output}: {len(data)} poses; {provenance}")


if __name__ == "__main__":
    main()
