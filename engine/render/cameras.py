"""Cameras stored with a run (checkpoint or JSON), so a run renders without its scene folder."""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from recon.engine.scene.camera import Camera


def camera_to_dict(camera: Camera) -> dict[str, Any]:
    """A JSON- and checkpoint-friendly dict of a camera."""
    return {"width": camera.width, "height": camera.height, "fx": camera.fx, "fy": camera.fy, "cx": camera.cx,
            "cy": camera.cy, "world_to_camera": np.asarray(camera.world_to_camera).tolist(), "model": camera.model,
            "distortion": dict(camera.distortion)}


def camera_from_dict(d: dict[str, Any]) -> Camera:
    """Inverse of ``camera_to_dict``."""
    return replace(Camera(width=int(d["width"]), height=int(d["height"]), fx=float(d["fx"]), fy=float(d["fy"]),
                          cx=float(d["cx"]), cy=float(d["cy"]), model=d.get("model", "PINHOLE"),
                          distortion=dict(d.get("distortion", {}))),
                   world_to_camera=np.asarray(d["world_to_camera"], dtype=np.float64))
