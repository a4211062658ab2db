"""What ``recon render`` and ``recon view`` show: a fitted run, or a splat file with (optionally) a scene.

Both give a ``RenderSource``: a model that renders ``Camera`` objects in normalised coordinates, the
train/test cameras, the normalisation back to the data's own coordinates and, where it is still on disk,
the scene whose photos the cameras took.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from recon.engine.errors import ReconError
from recon.engine.scene.camera import Camera
from recon.engine.scene.scene import Normalization, Scene


@dataclass
class RenderSource:
    """A renderable model with its cameras.

    Attributes:
        model: has ``render(camera, background=None) -> {"rgb", "depth", "alpha"}`` (see models/registry.py).
        kind: the model kind (``gaussians``, ``nerf``, ``sdf``, ``occupancy``) or ``points`` for a scene's
            sparse points shown as small Gaussians.
        train, test: cameras in the model's normalised coordinates (either may be empty).
        normalization: maps normalised coordinates back to the data's own.
        scene: the scene the cameras come from, when it is known and present (for photos), else None.
    """

    model: Any
    kind: str
    train: list[Camera]
    test: list[Camera]
    normalization: Normalization
    scene: Scene | None = None


def load_run_source(run_dir: str | Path, device: torch.device, *, with_cameras: bool = True,
                    with_scene: bool = False) -> RenderSource:
    """The newest checkpoint of a run directory, any model kind, with its cameras (``with_cameras``: those the
    model stores, else its scene's) and ``with_scene`` the scene it was fitted on (for its photos) when that
    folder is still there."""
    from recon.engine.models.registry import load_run
    from recon.engine.render import run_cameras

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReconError(f"{run_dir}: {'not a run directory' if run_dir.exists() else 'no such run directory'}")
    model, state = load_run(run_dir, device)
    has_cameras = with_cameras and state["kind"] in ("gaussians", "nerf")
    train, test = run_cameras(run_dir, model, state) if has_cameras else ([], [])
    return RenderSource(model=model, kind=state["kind"], train=train, test=test,
                        normalization=Normalization.from_dict(state["normalization"]),
                        scene=_run_scene(run_dir, state) if with_scene else None)


def _run_scene(run_dir: Path, state: dict[str, Any]) -> Scene | None:
    """The scene a run was fitted on, loaded as the fit loaded it, if its folder still holds it."""
    from recon.engine.scene.undistorted import load_fit_scene
    from recon.engine.train.rundir import read_config

    config = state.get("config") or read_config(run_dir)
    source = state.get("source") or config.get("source")
    if state["kind"] not in ("gaussians", "nerf") or not source or not Path(source).is_dir():
        return None
    try:
        return load_fit_scene(source, state["kind"], config)
    except ReconError:
        return None


def load_splat_source(path: str | Path, scene_dir: str | Path | None, device: torch.device) -> RenderSource:
    """A splat file of any format (``engine/io/splat_files.py``), with the cameras and normalisation of
    ``scene_dir`` when given (else none, and the file's own coordinates)."""
    from recon.engine.io.splat_files import read_splats
    from recon.engine.models.gaussians import GaussianModel
    from recon.engine.scene import load_scene
    from recon.engine.scene.undistorted import scene_for_model

    splats = read_splats(path)  # a bad file is refused before the scene is read
    if scene_dir is None:
        model = GaussianModel.from_splats(splats, None, device, antialiased=splats.antialiased)
        return RenderSource(model=model, kind="gaussians", train=[], test=[], normalization=Normalization())
    scene, _ = scene_for_model(load_scene(scene_dir), "gaussians")  # rasterized: undistorted pinhole cameras
    cameras = {"train": [f.camera for f in scene.train_frames], "test": [f.camera for f in scene.test_frames]}
    model = GaussianModel.from_splats(splats, scene.normalization, device, cameras=cameras,
                                      background=scene.background, antialiased=splats.antialiased)
    return RenderSource(model=model, kind="gaussians", train=cameras["train"], test=cameras["test"],
                        normalization=scene.normalization, scene=scene)
