"""A small synthetic body model in the SMPL file layout, for tests, benchmarks and demos.

The real SMPL files cannot be redistributed, so recon generates a stand-in with the same 24-joint
kinematic tree, joint names and array layout: a tube of vertex rings along every bone plus a small
octahedron around every joint (the joint regressor averages it), smooth skinning weights that blend
each tube into its neighbours near the joints, smooth random shape blend shapes (overall size,
height, girth and low-frequency bumps) and small random pose blend shapes localised at each joint.
Coordinates are metres, y up, the body facing +z, its left side at +x (as in SMPL).
"""
from __future__ import annotations

import os

import numpy as np

from recon.engine.io.atomic import atomic_path

JOINT_NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle", "right_ankle",
    "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hand", "right_hand",
)
PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)

# Rest joint positions of the left side and the spine (right side mirrored in x), metres.
_REST_JOINTS = {
    "pelvis": (0.0, 0.0, 0.0), "left_hip": (0.07, -0.09, 0.0), "spine1": (0.0, 0.11, -0.01),
    "left_knee": (0.10, -0.47, 0.0), "spine2": (0.0, 0.25, 0.0), "left_ankle": (0.09, -0.87, -0.03),
    "spine3": (0.0, 0.31, 0.01), "left_foot": (0.11, -0.93, 0.10), "neck": (0.0, 0.52, -0.02),
    "left_collar": (0.08, 0.43, -0.01), "head": (0.0, 0.62, 0.03), "left_shoulder": (0.18, 0.46, -0.02),
    "left_elbow": (0.43, 0.44, -0.04), "left_wrist": (0.68, 0.45, -0.03), "left_hand": (0.77, 0.44, -0.04),
}
_RING_T = (0.2, 0.5, 0.8)  # ring positions along each bone, as fractions of its length
_RING_SIDES = 6
_BLEND_T = 0.3  # skinning blends into the neighbouring bone over this fraction at each end


def rest_joints() -> np.ndarray:
    """Rest joint positions [24, 3] in metres."""
    out = []
    for name in JOINT_NAMES:
        key = name.replace("right_", "left_")
        x, y, z = _REST_JOINTS[key]
        out.append((-x if name.startswith("right_") else x, y, z))
    return np.asarray(out, dtype=np.float64)


def _bone_radius(child: int) -> float:
    name = JOINT_NAMES[child]
    if "spine" in name or name in ("neck", "left_hip", "right_hip", "left_collar", "right_collar"):
        return 0.09
    if "knee" in name:
        return 0.07
    if "head" in name:
        return 0.08
    return 0.045


