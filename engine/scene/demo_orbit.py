"""An orbit video of the demo scene, for structure from motion: the four objects inside a textured room.

SfM needs texture and parallax that the demo scene's plain background lacks, so here the objects stand
inside a sphere of radius ``ROOM_RADIUS`` whose wall is tiled with random colours (the cells of a 3D grid
cut by the sphere: polygons with corners, which SIFT finds). The camera circles the scene once, its
elevation swinging by ``SWING_DEG`` around ``ELEVATION_DEG``, its distance by ``DISTANCE_SWING`` around the
demo's ``CAMERA_DISTANCE``, and its aim wandering up to ``AIM_WANDER`` around the origin, as a hand-held
camera would: cameras on a sphere all looking at its centre are a critical motion for self-calibration
(focal length and radial distortion trade off: SfM of 48 frames at 256 pixels found the focal length
33% off on a level circle, 12% off with the elevation and distance swings alone, 1% off on this path). The lens is an ideal pinhole, so SfM should find no distortion and the focal length of
``orbit_cameras``.
"""
from __future__ import annotations

import math

import numpy as np

from recon.engine.scene.camera import Camera
from recon.engine.scene.demo import (CAMERA_DISTANCE, VIEWS_PER_BATCH, blender_camera, camera_angle_x, demo_geometry,
                                     look_at_origin, render_views)

ROOM_RADIUS = 8.0
ROOM_CELL = 0.5
ELEVATION_DEG = 25.0
SWING_DEG = 15.0
DISTANCE_SWING = 0.15
AIM_WANDER = 0.4
FIELD_OF_VIEW_MARGIN = 1.3  # wider than the demo's views, so that the room shows around the objects


def orbit_cameras(frames: int, resolution: int, seed: int = 0) -> list[Camera]:
    """``frames`` pinhole cameras (square, ``resolution`` pixels) on one turn around the demo scene."""
    angle_x = FIELD_OF_VIEW_MARGIN * camera_angle_x(demo_geometry(seed), CAMERA_DISTANCE)
    cameras = []
    for i in range(frames):
        azimuth = 2.0 * math.pi * i / frames
        elevation = math.radians(ELEVATION_DEG + SWING_DEG * math.sin(2.0 * azimuth))
        distance = CAMERA_DISTANCE * (1.0 + DISTANCE_SWING * math.sin(3.0 * azimuth))
        position = distance * np.array([math.cos(elevation) * math.cos(azimuth),
                                        math.cos(elevation) * math.sin(azimuth), math.sin(elevation)])
        aim = AIM_WANDER * np.array([math.sin(5.0 * azimuth), math.cos(4.0 * azimuth), 0.5 * math.sin(7.0 * azimuth)])
        c2w = look_at_origin(position - aim)  # looking from position - aim at the origin, then moved by aim
        c2w[:3, 3] += aim
        cameras.append(blender_camera(c2w, angle_x, resolution))
    return cameras


def room_colors(camera: Camera, seed: int = 0) -> np.ndarray:
    """Colour [H, W, 3] float32 of the room's wall seen through each pixel centre of ``camera``."""
    v, u = np.meshgrid(np.arange(camera.height) + 0.5, np.arange(camera.width) + 0.5, indexing="ij")
    local = np.stack([(u - camera.cx) / camera.fx, (v - camera.cy) / camera.fy, np.ones_like(u)], axis=-1)
    c2w = camera.camera_to_world
    directions = local @ c2w[:3, :3].T
    directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
    origin = c2w[:3, 3]
    b = directions @ origin
    t = -b + np.sqrt(b * b - (origin @ origin - ROOM_RADIUS ** 2))  # the far root: the camera is inside
    cells = np.floor((origin + t[..., None] * directions) / ROOM_CELL).astype(np.int64)
    palette = np.random.default_rng([seed, 2]).uniform(0.15, 0.95, size=(4096, 3)).astype(np.float32)
    return palette[(cells[..., 0] * 73856093 ^ cells[..., 1] * 19349663 ^ cells[..., 2] * 83492791) % len(palette)]


def orbit_frames(frames: int = 48, resolution: int = 256, seed: int = 0, supersample: int = 1) -> np.ndarray:
    """The orbit's images, float32 [frames, resolution, resolution, 3] in [0, 1]."""
    geometry = demo_geometry(seed)
    cameras = orbit_cameras(frames, resolution, seed)
    out = []
    for start in range(0, frames, VIEWS_PER_BATCH):
        batch = cameras[start:start + VIEWS_PER_BATCH]
        rgba, _ = render_views(geometry, batch, supersample)
        room = np.stack([room_colors(c, seed) for c in batch])
        out.append(rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:]) * room)
    return np.concatenate(out)
