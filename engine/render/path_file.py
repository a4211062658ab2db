"""Camera path files: the cameras of a video as JSON, in nerfstudio's ``camera_path.json`` layout.

``recon view`` writes them (its *Save* button) and ``recon render RUN --path FILE.json`` renders them::

    {"camera_type": "perspective", "render_width": W, "render_height": H, "fps": 30.0, "seconds": 4.0,
     "coordinates": "original",
     "keyframes":   [{"camera_to_world": [16 floats], "fov": 50.0, "aspect": 1.33}, ...],
     "camera_path": [{"camera_to_world": [16 floats], "fov": 50.0, "aspect": 1.33}, ...]}

``camera_to_world`` is a row-major 4x4 in the OpenGL convention (x right, y up, z backwards), as nerfstudio
writes it; ``fov`` is the vertical field of view in degrees; pixels are square and the principal point is the
image centre. Poses are in the data's own coordinates (recon's files say so with ``"coordinates":
"original"``), so one file serves every run of the same data. ``camera_path`` holds every frame to render;
``keyframes`` only records what the path was made from.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from recon.engine.errors import ReconError
from recon.engine.io.atomic import write_json_atomic
from recon.engine.scene.camera import Camera, opengl_to_opencv
from recon.engine.scene.scene import Normalization

_GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])


def is_path_file(name: str) -> bool:
    """True when a ``--path`` value names a camera path file rather than a built-in path."""
    return name.lower().endswith(".json")


def camera_from_fov(world_to_camera: np.ndarray, fov_y: float, width: int, height: int) -> Camera:
    """A pinhole camera of vertical field of view ``fov_y`` (radians), square pixels, centred principal point."""
    focal = 0.5 * height / math.tan(0.5 * fov_y)
    return Camera(width=int(width), height=int(height), fx=focal, fy=focal, cx=0.5 * width, cy=0.5 * height,
                  world_to_camera=np.asarray(world_to_camera, dtype=np.float64))


def _entry(camera: Camera, normalization: Normalization) -> dict[str, Any]:
    c2w = camera.camera_to_world.copy()
    c2w[:3, 3] = normalization.to_original(c2w[:3, 3])
    return {"camera_to_world": (c2w @ _GL_TO_CV).reshape(-1).tolist(),
            "fov": math.degrees(2.0 * math.atan(0.5 * camera.height / camera.fy)),
            "aspect": camera.width / camera.height}


def write_camera_path(path: str | os.PathLike, cameras: list[Camera], normalization: Normalization, *,
                      keyframes: list[Camera] | None = None, fps: float = 30.0) -> None:
    """Write ``cameras`` (normalised coordinates, one image size) as a camera path file, atomically."""
    if not cameras:
        raise ReconError(f"{path}: a camera path needs at least one camera")
    sizes = {(c.width, c.height) for c in cameras}
    if len(sizes) != 1:
        raise ReconError(f"{path}: a camera path has one image size, got {sorted(sizes)}")
    (width, height), = sizes
    write_json_atomic(Path(path), {
        "camera_type": "perspective", "render_width": width, "render_height": height, "fps": float(fps),
        "seconds": len(cameras) / float(fps), "coordinates": "original",
        "keyframes": [_entry(c, normalization) for c in (keyframes or [])],
        "camera_path": [_entry(c, normalization) for c in cameras],
    })


def read_camera_path(path: str | os.PathLike, normalization: Normalization) -> tuple[list[Camera], float]:
    """The cameras (in ``normalization``'s coordinates) and frame rate of a camera path file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ReconError(f"{path}: no such camera path file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReconError(f"{path}: cannot read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise ReconError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
    try:
        width, height = int(data["render_width"]), int(data["render_height"])
        frames = data["camera_path"]
        fps = float(data.get("fps", 30.0))
        cameras = []
        for frame in frames:
            c2w = np.asarray(frame["camera_to_world"], dtype=np.float64).reshape(4, 4)
            fov = math.radians(float(frame["fov"]))
            if not np.isfinite(c2w).all() or not 0.0 < fov < math.pi:
                raise ValueError(f"frame {len(cameras)} has a non-finite pose or a field of view outside (0, 180)")
            w2c = opengl_to_opencv(c2w)
            cameras.append(camera_from_fov(normalization.world_to_camera(w2c), fov, width, height))
    except (KeyError, TypeError, ValueError) as exc:
        raise ReconError(f"{path}: not a camera path file ({type(exc).__name__}: {exc})") from None
    if not cameras or width < 1 or height < 1:
        raise ReconError(f"{path}: the camera path has no frames or no image size")
    return cameras, fps
