"""What ``recon view TARGET`` opens: a run directory, a splat file, or a scene folder.

* a run directory (``config.json``): its model, any kind; photos from the scene it was fitted on if present;
* a splat file (``.ply``, ``.splat``, ``.spz``; 3DGS or compressed PLY): the Gaussians, with the cameras of
  ``--scene`` when given;
* a scene folder (COLMAP or transforms.json): its cameras and photos, and its sparse points drawn as small
  Gaussians (at most ``MAX_POINTS``, a random subset beyond).

Anything else is refused with one ``ReconError`` line.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from recon.engine.errors import ReconError
from recon.engine.render.sources import RenderSource, load_run_source, load_splat_source

MAX_POINTS = 20_000


@dataclass
class ViewTarget:
    """A ``RenderSource`` (``model`` None for a scene without points) with what the viewer needs besides."""

    source: RenderSource
    label: str
    points: np.ndarray | None  # [N, 3] normalised, for a home view when there are no cameras
    default_save_dir: Path


def open_target(path: str | Path, device: torch.device, scene_dir: str | Path | None = None) -> ViewTarget:
    """Open ``path`` for viewing; ``ReconError`` when it is none of the kinds above."""
    from recon.engine.io.splat_files import SPLAT_SUFFIXES, is_splat_file

    path = Path(path)
    if not path.exists():
        raise ReconError(f"{path}: no such file or folder")
    if path.is_file():
        if not is_splat_file(path):
            raise ReconError(f"{path}: recon view shows run directories, scene folders and splat files "
                             f"({', '.join(SPLAT_SUFFIXES)}), not {path.suffix or 'this file'}")
        source = load_splat_source(path, scene_dir, device)
        means = source.model.params["means"].detach().cpu().numpy()
        return ViewTarget(source, path.name, means, Path.cwd() / "views")
    if (path / "config.json").is_file():
        source = load_run_source(path, device, with_scene=True)
        return ViewTarget(source, f"{path.resolve().name} ({source.kind})", None, path / "views")
    return _scene_target(path, device)


def _scene_target(path: Path, device: torch.device) -> ViewTarget:
    from recon.engine.models.gaussians import GaussianModel
    from recon.engine.scene import load_scene

    try:
        scene = load_scene(path)
    except ReconError as exc:
        raise ReconError(f"{path}: not a run directory (no config.json) nor a scene folder ({exc})") from None
    train, test = [f.camera for f in scene.train_frames], [f.camera for f in scene.test_frames]
    model, points = None, scene.points
    if points is not None and len(points):
        colors = (np.full((len(points), 3), 160, np.uint8) if scene.point_colors is None else scene.point_colors)
        if len(points) > MAX_POINTS:
            keep = np.random.default_rng(0).choice(len(points), MAX_POINTS, replace=False)
            points, colors = points[keep], colors[keep]
        model = GaussianModel.from_points(torch.as_tensor(points, dtype=torch.float32, device=device),
                                          torch.as_tensor(colors, dtype=torch.float32, device=device) / 255.0,
                                          sh_degree=0, init_opacity=0.95, init_scale=0.3,
                                          normalization=scene.normalization, background=scene.background)
        scales = model.params["scales"].data
        scales.clamp_(max=float(scales.median()) + math.log(3.0))  # isolated points stay points, not fog
    source = RenderSource(model=model, kind="points", train=train, test=test, normalization=scene.normalization,
                          scene=scene)
    return ViewTarget(source, f"{scene.name} ({scene.source_format} scene)", points, Path.cwd() / "views")
