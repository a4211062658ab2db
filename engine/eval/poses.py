"""Camera poses against a reference: the similarity that best aligns them, then rotation and centre errors.

An SfM result is defined up to a similarity (scale, rotation, translation), so the estimated camera centres
are first mapped onto the reference's by Umeyama's least-squares similarity; then each camera's rotation
error is the angle of ``R_ref R_est'^T`` (``R_est'`` the estimated world-to-camera rotation in the
reference's frame) and its centre error is the distance between the aligned centres, as a fraction of the
reference centres' bounding-box diagonal (the scene extent).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PoseErrors:
    """Rotation errors in degrees and centre errors as fractions of the extent, over ``compared`` images."""

    compared: int
    rotation_max_deg: float
    rotation_median_deg: float
    centre_max: float
    centre_median: float


def umeyama(source: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(s, R [3, 3], t [3]) minimising ``sum |target - (s R source + t)|^2`` over points [N, 3] (N >= 3, not
    all on a line); R is a proper rotation."""
    source, target = np.asarray(source, dtype=np.float64), np.asarray(target, dtype=np.float64)
    mu_s, mu_t = source.mean(0), target.mean(0)
    a, b = source - mu_s, target - mu_t
    U, S, Vt = np.linalg.svd(b.T @ a / len(a))
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    R = U @ D @ Vt
    s = float(np.trace(np.diag(S) @ D) / (a ** 2).sum(1).mean())
    return s, R, mu_t - s * R @ mu_s


def pose_errors(estimate: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> PoseErrors:
    """Errors of the world-to-camera poses [4, 4] in ``estimate`` against ``reference`` (both keyed by image
    name) over the images both hold, after aligning the centres by ``umeyama``."""
    names = sorted(set(estimate) & set(reference))
    if len(names) < 3:
        raise ValueError(f"need at least 3 images in common to align poses, found {len(names)}")
    est_pose = np.stack([estimate[n] for n in names])
    ref_pose = np.stack([reference[n] for n in names])
    centres = lambda poses: -np.einsum("nji,nj->ni", poses[:, :3, :3], poses[:, :3, 3])  # noqa: E731  -R^T t
    est_c, ref_c = centres(est_pose), centres(ref_pose)
    s, R, t = umeyama(est_c, ref_c)
    extent = float(np.linalg.norm(ref_c.max(0) - ref_c.min(0)))
    centre = np.linalg.norm(s * est_c @ R.T + t - ref_c, axis=1) / extent
    relative = ref_pose[:, :3, :3] @ np.swapaxes(est_pose[:, :3, :3] @ R.T, 1, 2)
    cosine = np.clip((np.trace(relative, axis1=1, axis2=2) - 1.0) / 2.0, -1.0, 1.0)
    rotation = np.degrees(np.arccos(cosine))
    return PoseErrors(compared=len(names), rotation_max_deg=float(rotation.max()),
                      rotation_median_deg=float(np.median(rotation)), centre_max=float(centre.max()),
                      centre_median=float(np.median(centre)))
