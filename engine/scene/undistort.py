"""Lens distortion of the COLMAP/OpenCV camera models, its inverse, and resampling images to pinhole.

Distortion acts on normalised image coordinates ``x = (u - cx) / fx``, ``y = (v - cy) / fy`` (pixel
coordinates with the image's top-left corner at 0, pixel centres at +0.5, as in COLMAP):

* SIMPLE_RADIAL, RADIAL, OPENCV, FULL_OPENCV: ``x_d = x * (1 + k1 r^2 + k2 r^4 + k3 r^6) /
  (1 + k4 r^2 + k5 r^4 + k6 r^6) + 2 p1 x y + p2 (r^2 + 2 x^2)`` (and symmetrically for y); each model
  uses a subset of the coefficients, the others are zero.
* OPENCV_FISHEYE: ``theta = atan(r)``, ``x_d = x / r * theta (1 + k1 theta^2 + k2 theta^4 + k3 theta^6 +
  k4 theta^8)``.

Undistorting points inverts this map by Newton's method (vectorised, float64); ``lens_directions`` gives
the exact ray of a distorted point (for ray-based models, and fisheyes up to 180 degrees and beyond).
Undistorting an image needs only the forward map: every pixel of the ideal pinhole camera
(``undistorted_camera``: COLMAP's choice, valid region kept, field of view capped by ``max_fov``) samples
the distorted input (bicubic); ``valid_region`` says which output pixels have a source.
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


def lens_directions(xy_distorted: np.ndarray, camera: Camera) -> np.ndarray:
    """Unit ray directions [..., 3] in camera coordinates (z forward) of distorted normalised points [..., 2].

    The exact inverse of the lens: rational models invert ``distort_normalized`` by Newton's method (NaN
    where it is not invertible); OPENCV_FISHEYE solves ``theta_d = theta (1 + k1 theta^2 + ...)`` for the
    angle from the optical axis, so rays up to 90 degrees off axis (a 180-degree lens) and beyond come back.
    """
    xy_distorted = np.asarray(xy_distorted, dtype=np.float64)
    if camera.model not in FISHEYE_MODELS or camera.is_pinhole:
        xy = undistort_normalized(xy_distorted, camera)
        local = np.concatenate([xy, np.ones_like(xy[..., :1])], axis=-1)
        return local / np.linalg.norm(local, axis=-1, keepdims=True)
    k = [float(camera.distortion.get(name, 0.0)) for name in ("k1", "k2", "k3", "k4")]
    theta_d = np.linalg.norm(xy_distorted, axis=-1)
    theta = theta_d.copy()
    for _ in range(30):  # Newton on f(theta) = theta (1 + k1 t^2 + ...) - theta_d, t = theta
        t2 = theta * theta
        f = theta * (1 + t2 * (k[0] + t2 * (k[1] + t2 * (k[2] + t2 * k[3])))) - theta_d
        df = 1 + t2 * (3 * k[0] + t2 * (5 * k[1] + t2 * (7 * k[2] + t2 * 9 * k[3])))
        theta = theta - f / np.where(np.abs(df) > 1e-12, df, 1e-12)
    t2 = theta * theta
    residual = theta * (1 + t2 * (k[0] + t2 * (k[1] + t2 * (k[2] + t2 * k[3])))) - theta_d
    theta = np.where((np.abs(residual) < 1e-9) & (theta >= 0) & (theta <= np.pi), theta, np.nan)
    scale = np.where(theta_d > 1e-12, np.sin(theta) / np.maximum(theta_d, 1e-12), 1.0)
    return np.stack([xy_distorted[..., 0] * scale, xy_distorted[..., 1] * scale, np.cos(theta)], axis=-1)


def pixel_directions(points: np.ndarray, camera: Camera) -> np.ndarray:
    """Unit ray directions [..., 3] in camera coordinates through pixels [..., 2] of ``camera``."""
    return lens_directions(_to_normalized(points, camera), camera)


def undistorted_camera(camera: Camera, max_fov: float = 120.0) -> tuple[Camera, float]:
    """The ideal pinhole camera an image of ``camera`` is resampled into, and the fraction of its pixels kept.

    Chosen as COLMAP's image undistorter does with its valid region kept whole: the same focal lengths, and
    the size of the bounding box of the undistorted image border, so that every source pixel lands in the output
    (pixels with no source are masked by the caller). The principal point moves by whole pixels, so that output
    and source pixel centres coincide where the lens barely displaces them. ``max_fov``
    (degrees) bounds the output's field of view across each axis, which a fisheye beyond it needs; the
    source pixels whose rays fall outside are dropped and the kept fraction says how many remain.
    Pinhole cameras come back unchanged (kept fraction 1).
    """
    if camera.model in PINHOLE_MODELS or camera.is_pinhole:
        return camera, 1.0
    if not 1.0 <= max_fov < 180.0:
        raise ReconError(f"--max-fov must be between 1 and 180 degrees (exclusive), got {max_fov:g}")
    limit = np.tan(np.radians(max_fov) / 2.0)
    w, h = camera.width, camera.height
    edge = np.linspace(0.0, 1.0, 4 * max(w, h) + 1)
    border = np.concatenate([np.stack([edge * w, np.zeros_like(edge)], -1), np.stack([edge * w, np.full_like(edge, h)], -1),
                             np.stack([np.zeros_like(edge), edge * h], -1), np.stack([np.full_like(edge, w), edge * h], -1)])
    xy = _pinhole_plane(pixel_directions(border, camera), limit)
    if not np.isfinite(xy).any():
        raise ReconError(f"camera {camera.model} {camera.width}x{camera.height}: its distortion cannot be inverted "
                         f"at the image border")
    low = np.maximum(np.nanmin(xy, axis=0), -limit)
    high = np.minimum(np.nanmax(xy, axis=0), limit)
    focal = np.array([camera.fx, camera.fy])
    centre = np.array([camera.cx, camera.cy])
    # Shift the principal point by whole pixels only: the output's pixel centres then land on the photo's where
    # the lens barely moves them (the middle of the image), and resampling there copies pixels instead of
    # interpolating half-way between them (a half-pixel offset cost 1.7 dB at 128 px, docs/benchmarks.md).
    principal = centre + np.ceil(-low * focal - centre - 1e-6)
    width, height = (int(np.ceil(s - 1e-6)) for s in high * focal + principal)
    target = replace(camera, model="PINHOLE", distortion={}, width=width, height=height, cx=float(principal[0]),
                     cy=float(principal[1]))
    return target, kept_fraction(camera, target)


def _pinhole_plane(directions: np.ndarray, limit: float) -> np.ndarray:
    """Pinhole normalised coordinates [..., 2] of directions [..., 3], clipped to ``|x|, |y| <= limit`` (NaN:
    no direction)."""
    z = directions[..., 2:]
    big = 2.0 * limit
    xy = np.where(z > 1e-9, directions[..., :2] / np.maximum(z, 1e-9), np.sign(directions[..., :2]) * big)
    return np.clip(xy, -big, big)


def kept_fraction(camera: Camera, target: Camera) -> float:
    """The fraction of ``camera``'s pixels (sampled on a grid of at most 256 x 256) whose rays ``target`` sees."""
    u = (np.arange(min(camera.width, 256)) + 0.5) * camera.width / min(camera.width, 256)
    v = (np.arange(min(camera.height, 256)) + 0.5) * camera.height / min(camera.height, 256)
    directions = pixel_directions(np.stack(np.meshgrid(u, v), axis=-1), camera)
    z = directions[..., 2]
    with np.errstate(invalid="ignore", divide="ignore"):
        pixels = directions[..., :2] / z[..., None] * [target.fx, target.fy] + [target.cx, target.cy]
        seen = (z > 0) & np.all((pixels >= 0) & (pixels <= [target.width, target.height]), axis=-1)
    return float(seen.mean())


