"""Camera paths for novel-view videos: ``orbit``, ``spiral``, ``interpolate`` and ``test``.

Paths are built from a run's stored cameras (normalised coordinates). ``orbit`` and ``spiral`` circle
the point the cameras look at, around the cameras' mean up direction, at their mean distance and
height; ``interpolate`` moves smoothly through the training cameras in order; ``test`` is the test
cameras themselves. Every generated camera has the intrinsics of the first reference camera.
"""
from __future__ import annotations

import numpy as np
import torch

from recon.engine.errors import ReconError
from recon.engine.models.gaussians import quat_to_rotmat
from recon.engine.scene.camera import Camera, focus_point
from recon.engine.scene.undistort import pinhole_camera

PATHS = ("orbit", "spiral", "interpolate", "test")


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """OpenCV world-to-camera [4, 4] at ``eye`` [3] looking at ``target`` [3] with world ``up`` [3] up."""
    forward = target - eye
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-8:  # looking along up: pick any perpendicular
        right = np.cross(forward, np.eye(3)[np.argmin(np.abs(forward))])
    right = right / np.linalg.norm(right)
    down = np.cross(forward, right)
    w2c = np.eye(4)
    w2c[:3, :3] = np.stack([right, down, forward])
    w2c[:3, 3] = -w2c[:3, :3] @ eye
    return w2c


def look_target(cameras: list[Camera]) -> np.ndarray:
    """What a path around ``cameras`` looks at: their focus point, else one unit ahead of the mean camera."""
    point = focus_point(cameras)
    if point is not None:
        return point
    return np.mean([c.center for c in cameras], axis=0) + np.mean([c.camera_to_world[:3, 2] for c in cameras], axis=0)


def mean_up(cameras: list[Camera]) -> np.ndarray:
    """The cameras' mean up direction [3] (unit; +z when they disagree completely)."""
    up = -np.mean([cam.camera_to_world[:3, 1] for cam in cameras], axis=0)  # OpenCV y points down
    norm = np.linalg.norm(up)
    return up / norm if norm > 1e-8 else np.array([0.0, 0.0, 1.0])


def _circle(cameras: list[Camera], frames: int, *, height_wave: float, radius_wave: float) -> list[Camera]:
    target, up = look_target(cameras), mean_up(cameras)
    offsets = np.stack([cam.center for cam in cameras]) - target
    heights = offsets @ up
    radial = offsets - heights[:, None] * up
    radius = float(np.linalg.norm(radial, axis=1).mean())
    height = float(heights.mean())
    height_span = float(heights.std()) if len(cameras) > 1 else 0.2 * radius
    e1 = radial.mean(0)
    if np.linalg.norm(e1) < 1e-6 * max(radius, 1e-12):
        e1 = radial[0]
    e1 = e1 - (e1 @ up) * up
    e1 = e1 / np.linalg.norm(e1)
    e2 = np.cross(up, e1)
    ref = pinhole_camera(cameras[0])  # novel views: an ideal lens
    out = []
    for i in range(frames):
        t = 2 * np.pi * i / frames
        r = radius * (1.0 + radius_wave * np.sin(2 * t))
        h = height + height_wave * height_span * np.sin(t)
        eye = target + r * (np.cos(t) * e1 + np.sin(t) * e2) + h * up
        out.append(ref.with_pose(look_at(eye, target, up)))
    return out


def _quat_from_matrix(R: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z) of a rotation [3, 3]."""
    m = R
    t = np.trace(m)
    if t > 0:
        s = 2.0 * np.sqrt(t + 1.0)
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + m[i, i] - m[j, j] - m[k, k])
        q = np.zeros(4)
        q[0] = (m[k, j] - m[j, k]) / s
        q[1 + i], q[1 + j], q[1 + k] = 0.25 * s, (m[j, i] + m[i, j]) / s, (m[k, i] + m[i, k]) / s
    q = np.asarray(q, dtype=np.float64)
    return q / np.linalg.norm(q)


def _slerp(q0: np.ndarray, q1: np.ndarray, t: float) -> np.ndarray:
    dot = float(q0 @ q1)
    if dot < 0:
        q1, dot = -q1, -dot
    if dot > 0.9995:
        q = q0 + t * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = np.arccos(dot)
    return (np.sin((1 - t) * theta) * q0 + np.sin(t * theta) * q1) / np.sin(theta)


def interpolate_cameras(cameras: list[Camera], frames: int) -> list[Camera]:
    """``frames`` cameras moving through ``cameras`` in order (slerped rotations, linear centres)."""
    if len(cameras) == 1:
        return [cameras[0]] * frames
    c2ws = [cam.camera_to_world for cam in cameras]
    quats = [_quat_from_matrix(c[:3, :3]) for c in c2ws]
    out = []
    for i in range(frames):
        s = i * (len(cameras) - 1) / max(frames - 1, 1)
        a = min(int(s), len(cameras) - 2)
        t = s - a
        c2w = np.eye(4)
        c2w[:3, :3] = quat_to_rotmat(torch.from_numpy(_slerp(quats[a], quats[a + 1], t))).numpy()
        c2w[:3, 3] = (1 - t) * c2ws[a][:3, 3] + t * c2ws[a + 1][:3, 3]
        out.append(pinhole_camera(cameras[0]).with_pose(np.linalg.inv(c2w)))
    return out


def camera_path(kind: str, train: list[Camera], test: list[Camera], frames: int) -> list[Camera]:
    """The cameras of path ``kind`` (one of ``PATHS``); ``test`` ignores ``frames``."""
    if kind not in PATHS:
        raise ReconError(f"unknown camera path {kind!r}; choose one of {', '.join(PATHS)}")
    if kind == "test":
        if not test:
            raise ReconError("--path test: the run has no test cameras (it was fitted with --test-every 0)")
        return list(test)
    reference = train or test
    if not reference:
        raise ReconError("the run stores no cameras to build a camera path from")
    if frames < 1:
        raise ReconError(f"--frames must be at least 1, got {frames}")
    if kind == "interpolate":
        return interpolate_cameras(reference, frames)
    if kind == "orbit":
        return _circle(reference, frames, height_wave=0.0, radius_wave=0.0)
    return _circle(reference, frames, height_wave=1.0, radius_wave=0.1)
