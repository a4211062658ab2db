"""Motion capture (BVH) read and retargeted to SMPL-layout joints: real human poses for the pose prior and tests.

A BVH file holds a joint hierarchy (``OFFSET`` of each joint from its parent in the rest pose, Euler
``CHANNELS``) and one row of channel values per frame. Retargeting gives every SMPL joint the world rotation
of the BVH joint that sits at it, corrected by the rest-pose rotation that turns the SMPL bone (from the
joint to its next mapped descendant) onto the BVH bone, so rest poses that differ (arms out or down, legs
splayed) give the same posed bone directions. SMPL joints with no BVH counterpart (an extra spine joint,
toes, hands) keep their parent's world rotation (identity local rotation). The three CMU skeleton dialects
of ../shared/data/mocap (MakeHuman's ``lThigh``/``lShin``, ``LeftHip``/``LeftKnee``, ``LeftUpLeg``/``LeftLeg``)
are recognised by name.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import torch

from recon.engine.errors import ReconError
from recon.engine.models.lbs import matrix_to_axis_angle

# SMPL joint -> BVH joint names that sit at it (any dialect; compared case-insensitively).
BVH_NAMES: dict[str, tuple[str, ...]] = {
    "pelvis": ("hip", "hips"),
    "left_hip": ("lthigh", "lefthip", "leftupleg"),
    "right_hip": ("rthigh", "righthip", "rightupleg"),
    "left_knee": ("lshin", "leftknee", "leftleg"),
    "right_knee": ("rshin", "rightknee", "rightleg"),
    "left_ankle": ("lfoot", "leftankle", "leftfoot"),
    "right_ankle": ("rfoot", "rightankle", "rightfoot"),
    "left_foot": ("lefttoebase",),
    "right_foot": ("righttoebase",),
    "spine1": ("abdomen", "chest", "lowerback"),
    "spine2": ("chest", "cs_bvh", "spine"),
    "spine3": ("spine1",),
    "neck": ("neck",),
    "head": ("head",),
    "left_collar": ("lcollar", "leftcollar", "leftshoulder"),
    "right_collar": ("rcollar", "rightcollar", "rightshoulder"),
    "left_shoulder": ("lshldr", "leftshoulder", "leftarm"),
    "right_shoulder": ("rshldr", "rightshoulder", "rightarm"),
    "left_elbow": ("lforearm", "leftelbow", "leftforearm"),
    "right_elbow": ("rforearm", "rightelbow", "rightforearm"),
    "left_wrist": ("lhand", "leftwrist", "lefthand"),
    "right_wrist": ("rhand", "rightwrist", "righthand"),
}
LEG = ("left_hip", "left_knee", "left_ankle")


@dataclass
class Bvh:
    """A BVH file: joint ``names`` [J], ``parents`` [J] (-1 root), rest ``offsets`` [J, 3], per-joint channel
    names, ``motion`` [F, C] (all channels, file order), ``frame_time`` seconds."""

    names: list[str]
    parents: list[int]
    offsets: np.ndarray
    channels: list[list[str]]
    motion: np.ndarray
    frame_time: float


def read_bvh(path: str | os.PathLike) -> Bvh:
    """Parse a BVH file (joints, end sites skipped, and the motion block)."""
    path = Path(path)
    try:
        tokens = path.read_text().split()
    except (OSError, UnicodeDecodeError) as exc:
        raise ReconError(f"{path}: cannot read BVH ({exc})") from None
    names, parents, offsets, channels = [], [], [], []
    stack: list[int] = []  # open blocks: a joint's index, or -1 for an End Site
    declared = -1  # what the next "{" opens
    i = 0
    try:
        while tokens[i] != "MOTION":
            tok = tokens[i]
            if tok in ("ROOT", "JOINT"):
                parents.append(next((k for k in reversed(stack) if k >= 0), -1))
                names.append(tokens[i + 1])
                declared, i = len(names) - 1, i + 2
            elif tok == "End":
                declared, i = -1, i + 2
            elif tok == "{":
                stack.append(declared)
                i += 1
            elif tok == "}":
                stack.pop()
                i += 1
            elif tok == "OFFSET":
                if stack[-1] >= 0:
                    offsets.append([float(v) for v in tokens[i + 1:i + 4]])
                i += 4
            elif tok == "CHANNELS":
                count = int(tokens[i + 1])
                channels.append(tokens[i + 2:i + 2 + count])
                i += 2 + count
            else:
                i += 1
        frames = int(tokens[i + 2])
        frame_time = float(tokens[i + 5])
        width = sum(len(c) for c in channels)
        values = np.asarray(tokens[i + 6:i + 6 + frames * width], dtype=np.float64)
    except (IndexError, ValueError) as exc:
        raise ReconError(f"{path}: not a BVH file ({exc})") from None
    if not names or len(offsets) != len(names) or len(channels) != len(names) or values.size != frames * width:
        raise ReconError(f"{path}: inconsistent BVH (joints, offsets, channels or motion values do not match)")
    return Bvh(names, parents, np.asarray(offsets), channels, values.reshape(frames, width), frame_time)


def _axis_rotation(axis: str, degrees: np.ndarray) -> np.ndarray:
    """Rotations [F, 3, 3] by ``degrees`` [F] about the axis ``X``, ``Y`` or ``Z``."""
    a = np.radians(degrees)
    c, s = np.cos(a), np.sin(a)
    one, zero = np.ones_like(a), np.zeros_like(a)
    rows = {"X": [[one, zero, zero], [zero, c, -s], [zero, s, c]],
            "Y": [[c, zero, s], [zero, one, zero], [-s, zero, c]],
            "Z": [[c, -s, zero], [s, c, zero], [zero, zero, one]]}[axis]
    return np.stack([np.stack(r, -1) for r in rows], -2)


def world_rotations(bvh: Bvh) -> tuple[np.ndarray, np.ndarray]:
    """World rotations [F, J, 3, 3] of every BVH joint (rest pose = identity) and root positions [F, 3]."""
    frames = len(bvh.motion)
    local = np.tile(np.eye(3), (frames, len(bvh.names), 1, 1))
    root = np.zeros((frames, 3))
    column = 0
    for j, chans in enumerate(bvh.channels):
        for name in chans:
            values = bvh.motion[:, column]
            column += 1
            if name.endswith("position"):
                root[:, "XYZ".index(name[0].upper())] = values if j == 0 else 0.0
            else:
                local[:, j] = local[:, j] @ _axis_rotation(name[0].upper(), values)
    world = np.empty_like(local)
    for j, parent in enumerate(bvh.parents):
        world[:, j] = local[:, j] if parent < 0 else world[:, parent] @ local[:, j]
    return world, root


def rest_positions(bvh: Bvh) -> np.ndarray:
    """Rest-pose joint positions [J, 3] (BVH units)."""
    out = np.zeros((len(bvh.names), 3))
    for j, parent in enumerate(bvh.parents):
        out[j] = bvh.offsets[j] + (out[parent] if parent >= 0 else 0.0)
    return out


def _match_joints(bvh: Bvh, joint_names: list[str] | tuple[str, ...]) -> dict[int, int]:
    """SMPL joint index -> BVH joint index, each BVH joint used once (first candidate name that is free)."""
    lower = {n.lower(): k for k, n in enumerate(bvh.names)}
    taken: set[int] = set()
    out = {}
    for j, name in enumerate(joint_names):
        for candidate in BVH_NAMES.get(name, ()):
            k = lower.get(candidate)
            if k is not None and k not in taken:
                out[j] = k
                taken.add(k)
                break
    return out


def _swing(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotation [3, 3] turning direction ``a`` [3] onto direction ``b`` [3] (identity if either is 0)."""
    if min(np.linalg.norm(a), np.linalg.norm(b)) < 1e-9:
        return np.eye(3)
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    axis, cos = np.cross(a, b), float(a @ b)
    if np.linalg.norm(axis) < 1e-9:
        if cos > 0:
            return np.eye(3)
        helper = np.eye(3)[np.argmin(np.abs(a))]
        axis = np.cross(a, helper)
        axis /= np.linalg.norm(axis)
        return 2 * np.outer(axis, axis) - np.eye(3)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + k + k @ k / (1 + cos)