def field_of_view(camera: Camera) -> tuple[float, float]:
    """Horizontal and vertical field of view (degrees) of a pinhole camera."""
    x = np.degrees(np.arctan(camera.cx / camera.fx) + np.arctan((camera.width - camera.cx) / camera.fx))
    y = np.degrees(np.arctan(camera.cy / camera.fy) + np.arctan((camera.height - camera.cy) / camera.fy))
    return float(x), float(y)


def undistortion_map(camera: Camera, target: Camera | None = None) -> np.ndarray:
    """For every pixel of ``target`` (default ``pinhole_camera(camera)``), the continuous source pixel (u, v)
    in ``camera``'s distorted image: float64 [H, W, 2]."""
    target = pinhole_camera(camera) if target is None else target
    u, v = np.meshgrid(np.arange(target.width) + 0.5, np.arange(target.height) + 0.5)
    return _to_pixels(distort_normalized(_to_normalized(np.stack([u, v], axis=-1), target), camera), camera)


def valid_region(source: np.ndarray, camera: Camera, target: Camera) -> np.ndarray:
    """Which pixels of ``target`` truly see ``camera``'s image, given their ``undistortion_map(camera, target)``
    ``source`` [H, W, 2]: those sampling it between its outermost pixel centres (``resample`` clamps the
    bicubic taps that fall beyond them) whose source pixel's exact ray (``pixel_directions``) comes back to
    them; bool [H, W].

    Beyond the radius where a strong lens model stops growing (say k1 < 0 alone) the forward map folds back
    into the image, so bounds alone would also let pixels there sample it; the round trip rules them out.
    """
    valid = np.all((source >= 0.5) & (source <= np.array([camera.width, camera.height]) - 0.5), axis=-1)
    directions = pixel_directions(source[valid], camera)
    u, v = np.meshgrid(np.arange(target.width) + 0.5, np.arange(target.height) + 0.5)
    with np.errstate(invalid="ignore", divide="ignore"):
        back = directions[:, :2] / directions[:, 2:] * [target.fx, target.fy] + [target.cx, target.cy]
        same = (directions[:, 2] > 0) & np.all(np.abs(back - np.stack([u, v], -1)[valid]) < 1e-3, axis=-1)
    valid[valid] = same
    return valid


