"""Lens distortion of the COLMAP/OpenCV camera models, its inverse, and resampling images to pinhole.

Distortion acts on normalised image coordinates ``x = (u - cx) / fx``, ``y = (v - cy) / fy`` (pixel
coordinates with the image's top-left corner at 0, pixel centres at +0.5, as in COLMAP):

* SIMPLE_RADIAL, RADIAL, OPENCV, FULL_OPENCV: ``x_d = x * (1 + k1 r^2 + k2 r^4 + k3 r^6) /
  (1 + k4 r^2 + k5 r^4 + k6 r^6) + 2 p1 x y + p2 (r^2 + 2 x^2)`` (and symmetrically for y); each model
  uses a subset of the coefficients, the others are zero.
* OPENCV_FISHEYE: ``theta = atan(r)``, ``x_d = x / r * theta (1 + k1 theta^2 + k2 theta^4 + k3 theta^6 +
  k4 theta^8)``.

Undistorting points inverts this map by Newton's method (vectorised, float64). Undistorting an image needs
only the forward map: every pinhole output pixel samples the distorted input bilinearly.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from recon.engine.errors import ReconError
from recon.engine.scene.camera import Camera

RATIONAL_MODELS = ("SIMPLE_RADIAL", "RADIAL", "OPENCV", "FULL_OPENCV")
FISHEYE_MODELS = ("OPENCV_FISHEYE",)
PINHOLE_MODELS = ("SIMPLE_PINHOLE", "PINHOLE")


def distort_normalized(xy: np.ndarray, camera: Camera) -> np.ndarray:
    """Apply ``camera``'s lens distortion to normalised coordinates [..., 2] (float64)."""
    xy = np.asarray(xy, dtype=np.float64)
    if camera.model in PINHOLE_MODELS or camera.is_pinhole:
        return xy.copy()
    k = {name: float(camera.distortion.get(name, 0.0)) for name in ("k1", "k2", "k3", "k4", "k5", "k6", "p1", "p2")}
    x, y = xy[..., 0], xy[..., 1]
    r2 = x * x + y * y
    if camera.model in FISHEYE_MODELS:
        r = np.sqrt(r2)
        theta = np.arctan(r)
        t2 = theta * theta
        theta_d = theta * (1 + t2 * (k["k1"] + t2 * (k["k2"] + t2 * (k["k3"] + t2 * k["k4"]))))
        factor = np.where(r > 1e-12, theta_d / np.maximum(r, 1e-12), 1.0)
        return np.stack([x * factor, y * factor], axis=-1)
    if camera.model not in RATIONAL_MODELS:
        raise ReconError(f"camera model {camera.model}: distortion is not supported "
                         f"(supported: {', '.join(PINHOLE_MODELS + RATIONAL_MODELS + FISHEYE_MODELS)})")
    radial = ((1 + r2 * (k["k1"] + r2 * (k["k2"] + r2 * k["k3"])))
              / (1 + r2 * (k["k4"] + r2 * (k["k5"] + r2 * k["k6"]))))
    xd = x * radial + 2 * k["p1"] * x * y + k["p2"] * (r2 + 2 * x * x)
    yd = y * radial + k["p1"] * (r2 + 2 * y * y) + 2 * k["p2"] * x * y
    return np.stack([xd, yd], axis=-1)


