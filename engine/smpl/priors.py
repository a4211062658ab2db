"""Priors on SMPL parameters, written as residuals: each prior's cost is the sum of their squares.

The Gaussian-mixture pose prior learned from CMU motion capture (SMPLify's) is ``pose_prior.py``; the
fits use it for 2D keypoints. Here:

* ``pose_l2``: the body pose itself (axis-angle), pulling unobserved rotations (twists, hands, feet)
  towards the rest pose;
* ``angle_limit``: a hinge on every axis-angle component beyond ``limit`` radians;
* ``bend``: knees and elbows bend one way only: a hinge on the wrong-way component (knee about +x,
  left elbow about -y, right elbow about +y, in the SMPL frame: y up, facing +z, left at +x);
* ``shape_l2``: the betas (they are in units of the shape space's standard deviations);
* ``temporal``: accelerations (second differences) along a sequence, velocities for two frames.
"""
from __future__ import annotations

import torch

from recon.engine.smpl.synthetic import JOINT_NAMES

# (joint name, axis, sign): sign * pose[axis] must stay >= 0.
BEND_DIRECTIONS = (("left_knee", 0, 1.0), ("right_knee", 0, 1.0), ("left_elbow", 1, -1.0), ("right_elbow", 1, 1.0))


def pose_l2(body_pose: torch.Tensor) -> torch.Tensor:
    """Residuals [F, P] of the L2 pose prior on ``body_pose`` [F, P]."""
    return body_pose


def angle_limit(body_pose: torch.Tensor, limit: float = 2.0) -> torch.Tensor:
    """Residuals [F, P]: how far each axis-angle component of ``body_pose`` [F, P] exceeds +-``limit``."""
    return torch.relu(body_pose.abs() - limit)


def bend(body_pose: torch.Tensor, joint_names: list[str] | tuple[str, ...] = JOINT_NAMES) -> torch.Tensor:
    """Residuals [F, 4]: wrong-way bending of knees and elbows; ``body_pose`` [F, 3 * (J - 1)]."""
    index = {name: j for j, name in enumerate(joint_names)}
    columns = [3 * (index[name] - 1) + axis for name, axis, _ in BEND_DIRECTIONS if name in index]
    signs = body_pose.new_tensor([sign for name, _, sign in BEND_DIRECTIONS if name in index])
    return torch.relu(-signs * body_pose[:, columns])


def shape_l2(betas: torch.Tensor) -> torch.Tensor:
    """Residuals [F, L] of the L2 shape prior on ``betas`` [F, L]."""
    return betas


def temporal(values: torch.Tensor) -> torch.Tensor:
    """Residuals of ``values`` [F, D] along the frames: second differences [F - 2, D] (steady motion is free),
    or the difference [1, D] of two frames."""
    if values.shape[0] < 3:
        return values[1:] - values[:-1]
    return values[2:] - 2 * values[1:-1] + values[:-2]
