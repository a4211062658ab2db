"""Writing rendered frames: MP4 (H.264 through imageio-ffmpeg) or a folder of numbered PNGs, atomically."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np

from recon.engine.errors import ReconError
from recon.engine.io.atomic import atomic_path
from recon.engine.io.images import to_uint8, write_image


def _even(frame: np.ndarray) -> np.ndarray:
    """Pad a uint8 [H, W, C] frame by edge replication to even sizes (yuv420p needs them)."""
    pad_h, pad_w = frame.shape[0] % 2, frame.shape[1] % 2
    if pad_h or pad_w:
        frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return frame


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float = 30.0) -> int:
    """Encode float frames [H, W, 3 or 1] in [0, 1] as an H.264 MP4 at ``path``; returns the frame count.

    The file appears only once every frame is encoded (written to a temporary name first).
    """
    import imageio.v2 as imageio

    if fps <= 0:
        raise ReconError(f"{path}: --fps must be positive, got {fps}")
    count = 0
    with atomic_path(Path(path)) as tmp:
        writer = imageio.get_writer(str(tmp), format="FFMPEG", mode="I", fps=fps, codec="libx264",
                                    quality=8, macro_block_size=1, pixelformat="yuv420p")
        try:
            for frame in frames:
                data = to_uint8(np.asarray(frame))
                if data.ndim == 2:
                    data = data[..., None]
                if data.shape[-1] == 1:
                    data = np.repeat(data, 3, axis=-1)
                writer.append_data(_even(data))
                count += 1
        finally:
            writer.close()
    return count


def write_png_folder(folder: str | os.PathLike, frames: Iterable[np.ndarray], prefix: str = "") -> int:
    """Write float frames as ``folder/<prefix>00000.png``, ... (each file atomically); returns the count."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    for count, frame in enumerate(frames, start=1):
        write_image(folder / f"{prefix}{count - 1:05d}.png", np.asarray(frame))
    return count


def is_folder_target(path: str | os.PathLike) -> bool:
    """True when ``-o`` names a folder (ends with a separator, exists as one, or has no suffix)."""
    text = str(path)
    return text.endswith(("/", os.sep)) or Path(text).is_dir() or Path(text).suffix == ""