def undistort_normalized(xy_distorted: np.ndarray, camera: Camera, *, iterations: int = 50,
                         tolerance: float = 1e-12) -> np.ndarray:
    """Invert ``distort_normalized`` [..., 2] by Newton's method with a central-difference Jacobian.

    Points where the iteration does not converge (outside the region where the distortion is
    invertible) come back as NaN.
    """
    target = np.asarray(xy_distorted, dtype=np.float64)
    if camera.model in PINHOLE_MODELS or camera.is_pinhole:
        return target.copy()
    xy = target.reshape(-1, 2).copy()
    goal = xy.copy()
    step = 1e-6
    dx, dy = np.array([step, 0.0]), np.array([0.0, step])
    for _ in range(iterations):
        residual = distort_normalized(xy, camera) - goal  # [N, 2]
        ju = (distort_normalized(xy + dx, camera) - distort_normalized(xy - dx, camera)) / (2 * step)
        jv = (distort_normalized(xy + dy, camera) - distort_normalized(xy - dy, camera)) / (2 * step)
        det = ju[:, 0] * jv[:, 1] - jv[:, 0] * ju[:, 1]
        safe = np.where(np.abs(det) > 1e-12, det, np.inf)
        # Solve [ju jv] delta = residual for each point (Cramer's rule).
        delta = np.stack([(residual[:, 0] * jv[:, 1] - jv[:, 0] * residual[:, 1]) / safe,
                          (ju[:, 0] * residual[:, 1] - residual[:, 0] * ju[:, 1]) / safe], axis=1)
        xy -= delta
        if np.all(np.abs(delta) < tolerance):
            break
    converged = np.all(np.abs(distort_normalized(xy, camera) - goal) < 1e-9, axis=1)
    xy[~converged] = np.nan
    return xy.reshape(target.shape)


def _to_normalized(points: np.ndarray, camera: Camera) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    return (points - [camera.cx, camera.cy]) / [camera.fx, camera.fy]


def _to_pixels(xy: np.ndarray, camera: Camera) -> np.ndarray:
    return xy * [camera.fx, camera.fy] + [camera.cx, camera.cy]


def distort_points(points: np.ndarray, camera: Camera) -> np.ndarray:
    """Pixels [..., 2] of ``pinhole_camera(camera)`` -> where the distorting ``camera`` sees them [..., 2]."""
    return _to_pixels(distort_normalized(_to_normalized(points, camera), camera), camera)


def undistort_points(points: np.ndarray, camera: Camera) -> np.ndarray:
    """Pixels [..., 2] of the distorting ``camera`` -> pixels of ``pinhole_camera(camera)`` [..., 2]."""
    return _to_pixels(undistort_normalized(_to_normalized(points, camera), camera), camera)


def pinhole_camera(camera: Camera) -> Camera:
    """The same camera (size, intrinsics, pose) without distortion."""
    return replace(camera, model="PINHOLE", distortion={})


def undistortion_map(camera: Camera) -> np.ndarray:
    """For every pixel of ``pinhole_camera(camera)``, the continuous source pixel (u, v) in the distorted
    image: float64 [H, W, 2]."""
    u, v = np.meshgrid(np.arange(camera.width) + 0.5, np.arange(camera.height) + 0.5)
    return distort_points(np.stack([u, v], axis=-1), camera)


def undistort_image(image: np.ndarray, camera: Camera) -> tuple[np.ndarray, Camera]:
    """Resample an image [H, W, C] (or [H, W]) taken by ``camera`` to its pinhole version.

    Returns the undistorted image (float32, same shape; pixels whose source lies outside the input are 0)
    and ``pinhole_camera(camera)``.
    """
    import torch
    import torch.nn.functional as F

    image = np.asarray(image)
    if image.shape[:2] != (camera.height, camera.width):
        raise ValueError(f"image is {image.shape[1]}x{image.shape[0]} but its camera is {camera.width}x{camera.height}")
    if camera.model in PINHOLE_MODELS or camera.is_pinhole:
        return image.astype(np.float32), pinhole_camera(camera)
    source = undistortion_map(camera)
    grid = np.stack([2 * source[..., 0] / camera.width - 1, 2 * source[..., 1] / camera.height - 1], axis=-1)
    channels = image.reshape(camera.height, camera.width, -1).astype(np.float32)
    sampled = F.grid_sample(torch.from_numpy(channels).permute(2, 0, 1)[None],
                            torch.from_numpy(grid.astype(np.float32))[None],
                            mode="bilinear", padding_mode="zeros", align_corners=False)
    out = sampled[0].permute(1, 2, 0).numpy().reshape(image.shape)
    return out, pinhole_camera(camera)
