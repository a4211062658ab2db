"""Scenes whose cameras have lens distortion, made ready for a model: undistorted once, or used as they are.

* Rasterized models (Gaussians) need pinhole cameras: ``undistort_scene`` resamples every distorted image
  once into its ideal pinhole camera (``undistort.undistorted_camera``: COLMAP's choice, valid region kept,
  field of view capped by ``max_fov``), bicubic (RGBA premultiplied), with its foreground mask (nearest)
  and a *valid mask* of the output pixels that have a source pixel; the loss and the metrics ignore the
  others (``Scene.load_valid``). Results are cached on disk (``cache_root()``), one folder per frame named
  by a hash of the source image (path, size, modification time), its mask, the camera and the target
  camera, so a later fit of the same scene reads them back at once and a changed image or camera misses.
* Ray-based models (NeRF) keep the distorted cameras: their rays go through the exact lens model
  (``models.rays.camera_rays``) and they are evaluated on the original pixels.
* ``--distortion ignore`` drops the coefficients (every camera treated as a pinhole), for comparison.

Cached images are 8-bit PNGs, as COLMAP's undistorter writes them (rounding error at most 1/510).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from recon.engine.errors import ReconError
from recon.engine.scene.camera import Camera
from recon.engine.scene.scene import Frame, Scene
from recon.engine.scene.undistort import (field_of_view, pinhole_camera, resample, undistorted_camera,
                                          undistortion_map, valid_region)

CACHE_ENV = "RECON_CACHE"  # folder of recon's caches (default ~/.cache/recon)
DISTORTION = ("correct", "ignore")
RAY_MODELS = ("nerf",)  # models that trace exact rays through the lens instead of undistorting images
CACHE_VERSION = 2
_log = logging.getLogger("recon.scene")


def cache_root() -> Path:
    """Where undistorted images are cached: ``$RECON_CACHE/undistorted`` (default ``~/.cache/recon``)."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "recon") / "undistorted"


@dataclass(frozen=True)
class LensPlan:
    """What undistortion does to the frames sharing one distorted camera's intrinsics."""

    source: Camera  # the distorted camera (one of the frames')
    target: Camera  # the ideal pinhole camera its images are resampled into
    kept: float  # fraction of the source pixels the target sees
    frames: int  # how many frames share it

    def describe(self) -> str:
        fov_x, fov_y = field_of_view(self.target)
        return (f"{self.source.model} {self.source.width}x{self.source.height} ({self.frames} frames) -> pinhole "
                f"{self.target.width}x{self.target.height}, field of view {fov_x:.1f} x {fov_y:.1f} deg, "
                f"keeps {100 * self.kept:.1f}% of the pixels")


@dataclass(frozen=True)
class UndistortStats:
    """How ``undistort_scene`` went: the plans, and how many frames were resampled or read from the cache."""

    plans: tuple[LensPlan, ...]
    resampled: int
    cached: int


def _intrinsics(camera: Camera) -> tuple:
    return (camera.model, camera.width, camera.height, camera.fx, camera.fy, camera.cx, camera.cy,
            tuple(sorted(camera.distortion.items())))


def lens_plans(scene: Scene, max_fov: float = 120.0) -> list[LensPlan]:
    """One plan per distinct distorted camera of ``scene`` (none for an all-pinhole scene)."""
    groups: dict[tuple, list[Camera]] = {}
    for frame in scene.frames:
        if not frame.camera.is_pinhole:
            groups.setdefault(_intrinsics(frame.camera), []).append(frame.camera)
    plans = []
    for cameras in groups.values():
        target, kept = undistorted_camera(cameras[0], max_fov)
        plans.append(LensPlan(cameras[0], target, kept, len(cameras)))
    return plans


def _file_stamp(path: Path | None) -> Any:
    if path is None:
        return None
    stat = Path(path).stat()
    return [str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns]


def frame_cache_key(frame: Frame, target: Camera) -> str:
    """The cache folder name of ``frame`` resampled into ``target``: a hash of everything the result depends on."""
    record = {"version": CACHE_VERSION, "image": _file_stamp(frame.image_path), "mask": _file_stamp(frame.mask_path),
              "camera": list(_intrinsics(frame.camera)), "target": list(_intrinsics(target))}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:24]