def resample(image: np.ndarray, source: np.ndarray, camera: Camera, mode: str = "bicubic") -> np.ndarray:
    """Sample ``image`` [H, W, C] (or [H, W]) of ``camera`` at the pixels ``source`` [H', W', 2]
    (``undistortion_map``): float32 [H', W', C] (or [H', W']); 0 where ``source`` lies outside the image.

    ``mode`` "bicubic" (Keys' cubic convolution, a = -0.75, taps beyond the border clamped to it; it may
    overshoot the input's range, so callers clip) keeps small photos sharp where bilinear blurs them; "nearest"
    is for masks.
    """
    import torch
    import torch.nn.functional as F

    if mode not in ("bicubic", "nearest"):
        raise ValueError(f"resample mode must be bicubic or nearest, got {mode!r}")
    image = np.asarray(image)
    if image.shape[:2] != (camera.height, camera.width):
        raise ValueError(f"image is {image.shape[1]}x{image.shape[0]} but its camera is {camera.width}x{camera.height}")
    grid = np.stack([2 * source[..., 0] / camera.width - 1, 2 * source[..., 1] / camera.height - 1], axis=-1)
    channels = image.reshape(camera.height, camera.width, -1).astype(np.float32)
    sampled = F.grid_sample(torch.from_numpy(channels).permute(2, 0, 1)[None],
                            torch.from_numpy(grid.astype(np.float32))[None],
                            mode=mode, padding_mode="border", align_corners=False)
    out = sampled[0].permute(1, 2, 0).numpy()
    inside = np.all((source >= 0) & (source <= [camera.width, camera.height]), axis=-1)
    out = np.where(inside[..., None], out, np.float32(0.0))
    return out if image.ndim == 3 else out[..., 0]


def undistort_image(image: np.ndarray, camera: Camera, target: Camera | None = None) -> tuple[np.ndarray, Camera]:
    """Resample an image [H, W, C] (or [H, W]) taken by ``camera`` into the pinhole ``target`` (default
    ``pinhole_camera(camera)``: same size and intrinsics).

    Returns the undistorted image (float32, bicubic: it may overshoot the input's range at hard edges; pixels
    whose source lies outside the input are 0) and the pinhole camera.
    """
    target = pinhole_camera(camera) if target is None else target
    image = np.asarray(image)
    same_pixels = all(getattr(target, a) == getattr(camera, a) for a in ("width", "height", "fx", "fy", "cx", "cy"))
    if (camera.model in PINHOLE_MODELS or camera.is_pinhole) and same_pixels:
        if image.shape[:2] != (camera.height, camera.width):
            raise ValueError(f"image is {image.shape[1]}x{image.shape[0]} but its camera is "
                             f"{camera.width}x{camera.height}")
        return image.astype(np.float32), target
    return resample(image, undistortion_map(camera, target), camera), target
