"""Pinhole cameras with optional lens distortion, in the OpenCV convention.

World-to-camera matrices map world points to camera coordinates with x right, y down and z forward
(the convention of COLMAP and OpenCV). transforms.json files store OpenGL camera-to-world matrices
(x right, y up, z backward); ``opengl_to_opencv`` converts them.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

# Camera models whose distortion the renderers ignore when every coefficient is zero.
PINHOLE_MODELS = ("SIMPLE_PINHOLE", "PINHOLE")
DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "k5", "k6", "p1", "p2")

_GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])


def opengl_to_opencv(camera_to_world: np.ndarray) -> np.ndarray:
    """Convert an OpenGL camera-to-world [4, 4] into an OpenCV world-to-camera [4, 4]."""
    return np.linalg.inv(np.asarray(camera_to_world, dtype=np.float64) @ _GL_TO_CV)


@dataclass(frozen=True)
class Camera:
    """One view: intrinsics, image size, distortion and pose.

    ``distortion`` holds the named coefficients of ``model`` (``k1``..``k6``, ``p1``, ``p2``); models
    without distortion leave it empty. ``world_to_camera`` is a float64 [4, 4] rigid transform.
    """

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    world_to_camera: np.ndarray = field(default_factory=lambda: np.eye(4))
    model: str = "PINHOLE"
    distortion: dict[str, float] = field(default_factory=dict)

    @property
    def K(self) -> np.ndarray:
        """Intrinsic matrix [3, 3] (float64)."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def camera_to_world(self) -> np.ndarray:
        """Inverse of ``world_to_camera`` [4, 4]."""
        return np.linalg.inv(self.world_to_camera)

    @property
    def center(self) -> np.ndarray:
        """Camera centre in world coordinates [3]."""
        R, t = self.world_to_camera[:3, :3], self.world_to_camera[:3, 3]
        return -R.T @ t

    @property
    def is_pinhole(self) -> bool:
        """True when the renderers can use this camera as it is (no non-zero distortion)."""
        return not any(abs(v) > 0.0 for v in self.distortion.values())

    def scaled(self, factor: float) -> "Camera":
        """This camera for an image downscaled by ``factor`` (pixel centres stay aligned)."""
        width, height = max(1, round(self.width / factor)), max(1, round(self.height / factor))
        sx, sy = width / self.width, height / self.height
        return replace(self, width=width, height=height, fx=self.fx * sx, fy=self.fy * sy,
                       cx=self.cx * sx, cy=self.cy * sy)

    def with_pose(self, world_to_camera: np.ndarray) -> "Camera":
        """This camera moved to another pose."""
        return replace(self, world_to_camera=np.asarray(world_to_camera, dtype=np.float64))


def camera_matrices(cameras: "list[Camera]", device: "str | object" = "cpu") -> tuple:
    """Stack cameras into float32 tensors: world-to-camera ``viewmats`` [C, 4, 4] and ``Ks`` [C, 3, 3]."""
    import torch

    viewmats = torch.tensor(np.stack([c.world_to_camera for c in cameras]), dtype=torch.float32, device=device)
    Ks = torch.tensor(np.stack([c.K for c in cameras]), dtype=torch.float32, device=device)
    return viewmats, Ks


def focus_point(cameras: "list[Camera]") -> "np.ndarray | None":
    """The point [3] nearest (least squares) to every camera's optical axis, for captures that look inward.

    Returns None when the axes do not converge (nearly parallel, as in forward-facing captures), or when the
    point lies behind most cameras or farther from their mean centre than the farthest camera; callers pick
    their own fallback then.
    """
    centers = np.stack([c.center for c in cameras])
    forward = np.stack([c.camera_to_world[:3, 2] for c in cameras])
    if len(cameras) < 2:
        return None
    d = forward / np.linalg.norm(forward, axis=1, keepdims=True)
    projectors = np.eye(3)[None] - d[:, :, None] * d[:, None, :]  # [F, 3, 3]: remove the axis component
    A, b = projectors.sum(0), np.einsum("fij,fj->i", projectors, centers)
    eigen = np.linalg.eigvalsh(A)
    if eigen[0] < 1e-2 * eigen[-1]:
        return None
    point = np.linalg.solve(A, b)
    mean = centers.mean(0)
    in_front = np.mean(np.einsum("fi,fi->f", point - centers, d) > 0) > 0.5
    within = np.linalg.norm(point - mean) <= np.linalg.norm(centers - mean, axis=1).max()
    return point if in_front and within else None
