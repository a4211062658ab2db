"""Per-view 2D masks for semantic tracing: read from mask images or drawn from a 3D box.

Mask files are read by ``engine/io/masks.py`` (PNG, JPEG, WebP, TIFF or BMP; grey, RGB or RGBA; 8 or 16
bit; matched to views by stem: ``0003.png``, ``0003.jpg`` or ``0003.jpg.png`` is the mask of the view
whose image is ``0003.jpg``). Two folder layouts are accepted:

* flat: ``masks/<image>.<ext>``: a binary mask is one label, ``selection``. Lossless files (PNG, TIFF,
  BMP) whose values are not binary (0 and one of 1, 255, 65535) are integer labels, one per distinct
  non-zero value (``label<value>``); lossy files (JPEG, WebP) are always binarised at ``threshold``;
* per object: ``masks/<object>/<image>.<ext>`` (the demo scene's layout), one binary label per folder.

Masks come back as float32 ``[C, H, W, L]`` in [0, 1] for the matched views (C of them). A mask larger
than its view by an integer factor is area-averaged down to it; any other size is an error.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from recon.engine.errors import ReconError
from recon.engine.io.masks import (MASK_THRESHOLD, fit_mask, is_lossless, load_image_mask, mask_files,
                                   match_by_stem, read_mask_channel)

BINARY_VALUES = {1, 255, 65535}


@dataclass(frozen=True)
class ViewMasks:
    """Masks of some views: ``view_indices[c]`` is the view of ``masks[c]`` ([C, H, W, L]); ``labels`` [L]."""

    view_indices: list[int]
    masks: torch.Tensor  # [C, H, W, L] float32 in [0, 1]
    labels: list[str]

    def label_index(self, label: str | None) -> int:
        """Index of ``label`` (None: the only label, or an error when there are several)."""
        if label is None:
            if len(self.labels) != 1:
                raise ReconError(f"the masks hold several labels ({', '.join(self.labels)}); choose one with --label")
            return 0
        if label not in self.labels:
            raise ReconError(f"no mask label {label!r}; the masks hold: {', '.join(self.labels)}")
        return self.labels.index(label)


def _matched(folder: Path, view_images: list[str | os.PathLike]) -> dict[int, Path]:
    """view index -> mask file of ``folder``; a folder without mask images is an error."""
    files = mask_files(folder)
    if not files:
        raise ReconError(f"{folder}: no mask images (PNG, JPEG, WebP, TIFF or BMP)")
    return match_by_stem(files, view_images)


def _integer_labels(paths: list[Path]) -> tuple[dict[Path, np.ndarray], list[int]] | None:
    """Raw channels and their distinct non-zero values when the files are integer label masks, else None."""
    if not all(is_lossless(p) for p in paths):
        return None
    raw = {p: read_mask_channel(p) for p in paths}
    if not all(np.issubdtype(r.dtype, np.integer) for r in raw.values()):
        return None
    values = sorted(set().union(*(np.unique(r).tolist() for r in raw.values())) - {0})
    if len(values) <= 1 and set(values) <= BINARY_VALUES:
        return None
    return raw, values


def load_view_masks(folder: str | Path, view_images: list[str | os.PathLike], sizes: list[tuple[int, int]],
                    threshold: float = MASK_THRESHOLD) -> ViewMasks:
    """Read the masks in ``folder`` for views whose images are ``view_images`` (paths or file names) of
    (width, height) ``sizes``; binary masks are binarised at ``threshold``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ReconError(f"{folder}: no such mask folder")

    def binary(path: Path | None, v: int) -> np.ndarray:  # [H, W, 1]; all zero when there is no file
        if path is None:
            return np.zeros((sizes[v][1], sizes[v][0], 1), np.float32)
        return load_image_mask(path, view_images[v], sizes[v], threshold)[..., None]

    subfolders = sorted(p for p in folder.iterdir() if p.is_dir())
    if subfolders:
        per_object = {d.name: _matched(d, view_images) for d in subfolders}
        views = sorted(set().union(*per_object.values()))
        labels = list(per_object)
        masks = [np.concatenate([binary(per_object[name].get(v), v) for name in labels], -1) for v in views]
    else:
        matched = _matched(folder, view_images)
        views = sorted(matched)
        integer = _integer_labels([matched[v] for v in views])
        if integer is None:
            labels = ["selection"]
            masks = [binary(matched[v], v) for v in views]
        else:
            raw, values = integer
            labels = [f"label{v}" for v in values]
            masks = [fit_mask(np.stack([raw[matched[v]] == c for c in values], -1), matched[v], view_images[v],
                              sizes[v]) for v in views]
    stacked = torch.from_numpy(np.stack(masks).astype(np.float32))
    if not bool((stacked > 0).any()):
        raise ReconError(f"{folder}: every mask is empty (no pixel selected in any view)")
    return ViewMasks(view_indices=views, masks=stacked, labels=labels)


def box_masks(box_min: torch.Tensor, box_max: torch.Tensor,  # [3], [3] in the run's (normalised) coordinates
              viewmats: torch.Tensor, Ks: torch.Tensor,  # [C, 4, 4] world-to-camera, [C, 3, 3]
              width: int, height: int) -> torch.Tensor:
    """Silhouettes of an axis-aligned box: 1 where a pixel's ray (through its centre) meets the box. [C, H, W, 1]"""
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32) + 0.5,
                            torch.arange(width, dtype=torch.float32) + 0.5, indexing="ij")
    pix = torch.stack([xs, ys, torch.ones_like(xs)], -1)  # [H, W, 3]
    dirs_cam = pix @ torch.linalg.inv(Ks).transpose(-1, -2)[:, None]  # [C, H, W, 3]
    rot = viewmats[:, :3, :3]
    origins = -(rot.transpose(-1, -2) @ viewmats[:, :3, 3:])[..., 0]  # [C, 3] camera centres
    dirs = dirs_cam @ rot[:, None]  # R^T d, row form: [C, H, W, 3]
    inv = 1.0 / torch.where(dirs.abs() < 1e-12, torch.full_like(dirs, 1e-12), dirs)
    t0 = (box_min - origins[:, None, None]) * inv
    t1 = (box_max - origins[:, None, None]) * inv
    near = torch.minimum(t0, t1).amax(-1)
    far = torch.maximum(t0, t1).amin(-1)
    return ((far >= near.clamp_min(0.0)) & (far > 0)).float()[..., None]
