"""Pose comparison up to a similarity: exact recovery of a known similarity, and errors that are measured."""
from __future__ import annotations

import numpy as np
import pytest

from recon.engine.eval.poses import pose_errors, umeyama


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def _axis_angle(axis: np.ndarray, degrees: float) -> np.ndarray:
    k = axis / np.linalg.norm(axis)
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    a = np.radians(degrees)
    return np.eye(3) + np.sin(a) * K + (1 - np.cos(a)) * K @ K


def _poses(rng: np.random.Generator, count: int) -> dict[str, np.ndarray]:
    poses = {}
    for i in range(count):
        pose = np.eye(4)
        pose[:3, :3] = _rotation(rng)
        pose[:3, 3] = rng.normal(size=3) * 3
        poses[f"{i:03d}.jpg"] = pose
    return poses


def _moved(poses: dict[str, np.ndarray], s: float, R: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
    """The same cameras in a world mapped by x' = s R x + t (world-to-camera poses, rescaled)."""
    out = {}
    for name, pose in poses.items():
        new = np.eye(4)
        new[:3, :3] = pose[:3, :3] @ R.T
        new[:3, 3] = s * pose[:3, 3] - new[:3, :3] @ t
        out[name] = new
    return out


def test_umeyama_recovers_a_similarity(seed):
    rng = np.random.default_rng(seed)
    points = rng.normal(size=(17, 3))
    s, R, t = 2.7, _rotation(rng), rng.normal(size=3)
    s2, R2, t2 = umeyama(points, s * points @ R.T + t)
    assert s2 == pytest.approx(s, rel=1e-10)
    np.testing.assert_allclose(R2, R, atol=1e-10)
    np.testing.assert_allclose(t2, t, atol=1e-10)


def test_pose_errors_measure_what_was_changed(seed):
    rng = np.random.default_rng(seed)
    reference = _poses(rng, 12)
    estimate = _moved(reference, 0.3, _rotation(rng), rng.normal(size=3))
    errors = pose_errors(estimate, reference)
    assert errors.compared == 12 and errors.rotation_max_deg < 1e-5 and errors.centre_max < 1e-9
    turned = dict(estimate)
    name = "005.jpg"
    turned[name] = turned[name].copy()
    turned[name][:3, :3] = _axis_angle(rng.normal(size=3), 3.0) @ turned[name][:3, :3]
    turned[name][:3, 3] = turned[name][:3, :3] @ (-(estimate[name][:3, :3].T @ estimate[name][:3, 3]))
    turned[name][:3, 3] *= -1  # same centre, rotated by 3 degrees
    errors = pose_errors(turned, reference)
    assert errors.rotation_max_deg == pytest.approx(3.0, abs=1e-6) and errors.centre_max < 1e-9
    with pytest.raises(ValueError):
        pose_errors({k: estimate[k] for k in list(estimate)[:2]}, reference)
