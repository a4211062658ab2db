"""Reading and writing images as float32 arrays in [0, 1]."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from recon.engine.errors import ReconError
from recon.engine.io.atomic import atomic_path


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of an image file, read from its header only."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, ValueError) as exc:
        raise ReconError(f"{path}: cannot read image ({exc})") from None


def size_factor(path: str | os.PathLike, size: tuple[int, int], image_path: str | os.PathLike,
                image_size: tuple[int, int]) -> int:
    """The integer factor by which a (width, height) ``size`` file is larger than its image; else an error.

    A factor above 1 is what a file at full resolution gives against a downscaled image. The error names
    both files.
    """
    factor = size[0] / image_size[0]
    if factor < 1 or factor != int(factor) or size[1] != image_size[1] * factor:
        raise ReconError(f"{path}: size {size[0]}x{size[1]} does not match its image {image_path} "
                         f"({image_size[0]}x{image_size[1]}) or an integer multiple of it")
    return int(factor)


def read_image(path: str | os.PathLike, size: tuple[int, int] | None = None) -> np.ndarray:
    """Read an image as float32 [H, W, C] in [0, 1] (C = 1, 3 or 4; 16-bit PNGs keep their precision).

    With ``size`` = (width, height) the image is box-filtered to that size when it differs.
    """
    import imageio.v3 as iio

    try:
        data = iio.imread(path)
    except (OSError, ValueError) as exc:
        raise ReconError(f"{path}: cannot read image ({exc})") from None
    scale = 65535.0 if data.dtype == np.uint16 else 255.0 if data.dtype == np.uint8 else 1.0
    image = data.astype(np.float32) / scale
    if image.ndim == 2:
        image = image[..., None]
    if size is not None and (image.shape[1], image.shape[0]) != tuple(size):
        image = resize_image(image, size)
    return image


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Box-filter (area) resize of a float32 [H, W, C] image to (width, height)."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
    mode = "area" if size[0] <= image.shape[1] else "bilinear"
    out = F.interpolate(t, size=(size[1], size[0]), mode=mode)
    return out[0].permute(1, 2, 0).contiguous().numpy()


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] to uint8, rounding to nearest."""
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write a float [H, W, C] (or [H, W]) image in [0, 1] as 8-bit PNG/JPEG, atomically."""
    import imageio.v3 as iio

    data = to_uint8(image)
    if data.ndim == 3 and data.shape[-1] == 1:
        data = data[..., 0]
    with atomic_path(Path(path)) as tmp:
        iio.imwrite(tmp, data)
