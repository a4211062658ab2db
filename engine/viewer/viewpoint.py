"""Between the browser's camera (viser) and recon's ``Camera``, and the view a target opens on.

viser and recon share OpenCV axes (x right, y down, z forward). A viser pose is camera-to-world: ``wxyz``
rotates camera axes into world axes and ``position`` is the camera centre; its ``fov`` is vertical, in
radians. The viewer's world is the model's normalised coordinates.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from recon.engine.render.path_file import camera_from_fov
from recon.engine.render.paths import look_target, mean_up
from recon.engine.scene.camera import Camera


@dataclass(frozen=True)
class Pose:
    """A viser camera pose: camera-to-world rotation ``wxyz`` [4], centre ``position`` [3], vertical ``fov``."""

    wxyz: np.ndarray
    position: np.ndarray
    fov: float


def camera_from_pose(pose: Pose, width: int, height: int) -> Camera:
    """The pinhole camera [width x height] that the browser shows for ``pose``."""
    from viser.transforms import SO3

    c2w = np.eye(4)
    c2w[:3, :3] = SO3(np.asarray(pose.wxyz, dtype=np.float64)).as_matrix()
    c2w[:3, 3] = pose.position
    return camera_from_fov(np.linalg.inv(c2w), pose.fov, width, height)


def pose_from_camera(camera: Camera) -> Pose:
    """The viser pose of ``camera`` (its vertical field of view from ``fy`` and its height)."""
    from viser.transforms import SO3

    c2w = camera.camera_to_world
    return Pose(wxyz=SO3.from_matrix(c2w[:3, :3]).wxyz, position=c2w[:3, 3].copy(),
                fov=2.0 * math.atan(0.5 * camera.height / camera.fy))


@dataclass(frozen=True)
class HomeView:
    """Where the browser opens: camera centre, the point it looks at, the world's up and a vertical fov."""

    position: np.ndarray
    look_at: np.ndarray
    up: np.ndarray
    fov: float


def home_view(cameras: list[Camera], points: np.ndarray | None, up: np.ndarray | None = None) -> HomeView:
    """The first camera's view when there are cameras; else a view from outside ``points`` (robust centre and
    extent), looking at their middle, from 2.5 extents away; else the unit sphere from 2.5 units."""
    if cameras:
        first = cameras[0]
        target = look_target(cameras)
        forward = first.camera_to_world[:3, 2]
        distance = max(float(np.dot(target - first.center, forward)), 1e-3)
        return HomeView(position=first.center, look_at=first.center + distance * forward, up=mean_up(cameras),
                        fov=pose_from_camera(first).fov)
    up = np.array([0.0, 0.0, 1.0]) if up is None else np.asarray(up, dtype=np.float64)
    if points is not None and len(points):
        center = np.median(points, axis=0)
        extent = float(np.percentile(np.linalg.norm(points - center, axis=1), 90)) or 1.0
    else:
        center, extent = np.zeros(3), 1.0
    side = np.cross(up, [1.0, 0.0, 0.0] if abs(up[0]) < 0.9 else [0.0, 1.0, 0.0])
    side /= np.linalg.norm(side)
    position = center + 2.5 * extent * (side + 0.3 * up) / np.linalg.norm(side + 0.3 * up)
    return HomeView(position=position, look_at=center, up=up, fov=math.radians(50.0))

