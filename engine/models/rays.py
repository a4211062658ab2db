"""Camera rays and where to sample them: pixel rays (OpenCV convention), box intersection, sample placement.

Pixel (x, y) of a camera is the ray through image point (x + 0.5, y + 0.5), i.e. through pixel centres;
cameras with lens distortion give the exact ray through the lens model (``undistort.lens_directions``).
Samples are placed on a fixed grid of ``n_samples`` per ray (with optional jitter while training) either
uniformly inside an axis-aligned box (object scenes) or uniformly in a disparity-like parameter
``s`` with ``t = s`` for ``s < 1`` and ``t = 1 / (2 - s)`` beyond (unbounded scenes, matching the
mip-NeRF 360 contraction).
"""
from __future__ import annotations

import numpy as np
import torch

from recon.engine.scene.camera import Camera


def pixel_rays(camera_to_world: torch.Tensor,  # [B, 4, 4] or [4, 4]
               intrinsics: torch.Tensor,  # [B, 4] or [4]: fx, fy, cx, cy
               x: torch.Tensor,  # [B] image x (pixel centres are at +0.5)
               y: torch.Tensor,  # [B] image y
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Origins and unit directions [B, 3] of the rays through image points (x, y)."""
    fx, fy, cx, cy = intrinsics.unbind(-1)
    local = torch.stack([(x - cx) / fx, (y - cy) / fy, torch.ones_like(x)], dim=-1)  # [B, 3]
    return rotate_rays(camera_to_world, local)


def camera_tensors(cameras: list[Camera], device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Camera-to-world [C, 4, 4] and intrinsics [C, 4] (fx, fy, cx, cy) as float32 tensors."""
    c2w = torch.tensor(np.stack([c.camera_to_world for c in cameras]), dtype=torch.float32, device=device)
    intrinsics = torch.tensor([[c.fx, c.fy, c.cx, c.cy] for c in cameras], dtype=torch.float32, device=device)
    return c2w, intrinsics


def lens_directions(camera: Camera, device: torch.device | str = "cpu") -> torch.Tensor:
    """Unit directions [H*W, 3] in camera coordinates (float32, row-major pixels) through every pixel centre of
    ``camera``, through its lens. Pixels where a rational lens model cannot be inverted get the pinhole ray."""
    from recon.engine.scene.undistort import pinhole_camera, pixel_directions

    u, v = np.meshgrid(np.arange(camera.width) + 0.5, np.arange(camera.height) + 0.5)
    pixels = np.stack([u, v], axis=-1).reshape(-1, 2)
    local = pixel_directions(pixels, camera)
    bad = ~np.all(np.isfinite(local), axis=-1)
    if bad.any():
        local[bad] = pixel_directions(pixels[bad], pinhole_camera(camera))
    return torch.as_tensor(local, dtype=torch.float32, device=device)


def rotate_rays(camera_to_world: torch.Tensor,  # [B, 4, 4] or [4, 4]
                local: torch.Tensor,  # [B, 3] directions in camera coordinates
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Origins and unit directions [B, 3] in world coordinates of rays given in camera coordinates."""
    directions = torch.nn.functional.normalize((camera_to_world[..., :3, :3] @ local[..., None])[..., 0], dim=-1)
    return camera_to_world[..., :3, 3].expand_as(directions), directions


def camera_rays(camera: Camera, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Ray origins and unit directions [H*W, 3] (float32, row-major pixels) through every pixel centre."""
    c2w, intrinsics = camera_tensors([camera], device)
    if not camera.is_pinhole:
        return rotate_rays(c2w[0], lens_directions(camera, device))
    u = torch.arange(camera.width, dtype=torch.float32, device=device) + 0.5
    v = torch.arange(camera.height, dtype=torch.float32, device=device) + 0.5
    y, x = torch.meshgrid(v, u, indexing="ij")
    return pixel_rays(c2w[0], intrinsics[0], x.reshape(-1), y.reshape(-1))


def ray_box_intersection(origins: torch.Tensor,  # [R, 3]
                         directions: torch.Tensor,  # [R, 3]
                         box: torch.Tensor,  # [2, 3] (min, max)
                         near: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry and exit distances [R] of rays through a box (slab test); ``far <= near`` means a miss."""
    safe = torch.where(directions.abs() < 1e-9, torch.full_like(directions, 1e-9), directions)
    t0 = (box[0] - origins) / safe
    t1 = (box[1] - origins) / safe
    t_near = torch.minimum(t0, t1).amax(-1).clamp_min(near)
    t_far = torch.maximum(t0, t1).amin(-1)
    return t_near, t_far


def box_sample_edges(t_near: torch.Tensor,  # [R]
                     t_far: torch.Tensor,  # [R]
                     step: float, n_samples: int, jitter: torch.Tensor | None = None) -> torch.Tensor:
    """Sample interval edges [R, n_samples + 1] at a fixed ``step`` from each ray's box entry.

    ``jitter`` [R, 1] in [0, 1) shifts the whole comb (stratified sampling while training). Intervals
    beyond the exit ``t_far`` are dropped by the caller.
    """
    k = torch.arange(n_samples + 1, device=t_near.device, dtype=t_near.dtype)
    offset = 0.0 if jitter is None else jitter * step
    return t_near[:, None] + offset + k[None, :] * step


def unbounded_sample_edges(n_rays: int, n_samples: int, near: float, far: float,
                           jitter: torch.Tensor | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
    """Sample interval edges [R, n_samples + 1] uniform in ``s`` (linear to 1, then in disparity to ``far``)."""
    s_far = 2.0 - 1.0 / far
    k = torch.arange(n_samples + 1, device=device, dtype=torch.float32)
    s = near + (s_far - near) * (k[None, :] + (0.0 if jitter is None else jitter)) / (n_samples + 1)
    s = s.expand(n_rays, -1)
    return torch.where(s < 1.0, s, 1.0 / (2.0 - s).clamp_min(1.0 / far))
