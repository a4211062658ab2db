"""An openly licensed body model in the SMPL file layout, built from MakeHuman's CC0 base mesh, skeleton and weights.

MakeHuman (``base.obj``, ``default.mhskel``, ``default_weights.mhw``) gives a 19,158-vertex mesh in decimetres
(y up, facing +z, left at +x), 163 bones whose heads are the means of named vertex groups, and per-bone vertex
weights. Each SMPL joint takes one bone (``SMPL_BONES``); every other bone's weights go to the SMPL joint of its
nearest mapped ancestor, and each joint's regressor row averages its bone's head vertex group, as SMPL's rows
weigh vertices. The mesh's A-pose is turned into SMPL's T-pose with its own skinning (upper arms and forearms
swung level), so poses, and the CMU pose prior, mean the same as on SMPL. What MakeHuman's files do not give:
a learned shape space (its modifier targets are elsewhere), so the betas are generic directions (overall size,
height, girth); and pose correctives (``posedirs`` are zero: plain linear blend skinning). The mesh keeps every
vertex, helpers included (the joint groups are helper vertices), but only the ``body`` group's faces.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from recon.engine.errors import ReconError
from recon.engine.smpl.synthetic import JOINT_NAMES, PARENTS

SMPL_BONES = {
    "pelvis": "spine05", "left_hip": "upperleg01.L", "right_hip": "upperleg01.R", "spine1": "spine03",
    "left_knee": "lowerleg01.L", "right_knee": "lowerleg01.R", "spine2": "spine02", "left_ankle": "foot.L",
    "right_ankle": "foot.R", "spine3": "spine01", "left_foot": "toe1-1.L", "right_foot": "toe1-1.R",
    "neck": "neck01", "left_collar": "clavicle.L", "right_collar": "clavicle.R", "head": "head",
    "left_shoulder": "upperarm01.L", "right_shoulder": "upperarm01.R", "left_elbow": "lowerarm01.L",
    "right_elbow": "lowerarm01.R", "left_wrist": "wrist.L", "right_wrist": "wrist.R", "left_hand": "finger3-1.L",
    "right_hand": "finger3-1.R",
}
DECIMETRE = 0.1
SHAPE_SCALE = 0.08  # the generic betas change size/height by 8% per unit, as the synthetic model's do


def write_makehuman_model(path: str | os.PathLike, folder: str | os.PathLike, num_betas: int = 3) -> dict[str, np.ndarray]:
    """Write ``make_makehuman_model(folder)`` as an SMPL-layout ``.npz`` atomically (float32, compressed: the zero
    pose correctives take no room); returns its arrays."""
    from recon.engine.io.atomic import atomic_path

    data = make_makehuman_model(folder, num_betas)
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **{k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in data.items()})
    return data


def _read_obj(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """All vertices [V, 3] and the ``body`` group's faces, triangulated [F, 3]."""
    vertices, faces, group = [], [], None
    try:
        for line in path.read_text().splitlines():
            if line.startswith("v "):
                vertices.append([float(v) for v in line.split()[1:4]])
            elif line.startswith("g "):
                group = line.split()[1] if len(line.split()) > 1 else None
            elif line.startswith("f ") and group == "body":
                corners = [int(t.split("/")[0]) - 1 for t in line.split()[1:]]
                faces += [(corners[0], corners[k], corners[k + 1]) for k in range(1, len(corners) - 1)]
    except (OSError, ValueError) as exc:
        raise ReconError(f"{path}: cannot read the MakeHuman mesh ({exc})") from None
    if not faces:
        raise ReconError(f"{path}: no faces in a 'body' group (not MakeHuman's base.obj?)")
    return np.asarray(vertices), np.asarray(faces, dtype=np.int64)


def _load_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ReconError(f"{path}: cannot read ({exc})") from None