def undistort_scene(scene: Scene, *, max_fov: float = 120.0, cache: Path | None = None) -> tuple[Scene, UndistortStats]:
    """``scene`` with every distorted frame replaced by its undistorted, cached copy (pinhole camera, same pose).

    Pinhole frames are left as they are. Undistorted frames' ``image_path`` and ``mask_path`` point into the
    cache (file stems kept) and ``valid_path`` at their valid mask.
    """
    from recon.engine.io.images import write_image

    cache = cache_root() if cache is None else Path(cache)
    plans = lens_plans(scene, max_fov)
    by_camera = {_intrinsics(p.source): p for p in plans}
    maps: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
    frames, resampled, cached = [], 0, 0
    for index, frame in enumerate(scene.frames):
        if frame.camera.is_pinhole:
            frames.append(frame)
            continue
        key = _intrinsics(frame.camera)
        target = by_camera[key].target.with_pose(frame.camera.world_to_camera)
        folder = cache / frame_cache_key(frame, target)
        stem = Path(frame.image_path).stem
        image_path, valid_path = folder / f"{stem}.png", folder / "valid" / f"{stem}.png"
        mask_path = None if frame.mask_path is None else folder / "masks" / f"{stem}.png"
        if image_path.is_file():
            cached += 1
        else:
            if key not in maps:
                source = undistortion_map(frame.camera, target)
                maps[key] = (source, valid_region(source, frame.camera, target))
            source, valid = maps[key]
            write_image(valid_path, valid.astype(np.float32))
            mask = scene.load_mask(index)
            if mask_path is not None and mask is not None:
                write_image(mask_path, resample(mask, source, frame.camera, mode="nearest"))
            write_image(image_path, _resample_image(scene.load_image(index, keep_alpha=True), source, frame.camera))
            resampled += 1  # the image is written last: its presence marks a complete entry
        frames.append(replace(frame, camera=target, image_path=image_path, mask_path=mask_path, valid_path=valid_path))
    stats = UndistortStats(tuple(plans), resampled, cached)
    if plans:
        _log.info("recon: undistorted %d frames (%d resampled, %d from the cache %s)", resampled + cached,
                  resampled, cached, cache)
    return replace(scene, frames=frames), stats


def _resample_image(image: np.ndarray, source: np.ndarray, camera: Camera) -> np.ndarray:
    """Bicubic resampling of an RGB or straight-alpha RGBA image (RGBA premultiplied while resampling)."""
    if image.shape[-1] != 4:
        return np.clip(resample(image, source, camera), 0.0, 1.0)
    premultiplied = np.concatenate([image[..., :3] * image[..., 3:], image[..., 3:]], axis=-1)
    out = resample(premultiplied, source, camera)
    alpha = np.clip(out[..., 3:], 0.0, 1.0)
    rgb = np.where(alpha > 1e-6, np.clip(out[..., :3], 0.0, alpha) / np.maximum(alpha, 1e-6), 0.0)
    return np.concatenate([rgb, alpha], axis=-1)


def photo_sizes(captured: Scene, fitted: Scene) -> dict[tuple[int, int], tuple[int, int]]:
    """For each image size (width, height) of ``fitted``'s undistorted frames, the size of the photos resampled
    into it (``captured``: the same scene before undistortion). Density control reads it (``photo_size``)."""
    return {(f.camera.width, f.camera.height): (c.camera.width, c.camera.height)
            for c, f in zip(captured.frames, fitted.frames) if f.camera is not c.camera}


def ignore_distortion(scene: Scene) -> Scene:
    """``scene`` with every camera's distortion dropped (its images used as if a pinhole took them)."""
    return replace(scene, frames=[replace(f, camera=pinhole_camera(f.camera)) for f in scene.frames])


def scene_for_model(scene: Scene, model: str, distortion: str = "correct", max_fov: float = 120.0,
                    cache: Path | None = None) -> tuple[Scene, UndistortStats | None]:
    """The scene as ``model`` fits it: undistorted (rasterized models), exact lenses (``RAY_MODELS``) or,
    with ``distortion="ignore"``, every camera a pinhole. Stats come back when images were undistorted."""
    if distortion not in DISTORTION:
        raise ReconError(f"--distortion must be one of {', '.join(DISTORTION)}, got {distortion!r}")
    if distortion == "ignore":
        return ignore_distortion(scene), None
    if model in RAY_MODELS or all(f.camera.is_pinhole for f in scene.frames):
        return scene, None
    return undistort_scene(scene, max_fov=max_fov, cache=cache)


def load_fit_scene(source: str | Path, model: str, config: dict[str, Any],
                   background: tuple[float, float, float] | None = None) -> Scene:
    """The scene at ``source`` loaded as a fit with ``config`` (a run's saved options) loaded it: downscale,
    split and lens handling; so renders, edits and the viewer use the cameras the model was fitted to."""
    from recon.engine.scene.load import load_scene

    options = {} if background is None else {"background": background}
    scene = load_scene(source, downscale=int(config.get("downscale", 1)), test_every=int(config.get("test_every", 8)),
                       **options)
    scene, _ = scene_for_model(scene, model, str(config.get("distortion", "correct")),
                               float(config.get("max_fov", 120.0)))
    return scene
