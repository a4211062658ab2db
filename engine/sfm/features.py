"""Cameras and SIFT features into a COLMAP database, resumable image by image.

Images of one size and one EXIF focal length share a camera (a phone's photos, a video's frames);
each group is imported with its focal prior when EXIF gave one, else with COLMAP's default guess
(1.2 times the larger side, refined by bundle adjustment). SIFT then runs in chunks so that the
progress bar moves; COLMAP skips images whose features the database already holds, which makes a
rerun after an interruption resume where it stopped.
"""
from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

from recon.engine.sfm.photos import Photo

CAMERA_MODELS = ("auto", "SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV", "FULL_OPENCV")
# With this many images sharing a camera, four distortion terms and two focal lengths are well determined.
RICH_CAMERA_IMAGES = 50


def camera_model_for(requested: str, images: int) -> str:
    """The COLMAP model of a camera shared by ``images`` images: ``requested`` unless ``auto``, which is
    SIMPLE_RADIAL (COLMAP's default) for fewer than ``RICH_CAMERA_IMAGES`` images, else OPENCV."""
    if requested != "auto":
        return requested
    return "SIMPLE_RADIAL" if images < RICH_CAMERA_IMAGES else "OPENCV"


def camera_groups(photos: list[Photo]) -> list[list[Photo]]:
    """Photos grouped by (width, height, focal prior rounded to 0.1 px), in order of first appearance."""
    groups: dict[tuple, list[Photo]] = defaultdict(list)
    for photo in photos:
        groups[(photo.width, photo.height, None if photo.focal is None else round(photo.focal, 1))].append(photo)
    return list(groups.values())


def sift_device():
    """pycolmap's device for SIFT: the GPU only where this pycolmap build has CUDA (it then falls back to
    the CPU by itself when no GPU is present)."""
    import pycolmap

    return pycolmap.Device.auto if pycolmap.has_cuda else pycolmap.Device.cpu


def import_cameras(database: Path, image_dir: Path, photos: list[Photo], camera_model: str) -> None:
    """Add every photo not yet in ``database``, with one camera per group of ``camera_groups``."""
    import pycolmap

    db = pycolmap.Database.open(database)
    try:
        known = {image.name for image in db.read_all_images()}
    finally:
        db.close()
    for group in camera_groups(photos):
        model = camera_model_for(camera_model, len(group))
        names = [p.name for p in group if p.name not in known]
        if not names:
            continue
        reader = pycolmap.ImageReaderOptions()
        reader.camera_model = model
        first = group[0]
        if first.focal is not None:
            camera = pycolmap.Camera.create_from_model_name(1, model, first.focal, first.width, first.height)
            reader.camera_params = camera.params_to_string()
        pycolmap.import_images(database, image_dir, camera_mode=pycolmap.CameraMode.SINGLE,
                               image_names=names, options=reader)


def extract_features(database: Path, image_dir: Path, names: list[str], *, max_image_size: int,
                     progress: bool = True) -> None:
    """SIFT features of ``names`` (already imported) into ``database``, skipping images that have them."""
    import pycolmap
    from tqdm import tqdm

    todo = [name for name in names if name not in images_with_features(database)]
    options = pycolmap.FeatureExtractionOptions()
    options.max_image_size = max_image_size
    options.num_threads = -1
    chunk = max(4, 2 * (os.cpu_count() or 1))
    with tqdm(total=len(names), initial=len(names) - len(todo), desc="features", unit="image", leave=False,
              disable=not progress) as bar:
        for start in range(0, len(todo), chunk):
            part = todo[start:start + chunk]
            pycolmap.extract_features(database, image_dir, image_names=part, camera_mode=pycolmap.CameraMode.AUTO,
                                      extraction_options=options, device=sift_device())
            bar.update(len(part))


def images_with_features(database: Path) -> set[str]:
    """Names of the images whose keypoints and descriptors ``database`` holds."""
    import pycolmap

    db = pycolmap.Database.open(database)
    try:
        return {image.name for image in db.read_all_images()
                if db.exists_keypoints(image.image_id) and db.exists_descriptors(image.image_id)}
    finally:
        db.close()