def make_makehuman_model(folder: str | os.PathLike, num_betas: int = 3) -> dict[str, np.ndarray]:
    """SMPL-layout arrays (as ``make_test_model`` returns) built from a folder holding MakeHuman's ``base.obj``,
    ``default.mhskel`` and ``default_weights.mhw``; metres, T-pose."""
    folder = Path(folder)
    vertices, faces = _read_obj(folder / "base.obj")
    skeleton = _load_json(folder / "default.mhskel")
    weights_doc = _load_json(folder / "default_weights.mhw")
    try:
        bones, groups, bone_weights = skeleton["bones"], skeleton["joints"], weights_doc["weights"]
        missing = [b for b in SMPL_BONES.values() if b not in bones]
        if missing:
            raise ReconError(f"{folder / 'default.mhskel'}: no bone {', '.join(missing)}")
        owner = {}
        for bone in bones:  # nearest mapped ancestor (or the bone itself) -> SMPL joint
            walk = bone
            while walk is not None and walk not in SMPL_BONES.values():
                walk = bones[walk]["parent"]
            owner[bone] = JOINT_NAMES.index(next(j for j, b in SMPL_BONES.items() if b == (walk or "spine05")))
        skin = np.zeros((len(vertices), len(JOINT_NAMES)))
        for bone, pairs in bone_weights.items():
            rows = np.asarray(pairs, dtype=np.float64).reshape(-1, 2)
            np.add.at(skin, (rows[:, 0].astype(np.int64), owner.get(bone, 0)), rows[:, 1])
        regressor = np.zeros((len(JOINT_NAMES), len(vertices)))
        for j, name in enumerate(JOINT_NAMES):
            members = np.asarray(groups[bones[SMPL_BONES[name]]["head"]], dtype=np.int64)
            regressor[j, members] = 1.0 / len(members)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ReconError(f"{folder}: MakeHuman skeleton or weights not as expected ({exc})") from None
    total = skin.sum(1, keepdims=True)
    skin = np.where(total > 0, skin / np.where(total > 0, total, 1.0), np.eye(len(JOINT_NAMES))[0])  # unweighted: pelvis
    data = {"v_template": vertices * DECIMETRE, "J_regressor": regressor, "weights": skin, "f": faces,
            "kintree_table": np.stack([np.array(PARENTS, dtype=np.int64) % 2**32, np.arange(len(PARENTS))]),
            "posedirs": np.zeros((len(vertices), 3, 9 * (len(PARENTS) - 1))), "joint_names": np.array(JOINT_NAMES)}
    data["shapedirs"] = np.zeros((len(vertices), 3, num_betas))
    data["v_template"] = _to_t_pose(data)
    data["shapedirs"] = _generic_shape_dirs(data, num_betas)
    return data


def _to_t_pose(data: dict[str, np.ndarray]) -> np.ndarray:
    """Rest vertices with the arms swung level (upper arm, then forearm, onto +-x), by the model's own skinning."""
    from recon.engine.models.lbs import matrix_to_axis_angle
    from recon.engine.models.smpl import SMPL
    from recon.engine.smpl.mocap import _swing

    model = SMPL(data, dtype=torch.float64)
    pose = torch.zeros(1, 3 * (len(PARENTS) - 1), dtype=torch.float64)
    zeros = torch.zeros(1, model.num_betas, dtype=torch.float64)
    for side, sign in (("left", 1.0), ("right", -1.0)):
        for joint, child in ((f"{side}_shoulder", f"{side}_elbow"), (f"{side}_elbow", f"{side}_wrist")):
            j, c = JOINT_NAMES.index(joint), JOINT_NAMES.index(child)
            with torch.no_grad():
                _, joints = model(zeros, torch.zeros(1, 3, dtype=torch.float64), pose)
                world = _world_rotations(model, pose)
            bone = (joints[0, c] - joints[0, j]).numpy()
            swing = _swing(bone, np.array([sign, 0.0, 0.0]))  # world-frame swing onto the level direction
            parent_world = world[0, j].numpy()  # this joint's world rotation (its parent chain and itself)
            local = parent_world.T @ swing @ parent_world @ _local(pose, j)
            pose[0, 3 * (j - 1):3 * j] = matrix_to_axis_angle(torch.as_tensor(local))
    with torch.no_grad():
        vertices, _ = model(zeros, torch.zeros(1, 3, dtype=torch.float64), pose)
    return vertices[0].numpy()


def _local(pose: torch.Tensor, j: int) -> np.ndarray:
    from recon.engine.models.lbs import axis_angle_to_matrix

    return axis_angle_to_matrix(pose[0, 3 * (j - 1):3 * j]).numpy()


def _world_rotations(model, pose: torch.Tensor) -> torch.Tensor:
    """World rotations [1, J, 3, 3] of every joint for ``pose`` (root unrotated)."""
    from recon.engine.models.lbs import axis_angle_to_matrix

    local = axis_angle_to_matrix(torch.cat([torch.zeros(1, 3, dtype=pose.dtype), pose], -1).reshape(1, -1, 3))
    world = [local[:, 0]]
    for j in range(1, local.shape[1]):
        world.append(world[int(PARENTS[j])] @ local[:, j])
    return torch.stack(world, 1)


def _generic_shape_dirs(data: dict[str, np.ndarray], num_betas: int) -> np.ndarray:
    """Shape directions [V, 3, L]: overall size, height, girth (about each vertex's skinned joint), then zero."""
    v = data["v_template"]
    joints = data["J_regressor"] @ v
    centre = v - joints[0]
    bone_centre = data["weights"] @ joints
    dirs = [SHAPE_SCALE * centre, SHAPE_SCALE * centre * np.array([0.0, 1.0, 0.0]), 0.3 * (v - bone_centre)]
    dirs += [np.zeros_like(v)] * max(0, num_betas - len(dirs))
    return np.stack(dirs[:num_betas], -1)
