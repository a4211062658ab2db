"""What an SfM source is: a video file, or a folder of photos that holds no scene yet.

``source_kind`` tells them apart (and says None for anything recon loads as it is: a COLMAP or
transforms.json folder, a mesh). ``source_fingerprint`` identifies a source's content cheaply (names,
sizes, modification times), so that an earlier SfM result or an interrupted run is reused only for the
same input.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from recon.engine.errors import ReconError
from recon.engine.scene.colmap import find_model_dir
from recon.engine.scene.transforms_json import has_transforms

VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm", ".mts", ".3gp")
# What both Pillow (intake) and COLMAP (feature extraction) decode.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")
SourceKind = Literal["video", "photos"]


def is_video(path: Path) -> bool:
    """True for a file with a video suffix (its content is checked when it is decoded)."""
    return path.suffix.lower() in VIDEO_SUFFIXES


def has_scene(folder: Path) -> bool:
    """True when ``folder`` already holds a scene recon loads (COLMAP model or transforms.json)."""
    return find_model_dir(folder) is not None or has_transforms(folder)


def photo_folder(folder: Path) -> Path:
    """The folder whose files are the photos: ``folder`` itself, or its ``images/`` when only that holds
    images (a dataset folder without a model yet)."""
    nested = folder / "images"
    if not _has_image_files(folder) and nested.is_dir() and _has_image_files(nested):
        return nested
    return folder


def source_kind(path: str | Path) -> SourceKind | None:
    """``video`` for a video file, ``photos`` for a folder of images without a scene, else None."""
    path = Path(path)
    if path.is_file():
        return "video" if is_video(path) else None
    if path.is_dir() and not has_scene(path) and _has_image_files(photo_folder(path)):
        return "photos"
    return None


def sfm_kind(path: Path) -> SourceKind:
    """The kind of an explicit ``recon sfm`` source, or a one-line error saying why it is none."""
    if not path.exists():
        raise ReconError(f"{path}: no such file or folder")
    if path.is_file():
        if not is_video(path):
            raise ReconError(f"{path}: not a video ({', '.join(VIDEO_SUFFIXES)}) or a folder of photos")
        return "video"
    return "photos"  # an empty or image-less folder is reported by the photo intake, naming what it holds


def source_name(path: Path) -> str:
    """A short name for folders derived from the source: the video's stem or the folder's name."""
    resolved = path.resolve()
    return resolved.stem if resolved.is_file() else resolved.name


def source_fingerprint(path: Path) -> dict:
    """The source's resolved path with the name, size and modification time of every file it reads."""
    resolved = path.resolve()
    if resolved.is_file():
        files = [resolved]
        root = resolved.parent
    else:
        root = photo_folder(resolved)
        files = sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith("."))
    entries = []
    for file in files:
        stat = file.stat()
        entries.append([file.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns])
    return {"path": str(resolved), "files": entries}


def _has_image_files(folder: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() for p in folder.iterdir())
