"""Mask images: one reader for every format imageio reads, binarised at a stated threshold.

A mask file may be PNG, JPEG, WebP, TIFF or BMP; grey, grey+alpha, RGB or RGBA; 8 or 16 bit (or float
TIFF). Which channel holds the mask:

* the alpha channel when there is one and it is not fully opaque everywhere (a cut-out);
* otherwise the brightest colour channel (white or any colour on black is foreground).

Values are scaled to [0, 1] by the type's full range (255, 65535; floats as they are), except that a
lossless integer mask (PNG, TIFF, BMP) whose largest value is 1 is read as a 0/1 mask. Foreground is
``value >= threshold``; the default ``MASK_THRESHOLD`` = 0.5 sits midway between black and white, so
JPEG compression noise does not flip pixels away from edges: over 300 random binary masks at qualities
30-95 (grey and RGB) no pixel farther than one pixel from an edge flipped, while flat areas three pixels
from an edge deviated by up to 87 of 255 levels at quality 30 (38 at quality 75).

Masks are matched to images by stem whatever the extensions: ``a.png``, ``a.jpg`` and ``a.jpg.png`` are
all the mask of image ``a.jpg`` (the last form is what some tools write).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from recon.engine.errors import ReconError
from recon.engine.io.images import size_factor

MASK_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")
LOSSLESS_SUFFIXES = (".png", ".tif", ".tiff", ".bmp")
MASK_THRESHOLD = 0.5


def check_threshold(threshold: float) -> float:
    """``threshold`` when it is in (0, 1]; else a user error naming ``--mask-threshold``."""
    if not 0.0 < threshold <= 1.0:
        raise ReconError(f"--mask-threshold must be in (0, 1], got {threshold}")
    return threshold


def is_lossless(path: str | os.PathLike) -> bool:
    """Whether the file's format keeps exact integer values (labels survive it)."""
    return Path(path).suffix.lower() in LOSSLESS_SUFFIXES


def read_mask_channel(path: str | os.PathLike) -> np.ndarray:
    """The channel [H, W] that holds the mask, in the file's own dtype (see the module docstring)."""
    import imageio.v3 as iio

    try:
        data = np.asarray(iio.imread(path))
    except (OSError, ValueError, RuntimeError) as exc:
        raise ReconError(f"{path}: cannot read mask ({exc})") from None
    if data.ndim == 3 and data.shape[-1] in (2, 4):
        alpha = data[..., -1]
        if alpha.min() < _full_scale(alpha, path):
            return alpha
        data = data[..., :-1]
    if data.ndim == 3 and data.shape[-1] in (1, 3):
        data = data.max(axis=-1)
    if data.ndim != 2 or not (np.issubdtype(data.dtype, np.number) or data.dtype == bool):
        raise ReconError(f"{path}: a mask must be a grey, grey+alpha, RGB or RGBA image, got shape {data.shape}")
    return data


def _full_scale(channel: np.ndarray, path: str | os.PathLike) -> float:
    """The value that means "fully on" in ``channel``'s dtype (1 for 0/1 lossless masks)."""
    if channel.dtype == bool or np.issubdtype(channel.dtype, np.floating):
        return 1.0
    if is_lossless(path) and channel.size and int(channel.max()) == 1:
        return 1.0
    return 255.0 if channel.dtype.itemsize == 1 else 65535.0  # 8-bit; 16-bit (wider integers read as 16-bit)


def mask_values(path: str | os.PathLike) -> np.ndarray:
    """The mask as float32 [H, W] in [0, 1], before thresholding."""
    channel = read_mask_channel(path)
    return np.clip(channel.astype(np.float32) / _full_scale(channel, path), 0.0, 1.0)


def read_mask(path: str | os.PathLike, threshold: float = MASK_THRESHOLD) -> np.ndarray:
    """The mask as bool [H, W]: True where the mask value reaches ``threshold``."""
    return mask_values(path) >= threshold


def mask_files(folder: str | os.PathLike) -> list[Path]:
    """The mask image files directly in ``folder``, sorted by name (other files are ignored)."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in MASK_SUFFIXES)


def match_by_stem(files: list[Path], image_names: list[str | os.PathLike]) -> dict[int, Path]:
    """Image index -> file (a mask, or any per-image file), by stem whatever the extensions (``a.png``, ``a.jpg.png`` -> ``a.jpg``).

    A file's name less its extension is looked up first as a whole image file name, then as an image's
    stem. A file that names no image, or two files for one image, is an error naming the files.
    """
    names = [Path(n).name for n in image_names]
    by_name = {n: i for i, n in enumerate(names)}
    by_stem: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        by_stem.setdefault(Path(n).stem, []).append(i)
    matched: dict[int, Path] = {}
    for path in files:
        key = path.name[: -len(path.suffix)] if path.suffix else path.name
        candidates = [by_name[key]] if key in by_name else by_stem.get(key, [])
        if not candidates:
            raise ReconError(f"{path}: no image is named {key!r} or has that stem (images look like "
                             f"{names[0] if names else 'nothing'!r})")
        if len(candidates) > 1:
            raise ReconError(f"{path}: ambiguous, images {', '.join(names[i] for i in candidates)} share its stem")
        index = candidates[0]
        if index in matched:
            raise ReconError(f"{path}: a second file for image {names[index]} (the first is {matched[index]})")
        matched[index] = path
    return matched


def fit_mask(mask: np.ndarray, mask_path: str | os.PathLike, image_path: str | os.PathLike,
             image_size: tuple[int, int]) -> np.ndarray:
    """A mask [H, W, ...] as float32 at the image's (width, height): area-averaged by an integer factor."""
    f = size_factor(mask_path, (mask.shape[1], mask.shape[0]), image_path, image_size)
    mask = mask.astype(np.float32)
    if f == 1:
        return mask
    w, h = image_size
    return mask.reshape(h, f, w, f, *mask.shape[2:]).mean(axis=(1, 3))


def load_image_mask(mask_path: str | os.PathLike, image_path: str | os.PathLike, image_size: tuple[int, int],
                    threshold: float = MASK_THRESHOLD) -> np.ndarray:
    """The binarised mask of one image as float32 [H, W] at ``image_size``, in [0, 1] (fractions where
    a larger mask was area-averaged down)."""
    return fit_mask(read_mask(mask_path, threshold), mask_path, image_path, image_size)