def _tube(start: np.ndarray, end: np.ndarray, radius: float) -> np.ndarray:
    """Ring vertices [len(_RING_T) * _RING_SIDES, 3] and the two axis end points around segment start->end."""
    axis = end - start
    direction = axis / np.linalg.norm(axis)
    helper = np.array([0.0, 0.0, 1.0]) if abs(direction[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    u = np.cross(direction, helper)
    u /= np.linalg.norm(u)
    w = np.cross(direction, u)
    angles = 2 * np.pi * np.arange(_RING_SIDES) / _RING_SIDES
    rings = [start + t * axis + radius * (np.cos(a) * u + np.sin(a) * w) for t in _RING_T for a in angles]
    caps = [start + 0.05 * axis, start + 0.95 * axis]
    return np.asarray(rings + caps)


def _tube_faces(offset: int) -> list[tuple[int, int, int]]:
    n_rings, sides = len(_RING_T), _RING_SIDES
    faces = []
    for r in range(n_rings - 1):
        for s in range(sides):
            a, b = offset + r * sides + s, offset + r * sides + (s + 1) % sides
            c, d = a + sides, b + sides
            faces += [(a, b, d), (a, d, c)]
    first_cap, last_cap = offset + n_rings * sides, offset + n_rings * sides + 1
    last_ring = offset + (n_rings - 1) * sides
    for s in range(sides):
        faces.append((first_cap, offset + (s + 1) % sides, offset + s))
        faces.append((last_cap, last_ring + s, last_ring + (s + 1) % sides))
    return faces


_OCTAHEDRON = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=np.float64)
_OCTAHEDRON_FACES = [(0, 2, 4), (2, 1, 4), (1, 3, 4), (3, 0, 4), (2, 0, 5), (1, 2, 5), (3, 1, 5), (0, 3, 5)]


def make_test_model(num_betas: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    """Build the synthetic body model as a dict of arrays in the SMPL npz layout.

    Keys: ``v_template`` [V, 3], ``shapedirs`` [V, 3, num_betas], ``posedirs`` [V, 3, 207],
    ``J_regressor`` [24, V], ``weights`` [V, 24], ``kintree_table`` [2, 24] (root parent 2**32 - 1, as
    in the distributed files), ``f`` [F, 3] and ``joint_names`` [24].
    """
    rng = np.random.default_rng(seed)
    joints = rest_joints()
    n_joints = len(PARENTS)
    vertices: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    faces: list[tuple[int, int, int]] = []
    regressor_rows: list[list[int]] = [[] for _ in range(n_joints)]
    # Joint octahedra: skinned half to the joint, half to its parent (the root fully to itself).
    for j in range(n_joints):
        offset = sum(len(v) for v in vertices)
        vertices.append(joints[j] + 0.03 * _OCTAHEDRON)
        w = np.zeros((6, n_joints))
        w[:, j] += 0.5 if PARENTS[j] >= 0 else 1.0
        if PARENTS[j] >= 0:
            w[:, PARENTS[j]] += 0.5
        weights.append(w)
        faces += [(offset + a, offset + b, offset + c) for a, b, c in _OCTAHEDRON_FACES]
        regressor_rows[j] = list(range(offset, offset + 6))
    # Bone tubes: bone parent->child moves with the parent joint, blending into the neighbours at its ends.
    for child in range(1, n_joints):
        bone = PARENTS[child]
        offset = sum(len(v) for v in vertices)
        tube = _tube(joints[bone], joints[child], _bone_radius(child))
        t = np.concatenate([np.repeat(_RING_T, _RING_SIDES), [0.05, 0.95]])
        w = np.zeros((len(tube), n_joints))
        to_parent = np.clip(0.5 * (1.0 - t / _BLEND_T), 0.0, None) if PARENTS[bone] >= 0 else np.zeros_like(t)
        to_child = np.clip(0.5 * (t - 1.0 + _BLEND_T) / _BLEND_T, 0.0, None)
        if PARENTS[bone] >= 0:
            w[:, PARENTS[bone]] += to_parent
        w[:, child] += to_child
        w[:, bone] += 1.0 - to_parent - to_child
        vertices.append(tube)
        weights.append(w)
        faces += _tube_faces(offset)
    v_template = np.concatenate(vertices)
    skin = np.concatenate(weights)
    n_verts = len(v_template)
    regressor = np.zeros((n_joints, n_verts))
    for j, rows in enumerate(regressor_rows):
        regressor[j, rows] = 1.0 / len(rows)
    kintree = np.stack([np.array(PARENTS, dtype=np.int64) % 2**32, np.arange(n_joints)]).astype(np.uint32)
    return {
        "v_template": v_template, "shapedirs": _shape_dirs(v_template, skin, joints, num_betas, rng),
        "posedirs": _pose_dirs(skin, rng), "J_regressor": regressor, "weights": skin,
        "kintree_table": kintree, "f": np.asarray(faces, dtype=np.uint32), "joint_names": np.array(JOINT_NAMES),
    }


def _shape_dirs(v: np.ndarray, skin: np.ndarray, joints: np.ndarray, num_betas: int,
                rng: np.random.Generator) -> np.ndarray:
    """Smooth shape blend shapes [V, 3, L]: size, height, girth, then random low-frequency fields."""
    bone_centre = skin @ joints  # [V, 3] skin-weighted joint position: the axis point each vertex hangs on
    dirs = [0.08 * v, 0.08 * v * np.array([0.0, 1.0, 0.0]), 0.3 * (v - bone_centre)]
    while len(dirs) < num_betas:
        freq = rng.normal(size=(3, 3)) * 2.0
        phase = rng.uniform(0, 2 * np.pi, size=3)
        amp = rng.normal(size=3) * 0.01
        dirs.append(amp * np.sin(v @ freq + phase))
    return np.stack(dirs[:num_betas], axis=-1)


def _pose_dirs(skin: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Small pose blend shapes [V, 3, 207], each joint's 9 features moving only the vertices it skins."""
    n_verts, n_joints = skin.shape
    dirs = np.zeros((n_verts, 3, 9 * (n_joints - 1)))
    for j in range(1, n_joints):
        coeffs = rng.normal(size=(3, 9)) * 0.004
        dirs[:, :, 9 * (j - 1):9 * j] = skin[:, j, None, None] * coeffs[None]
    return dirs


def write_test_model(path: str | os.PathLike, num_betas: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    """Write the synthetic model as an SMPL-layout ``.npz`` atomically; returns its arrays."""
    data = make_test_model(num_betas=num_betas, seed=seed)
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **data)
    return data
