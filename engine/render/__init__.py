"""Rendering runs along camera paths: stored cameras, orbit/spiral/interpolate/test paths, frame streams."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from recon.engine.scene.camera import Camera


def run_cameras(run_dir: Path, model: Any, state: dict[str, Any]) -> tuple[list[Camera], list[Camera]]:
    """The (train, test) cameras of a run, in the model's normalised coordinates.

    Taken from the model (``model.cameras``) or the checkpoint (``state["cameras"]``, lists of
    ``camera_to_dict``), else from the scene named in the run's config.
    """
    from recon.engine.render.cameras import camera_from_dict

    stored = getattr(model, "cameras", None)
    if not stored and state.get("cameras"):
        stored = {split: [camera_from_dict(d) for d in cams] for split, cams in state["cameras"].items()}
    if stored and (stored.get("train") or stored.get("test")):
        return list(stored.get("train", [])), list(stored.get("test", []))
    from recon.engine.scene.undistorted import load_fit_scene
    from recon.engine.train.rundir import read_config

    config = read_config(run_dir)
    scene = load_fit_scene(config["source"], state["kind"], config)
    return [f.camera for f in scene.train_frames], [f.camera for f in scene.test_frames]


def render_frames(model: Any, cameras: list[Camera], channel: str = "rgb") -> Iterator[np.ndarray]:
    """Render each camera; yields float [H, W, 3] colour or [H, W, 1] depth images in [0, 1].

    Depth maps show near as bright, over the range of the first frame's covered pixels (2nd to 98th
    percentile, widened by 10%), so brightness means the same in every frame.
    """
    depth_range = None
    for camera in cameras:
        with torch.no_grad():
            out = model.render(camera)
        if channel == "rgb":
            yield out["rgb"].detach().cpu().numpy()
            continue
        depth, alpha = out["depth"].detach().cpu().numpy(), out["alpha"].detach().cpu().numpy()
        depth_range = depth_range or covered_depth_range(depth, alpha)
        yield depth_image(depth, alpha, depth_range)


def covered_depth_range(depth: np.ndarray, alpha: np.ndarray) -> tuple[float, float]:
    """(near, far) of the covered pixels (alpha > 0.5) of a depth map: 2nd to 98th percentile, widened by 10%."""
    covered = depth[alpha > 0.5]
    near, far = np.percentile(covered, [2, 98]) if covered.size else (0.0, 1.0)
    pad = 0.1 * max(far - near, 1e-6)
    return float(near - pad), float(far + pad)


def depth_image(depth: np.ndarray, alpha: np.ndarray, depth_range: tuple[float, float]) -> np.ndarray:
    """Depth [H, W, 1] as brightness in [0, 1] over ``depth_range``: near bright, far and uncovered dark."""
    near, far = depth_range
    return np.clip((far - depth) / (far - near), 0.0, 1.0) * alpha