def retarget(bvh: Bvh, rest_joints: np.ndarray, parents: np.ndarray | list[int],
             joint_names: list[str] | tuple[str, ...]) -> dict[str, np.ndarray]:
    """SMPL-layout parameters of every frame of ``bvh`` on a body with rest joints ``rest_joints`` [J, 3] (metres,
    y up, facing +z), kinematic tree ``parents`` [J] and ``joint_names`` [J].

    Returns ``global_orient`` [F, 3], ``body_pose`` [F, 3 (J - 1)] (axis-angle) and ``transl`` [F, 3] (the BVH root
    path scaled by the ratio of the two legs' lengths, so a walk covers the body's own stride).
    """
    parents = np.asarray(parents, dtype=np.int64).copy()
    parents[0] = -1  # the distributed files store the root's parent as 2**32 - 1
    world, root = world_rotations(bvh)
    bvh_rest = rest_positions(bvh)
    match = _match_joints(bvh, joint_names)
    missing = [n for n in ("pelvis", "left_hip", "left_knee", "left_shoulder", "right_shoulder") if
               n in joint_names and joint_names.index(n) not in match]
    if missing:
        raise ReconError(f"BVH skeleton ({', '.join(bvh.names[:6])}, ...): no joint for {', '.join(missing)}")
    frames, n_joints = len(bvh.motion), len(joint_names)
    smpl_world = np.empty((frames, n_joints, 3, 3))
    for j in range(n_joints):
        if j not in match:
            smpl_world[:, j] = smpl_world[:, parents[j]] if parents[j] >= 0 else np.eye(3)
            continue
        end = _next_matched_descendant(j, parents, match)
        correction = np.eye(3)
        if end is not None and parents[j] >= 0:
            correction = _swing(rest_joints[end] - rest_joints[j], bvh_rest[match[end]] - bvh_rest[match[j]])
        smpl_world[:, j] = world[:, match[j]] @ correction
    local = smpl_world.copy()
    for j in range(1, n_joints):
        local[:, j] = np.swapaxes(smpl_world[:, parents[j]], -1, -2) @ smpl_world[:, j]
    axis_angle = matrix_to_axis_angle(torch.as_tensor(local)).numpy()
    leg = [joint_names.index(n) for n in LEG]
    bvh_leg = [match[j] for j in leg]
    scale = (np.linalg.norm(np.diff(rest_joints[leg], axis=0), axis=-1).sum()
             / np.linalg.norm(np.diff(bvh_rest[bvh_leg], axis=0), axis=-1).sum())
    transl = scale * (root - root[:1]) - rest_joints[0]
    return {"global_orient": axis_angle[:, 0], "body_pose": axis_angle[:, 1:].reshape(frames, -1), "transl": transl}


def _next_matched_descendant(j: int, parents: np.ndarray, match: dict[int, int]) -> int | None:
    """The first matched joint below ``j`` on its main chain (lowest index child first), or None at a leaf."""
    children = [c for c in range(len(parents)) if parents[c] == j]
    while children:
        child = children[0]
        if child in match:
            return child
        children = [c for c in range(len(parents)) if parents[c] == child]
    return None
