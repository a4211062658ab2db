"""Frames from a video for SfM: decode with imageio-ffmpeg, keep the sharp ones.

Sharpness is the variance of the Laplacian of the frame's luminance (computed at most
``SCORE_SIZE`` pixels wide, by box-averaging). The video is cut into windows of ``window`` consecutive
frames, ``window = ceil(frame count / target)``; the sharpest frame of each window is kept unless it is
far below its neighbourhood: a score under ``drop_ratio`` times the median score of every frame within
``reach`` frames drops it (a window that is blurred as a whole, a shake).

ffmpeg applies the stream's rotation metadata while decoding (phone videos shot upright come out
upright), and frame times come from the stream's frame rate. Frames are written as
``frame_<index>.jpg`` with the index in the video, so a frame can be traced back.
"""
from __future__ import annotations

import contextlib
import logging
import math
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from recon.engine.errors import ReconError

SCORE_SIZE = 1024
DROP_RATIO = 0.5
JPEG_QUALITY = 95


@dataclass(frozen=True)
class VideoInfo:
    """What the decoder reports: frame size after rotation, rotation in degrees, frame rate, frame count."""

    width: int
    height: int
    rotation: int
    fps: float
    frame_count: int
    duration: float


@dataclass(frozen=True)
class KeptFrame:
    """A frame written for SfM: its image name, index in the video, time in seconds and sharpness."""

    name: str
    index: int
    time: float | None
    sharpness: float


def laplacian_variance(rgb: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of the luminance of a uint8 [H, W, 3] frame, after
    box-averaging it to at most ``SCORE_SIZE`` pixels on its longer side."""
    gray = rgb[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    step = math.ceil(max(gray.shape) / SCORE_SIZE)
    if step > 1:
        h, w = gray.shape[0] // step * step, gray.shape[1] // step * step
        gray = gray[:h, :w].reshape(h // step, step, w // step, step).mean(axis=(1, 3))
    lap = gray[1:-1, 2:] + gray[1:-1, :-2] + gray[2:, 1:-1] + gray[:-2, 1:-1] - 4.0 * gray[1:-1, 1:-1]
    return float(lap.var())


def window_size(frame_count: int, target: int) -> int:
    """Consecutive frames per selection window so that about ``target`` windows cover the video."""
    return max(1, math.ceil(frame_count / max(1, target)))


def select_sharp(scores: np.ndarray, window: int, *, drop_ratio: float = DROP_RATIO,
                 reach: int | None = None) -> tuple[list[int], list[int]]:
    """(kept, dropped) frame indices from per-frame sharpness ``scores`` [N].

    Each window of ``window`` frames proposes its sharpest frame (the first of equals); a proposal scoring
    below ``drop_ratio`` times the median of the scores within ``reach`` frames of it (default
    ``max(3 * window, 10)``) is dropped.
    """
    scores = np.asarray(scores, dtype=np.float64)
    reach = max(3 * window, 10) if reach is None else reach
    kept, dropped = [], []
    for start in range(0, len(scores), window):
        best = start + int(np.argmax(scores[start:start + window]))
        neighbourhood = scores[max(0, best - reach):best + reach + 1]
        (dropped if scores[best] < drop_ratio * np.median(neighbourhood) else kept).append(best)
    return kept, dropped


def probe_video(path: Path) -> VideoInfo:
    """Frame size (after rotation), rotation, frame rate and exact frame count of a video; a one-line
    ``ReconError`` when ffmpeg cannot read it."""
    import imageio_ffmpeg

    try:
        with _rotation_warning_quiet():
            reader = imageio_ffmpeg.read_frames(str(path))
            meta = next(reader)
            reader.close()
        frame_count, _ = imageio_ffmpeg.count_frames_and_secs(str(path))
    except (OSError, RuntimeError, StopIteration, ValueError, IndexError) as exc:
        raise ReconError(f"{path}: cannot decode the video ({_first_line(exc)})") from None
    if frame_count <= 0:
        raise ReconError(f"{path}: the video has no frames")
    width, height = meta["size"]
    return VideoInfo(width=int(width), height=int(height), rotation=stream_rotation(path),
                     fps=float(meta.get("fps") or 0.0), frame_count=int(frame_count),
                     duration=float(meta.get("duration") or 0.0))


def stream_rotation(path: Path) -> int:
    """The rotation in degrees [0, 360) that the video's metadata asks for (display matrix or ``rotate`` tag),
    as ffmpeg reports it; ffmpeg applies it while decoding."""
    import imageio_ffmpeg

    result = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)],
                            capture_output=True, text=True, errors="replace")
    match = re.search(r"rotation of (-?[\d.]+) degrees", result.stderr) or re.search(r"rotate\s*:\s*(-?\d+)",
                                                                                     result.stderr)
    return round(float(match.group(1))) % 360 if match else 0


def extract_frames(path: Path, out_dir: Path, target: int, *, drop_ratio: float = DROP_RATIO,
                   progress: bool = True) -> tuple[VideoInfo, list[KeptFrame], list[int]]:
    """Decode ``path`` once, writing the sharpest frame of each window to ``out_dir`` as JPEG.

    Returns the video's info, the frames kept and the indices of window picks dropped as blurred (their
    files are removed). Only one window's best frame is held in memory at a time.
    """
    import imageio_ffmpeg
    from PIL import Image
    from tqdm import tqdm

    info = probe_video(path)
    window = window_size(info.frame_count, target)
    digits = max(5, len(str(info.frame_count)))
    out_dir.mkdir(parents=True, exist_ok=True)
    scores: list[float] = []
    best: tuple[float, int, np.ndarray] | None = None
    written: dict[int, Path] = {}

    def flush() -> None:
        if best is not None:
            target_path = out_dir / f"frame_{best[1]:0{digits}d}.jpg"
            Image.fromarray(best[2]).save(target_path, quality=JPEG_QUALITY)
            written[best[1]] = target_path

    try:
        with _rotation_warning_quiet():
            reader = imageio_ffmpeg.read_frames(str(path))
            next(reader)
        with tqdm(total=info.frame_count, desc="frames", unit="frame", leave=False, disable=not progress) as bar:
            for index, data in enumerate(reader):
                frame = np.frombuffer(data, dtype=np.uint8).reshape(info.height, info.width, 3)
                scores.append(laplacian_variance(frame))
                if index % window == 0:
                    flush()
                    best = None
                if best is None or scores[-1] > best[0]:
                    best = (scores[-1], index, frame.copy())
                bar.update(1)
        flush()
    except (OSError, RuntimeError, ValueError) as exc:
        raise ReconError(f"{path}: cannot decode the video ({_first_line(exc)})") from None
    if not scores:
        raise ReconError(f"{path}: the video has no frames")
    kept, dropped = select_sharp(np.array(scores), window, drop_ratio=drop_ratio)
    for index in dropped:
        written[index].unlink()
    times = [index / info.fps if info.fps > 0 else None for index in kept]
    frames = [KeptFrame(name=written[i].name, index=i, time=t, sharpness=scores[i]) for i, t in zip(kept, times)]
    return info, frames, dropped


@contextlib.contextmanager
def _rotation_warning_quiet() -> Iterator[None]:
    """Silence imageio-ffmpeg's warning that the decoded size differs from the stored one (every rotated
    video: ffmpeg turns the frames upright)."""
    logger = logging.getLogger("imageio_ffmpeg")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
