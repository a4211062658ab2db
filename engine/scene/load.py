"""``load_scene``: detect a scene folder's format, load it, check its images and normalise it.

Formats, in the order they are looked for: a COLMAP model (``sparse/0``, ``sparse`` or the folder
itself), then ``transforms.json`` / ``transforms_train.json`` (Blender, instant-ngp or nerfstudio). A
Blender-dialect (or, for a demo with a real lens, nerfstudio-dialect) folder with a ``geometry.json``
beside it is recon's demo scene (``source_format`` ``demo``).
"""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from recon.engine.errors import ReconError
from recon.engine.io.images import image_size
from recon.engine.scene.camera import Camera
from recon.engine.scene.colmap import find_model_dir, load_colmap
from recon.engine.scene.scene import Frame, Scene
from recon.engine.scene.transforms_json import has_transforms, load_transforms

DEMO_MARKER = "geometry.json"
DOWNSCALES = (1, 2, 4, 8)
_log = logging.getLogger("recon.scene")


def load_scene(path: str | Path, *, downscale: int = 1, test_every: int = 8,
               background: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> Scene:
    """Load the scene in folder ``path``, normalised (camera centres in the unit sphere).

    Args:
        path: a COLMAP folder, a transforms.json folder or a recon demo scene.
        downscale: load images at 1/``downscale`` resolution, from ``images_<downscale>/`` (or the like)
            when such a folder exists, else by resizing on load.
        test_every: hold out every N-th frame for testing when the data has no official split (0: none).
        background: RGB in [0, 1] that RGBA images are composited on.

    Frames whose image file is missing are skipped with one warning; every image's header must agree
    with its camera's size. Bad input raises ``ReconError`` naming the file.
    """
    root = Path(path)
    if not root.is_dir():
        raise ReconError(f"{root}: {'not a folder' if root.exists() else 'no such folder'}")
    if downscale not in DOWNSCALES:
        raise ReconError(f"{root}: downscale must be one of {', '.join(map(str, DOWNSCALES))}, not {downscale}")
    scene = read_scene(root, test_every=test_every, background=background)
    scene = _present_frames(scene, downscale)
    frames = [_checked_frame(frame, downscale) for frame in scene.frames]
    return replace(scene, frames=frames, downscale=downscale).normalized()


def read_scene(root: Path, *, test_every: int = 8, background: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> Scene:
    """The scene of a folder as its format stores it: original coordinates, full-resolution cameras,
    image files not checked."""
    model_dir = find_model_dir(root)
    if model_dir is not None:
        return load_colmap(root, model_dir, test_every=test_every, background=background)
    if has_transforms(root):
        scene = load_transforms(root, test_every=test_every, background=background)
        if scene.source_format in ("blender", "nerfstudio") and (root / DEMO_MARKER).is_file():
            scene = replace(scene, source_format="demo")
        return scene
    raise ReconError(f"{root}: no scene found (looked for a COLMAP model in sparse/0, sparse/ or the folder "
                     f"itself, and for transforms.json or transforms_train.json)")


def downscaled_path(path: Path, factor: int) -> Path | None:
    """The copy of ``path`` in a sibling ``<folder>_<factor>`` of its folder or of that folder's parent, as
    COLMAP and nerfstudio datasets store them (``images/a.jpg`` -> ``images_4/a.jpg``); None if none exists."""
    if factor == 1:
        return None
    for folder in list(path.parents)[:2]:
        candidate = folder.parent / f"{folder.name}_{factor}" / path.relative_to(folder)
        if candidate.is_file():
            return candidate
    return None


def _present_frames(scene: Scene, downscale: int) -> Scene:
    """Drop frames whose image is missing (one warning), remapping the split; error when none remain."""
    present = [i for i, f in enumerate(scene.frames)
               if f.image_path.is_file() or downscaled_path(f.image_path, downscale) is not None]
    kept = set(present)
    missing = [f.image_path for i, f in enumerate(scene.frames) if i not in kept]
    if not present:
        raise ReconError(f"{scene.root}: none of the {len(scene.frames)} images exist "
                         f"(first: {missing[0]})")
    if not missing:
        return scene
    shown = ", ".join(str(p) for p in missing[:3]) + (", ..." if len(missing) > 3 else "")
    _log.warning("recon: warning: %s: skipping %d of %d frames whose image is missing: %s",
                 scene.root, len(missing), len(scene.frames), shown)
    new_index = {old: new for new, old in enumerate(present)}
    return replace(scene, frames=[scene.frames[i] for i in present],
                   train_indices=[new_index[i] for i in scene.train_indices if i in new_index],
                   test_indices=[new_index[i] for i in scene.test_indices if i in new_index])


def _checked_frame(frame: Frame, downscale: int) -> Frame:
    """The frame at ``downscale``: its image header must match the camera (or its downscaled size)."""
    camera = frame.camera
    small = downscaled_path(frame.image_path, downscale)
    if small is None:
        size = image_size(frame.image_path)
        if size != (camera.width, camera.height):
            raise ReconError(f"{frame.image_path}: image is {size[0]}x{size[1]} but its camera is "
                             f"{camera.width}x{camera.height}")
        return replace(frame, camera=camera.scaled(downscale)) if downscale != 1 else frame
    size = image_size(small)
    expected = (camera.width / downscale, camera.height / downscale)
    if abs(size[0] - expected[0]) >= 1 or abs(size[1] - expected[1]) >= 1:
        raise ReconError(f"{small}: image is {size[0]}x{size[1]} but its {camera.width}x{camera.height} camera "
                         f"downscaled {downscale}x is {expected[0]:g}x{expected[1]:g}")
    mask = None if frame.mask_path is None else downscaled_path(frame.mask_path, downscale) or frame.mask_path
    return replace(frame, image_path=small, camera=_resized(camera, size), mask_path=mask)


def _resized(camera: Camera, size: tuple[int, int]) -> Camera:
    """``camera`` for the same view at exactly ``size`` = (width, height) pixels."""
    sx, sy = size[0] / camera.width, size[1] / camera.height
    return replace(camera, width=size[0], height=size[1], fx=camera.fx * sx, fy=camera.fy * sy,
                   cx=camera.cx * sx, cy=camera.cy * sy)
