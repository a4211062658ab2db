"""Left-right symmetry of SMPL body poses (y up, facing +z, left at +x).

Under the reflection x -> -x an axis-angle (x, y, z) becomes (x, -y, -z), and a left joint's rotation becomes its
right twin's: mirroring every joint gives the mirror image of a pose; mirroring some swaps those limbs.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch

MIRROR_SIGNS = (1.0, -1.0, -1.0)
LEG = ("left_hip", "left_knee", "left_ankle", "left_foot")


def twin(name: str) -> str:
    """The left/right twin of a joint name (itself on the midline)."""
    if name.startswith("left_"):
        return "right_" + name[5:]
    if name.startswith("right_"):
        return "left_" + name[6:]
    return name


def mirror_pose(body_pose: torch.Tensor, joint_names: Sequence[str],
                joints: Iterable[str] | None = None) -> torch.Tensor:
    """``body_pose`` [N, 3 (J - 1)] with ``joints`` (default all) and their twins reflected across the x = 0 plane
    and exchanged with their twins; ``joint_names`` [J] starts with the root, which body poses leave out."""
    names = list(joint_names[1:])
    chosen = set(names) if joints is None else {j for n in joints for j in (n, twin(n))}
    pose = body_pose.reshape(body_pose.shape[0], -1, 3)
    out = pose.clone()
    for k, name in enumerate(names):
        if name in chosen:
            out[:, names.index(twin(name))] = pose[:, k] * pose.new_tensor(MIRROR_SIGNS)
    return out.reshape(body_pose.shape)
