"""Overlay of a fitted body mesh on its input image: a small z-buffered triangle rasteriser in numpy."""
from __future__ import annotations

import numpy as np
import torch

from recon.engine.smpl.fit import PinholeCamera

MESH_COLOUR = np.array([0.55, 0.75, 1.0])


def render_mesh_overlay(image: np.ndarray, vertices: np.ndarray, faces: np.ndarray, camera: PinholeCamera,
                        keypoints: np.ndarray | None = None, opacity: float = 0.7,
                        colour: np.ndarray = MESH_COLOUR) -> np.ndarray:
    """``image`` [H, W, 3] in [0, 1] with the mesh (``vertices`` [V, 3] world, ``faces`` [F, 3]) drawn over it in
    ``colour``, flat-shaded by the angle to the viewing ray; ``keypoints`` [K, 2] pixels are marked as red squares."""
    height, width = image.shape[:2]
    w2c = np.asarray(camera.world_to_camera, dtype=np.float64)
    cam = vertices @ w2c[:3, :3].T + w2c[:3, 3]
    pix = camera.project(torch.as_tensor(vertices, dtype=torch.float64)).numpy()
    depth = np.full((height, width), np.inf)
    shade = np.zeros((height, width))
    for tri in faces:
        z = cam[tri, 2]
        if np.any(z <= 1e-6):
            continue
        p = pix[tri]
        normal = np.cross(cam[tri[1]] - cam[tri[0]], cam[tri[2]] - cam[tri[0]])
        centre = cam[tri].mean(0)
        lit = abs(normal @ centre) / (np.linalg.norm(normal) * np.linalg.norm(centre) + 1e-12)
        _fill_triangle(p, z, lit, depth, shade)
    out = image[..., :3].astype(np.float64).copy()
    covered = np.isfinite(depth)
    colour = (0.3 + 0.7 * shade[..., None]) * np.asarray(colour)
    out[covered] = (1 - opacity) * out[covered] + opacity * colour[covered]
    for x, y in (keypoints if keypoints is not None else []):
        xi, yi = int(round(x)), int(round(y))
        out[max(yi - 2, 0):yi + 3, max(xi - 2, 0):xi + 3] = (1.0, 0.1, 0.1)
    return out.astype(np.float32)


def _fill_triangle(p: np.ndarray, z: np.ndarray, lit: float, depth: np.ndarray, shade: np.ndarray) -> None:
    """Rasterise one triangle (pixel corners ``p`` [3, 2], depths ``z`` [3]) into the z-buffer."""
    height, width = depth.shape
    x0, y0 = np.floor(p.min(0)).astype(int)
    x1, y1 = np.ceil(p.max(0)).astype(int)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width - 1), min(y1, height - 1)
    if x0 > x1 or y0 > y1:
        return
    ys, xs = np.mgrid[y0:y1 + 1, x0:x1 + 1] + 0.5
    (ax, ay), (bx, by), (cx, cy) = p
    area = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
    if abs(area) < 1e-12:
        return
    w0 = ((bx - xs) * (cy - ys) - (by - ys) * (cx - xs)) / area
    w1 = ((cx - xs) * (ay - ys) - (cy - ys) * (ax - xs)) / area
    w2 = 1.0 - w0 - w1
    inside = (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
    zi = w0 * z[0] + w1 * z[1] + w2 * z[2]
    region = depth[y0:y1 + 1, x0:x1 + 1]
    nearer = inside & (zi < region)
    region[nearer] = zi[nearer]
    shade[y0:y1 + 1, x0:x1 + 1][nearer] = lit
