"""Photo intake for SfM: check every photo decodes, apply its EXIF orientation, read its focal length.

Photos are copied unchanged into the scene's ``images/`` (EXIF kept), except those whose EXIF
orientation is not "upright": they are turned upright and re-encoded (JPEG quality 95, PNG lossless),
since COLMAP, like most tools downstream, reads pixels as stored. Names with white space get ``_``
(COLMAP's pair lists are split on spaces). Files that are not images, or that do not decode, are
skipped; the caller warns once naming them.

The focal length prior in pixels comes from EXIF, preferring the 35 mm equivalent (defined on the
diagonal: ``f_px = f_35 * diagonal_px / 43.27``), else the focal length in mm with the focal-plane
resolution. Values outside COLMAP's plausible range (0.1 to 10 times the larger image side) are ignored.
"""
from __future__ import annotations

import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from recon.engine.sfm.source import IMAGE_SUFFIXES

FULL_FRAME_DIAGONAL_MM = math.hypot(36.0, 24.0)
JPEG_QUALITY = 95
_ORIENTATION = 0x0112
_EXIF_IFD = 0x8769
_FOCAL_LENGTH = 0x920A
_FOCAL_35MM = 0xA405
_FOCAL_PLANE_X_RESOLUTION = 0xA20E
_FOCAL_PLANE_UNIT = 0xA210
_EXIF_IMAGE_WIDTH = 0xA002
_UNIT_MM = {2: 25.4, 3: 10.0, 4: 1.0, 5: 1e-3}  # inch, cm, mm, micrometre


@dataclass(frozen=True)
class Photo:
    """A photo as it lies in ``images/``: name, size after orientation, EXIF focal prior in pixels (or
    None), the source file's name and whether it was turned upright."""

    name: str
    width: int
    height: int
    focal: float | None
    source: str
    rotated: bool = False


def exif_focal_pixels(exif, stored_width: int, width: int, height: int) -> float | None:
    """Focal length in pixels from a Pillow ``Image.Exif`` of an image of ``width`` x ``height`` (after
    orientation; ``stored_width`` is the width as stored, which the focal-plane resolution refers to)."""
    tags = exif.get_ifd(_EXIF_IFD)
    focal = None
    f35 = _number(tags.get(_FOCAL_35MM))
    if f35:
        focal = f35 * math.hypot(width, height) / FULL_FRAME_DIAGONAL_MM
    else:
        f_mm = _number(tags.get(_FOCAL_LENGTH))
        resolution = _number(tags.get(_FOCAL_PLANE_X_RESOLUTION))
        unit = _UNIT_MM.get(int(_number(tags.get(_FOCAL_PLANE_UNIT)) or 2))
        if f_mm and resolution and unit:
            focal = f_mm * resolution / unit
            exif_width = _number(tags.get(_EXIF_IMAGE_WIDTH))
            if exif_width:  # the photo was resized after capture
                focal *= stored_width / exif_width
    largest = max(width, height)
    if focal is None or not 0.1 * largest < focal < 10.0 * largest:
        return None
    return focal


def intake_photos(folder: Path, out_dir: Path, *, progress: bool = True) -> tuple[list[Photo], list[str]]:
    """Copy the photos of ``folder`` (sorted by name) into ``out_dir``; returns (photos, skipped), where
    ``skipped`` names each file left out with the reason."""
    from PIL import Image, ImageOps
    from tqdm import tqdm

    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    out_dir.mkdir(parents=True, exist_ok=True)
    photos: list[Photo] = []
    skipped: list[str] = []
    taken: set[str] = set()
    for path in tqdm(files, desc="photos", unit="image", leave=False, disable=not progress):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append(f"{path.name} (not a supported image)")
            continue
        try:
            with Image.open(path) as im:
                im.load()
                exif = im.getexif()
                stored_width = im.width
                upright = exif.get(_ORIENTATION, 1) in (0, 1)
                image = im.copy() if upright else ImageOps.exif_transpose(im)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            reason = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
            skipped.append(f"{path.name} (does not decode: {reason})")
            continue
        name = _unique_name(path.name, taken)
        if upright:
            shutil.copyfile(path, out_dir / name)
        else:
            image.save(out_dir / name, **_save_options(path, image))
        focal = exif_focal_pixels(exif, stored_width, image.width, image.height)
        photos.append(Photo(name, image.width, image.height, focal, path.name, rotated=not upright))
    return photos, skipped


def _save_options(path: Path, image) -> dict:
    """Pillow save options keeping the format and the EXIF (orientation now reset) of ``path``."""
    options = {"exif": image.getexif().tobytes()}
    if path.suffix.lower() in (".jpg", ".jpeg"):
        options["quality"] = JPEG_QUALITY
    return options


def _unique_name(name: str, taken: set[str]) -> str:
    """``name`` with white space as ``_``, suffixed ``-1``, ``-2``, ... if that name is taken."""
    clean = re.sub(r"\s+", "_", name)
    stem, suffix = Path(clean).stem, Path(clean).suffix
    candidate, count = clean, 0
    while candidate.lower() in taken:
        count += 1
        candidate = f"{stem}-{count}{suffix}"
    taken.add(candidate.lower())
    return candidate


def _number(value) -> float | None:
    """An EXIF rational or integer as float; None when absent or zero."""
    try:
        number = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return number if number > 0 and math.isfinite(number) else None
