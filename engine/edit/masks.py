"""Per-view 2D masks for semantic tracing: read from PNG files or drawn from a 3D box.

Two folder layouts are accepted, matched to views by image file name (``0003.png`` matches the view whose
image is ``0003.png`` or ``0003.jpg``):

* flat: ``masks/<image name>.png``: a binary mask (0 and 255, or 0 and 1) is one label, ``selection``;
  any other values are integer labels, one per distinct non-zero value (``label<value>``);
* per object: ``masks/<object>/<image name>.png`` (the demo scene's layout), one binary label per folder.

Masks come back as float32 ``[C, H, W, L]`` in [0, 1] for the matched views (C of them). A mask larger
than its view by an integer factor is area-averaged down to it; any other size is an error.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from recon.engine.errors import ReconError

MASK_SUFFIXES = (".png",)


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


def _read_raw(path: Path) -> np.ndarray:
    """A mask PNG as an integer array [H, W] (the first channel of colour images)."""
    import imageio.v3 as iio

    try:
        data = np.asarray(iio.imread(path))
    except (OSError, ValueError) as exc:
        raise ReconError(f"{path}: cannot read mask ({exc})") from None
    if data.ndim == 3:
        data = data[..., 0]
    if data.ndim != 2 or not np.issubdtype(data.dtype, np.integer):
        raise ReconError(f"{path}: a mask must be an 8- or 16-bit grey or colour PNG")
    return data.astype(np.int64)


def size_factor(path: Path, size: tuple[int, int], view_size: tuple[int, int]) -> int:
    """The integer factor by which an image of (width, height) ``size`` is larger than its view; else an error."""
    factor = size[0] / view_size[0]
    if factor < 1 or factor != int(factor) or size[1] != view_size[1] * factor:
        raise ReconError(f"{path}: size {size[0]}x{size[1]} does not match its view's image size "
                         f"{view_size[0]}x{view_size[1]}")
    return int(factor)


def _fit_to_view(mask: np.ndarray, path: Path, size: tuple[int, int]) -> np.ndarray:
    """Area-average a float mask [H, W, L] down to the view's (width, height) when an integer factor apart."""
    f = size_factor(path, (mask.shape[1], mask.shape[0]), size)
    return mask.reshape(size[1], f, size[0], f, -1).mean(axis=(1, 3))


def _match_views(files: list[Path], view_names: list[str], folder: Path) -> dict[int, Path]:
    """view index -> mask file, by file stem; a file that names no view is an error."""
    by_stem = {Path(n).stem: i for i, n in enumerate(view_names)}
    matched = {}
    for path in files:
        if path.stem not in by_stem:
            raise ReconError(f"{path}: no view of the run is named {path.stem!r} (views look like "
                             f"{view_names[0] if view_names else 'nothing'!r})")
        matched[by_stem[path.stem]] = path
    if not matched:
        raise ReconError(f"{folder}: no mask PNG files")
    return matched


def load_view_masks(folder: str | Path, view_names: list[str], sizes: list[tuple[int, int]]) -> ViewMasks:
    """Read the masks in ``folder`` for views named ``view_names`` (image file names) of (width, height) ``sizes``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ReconError(f"{folder}: no such mask folder")
    subfolders = sorted(p for p in folder.iterdir() if p.is_dir())
    if subfolders:
        per_object = {d.name: _match_views(_mask_files(d), view_names, d) for d in subfolders}
        views = sorted(set().union(*per_object.values()))
        labels = list(per_object)
        masks = [np.concatenate([_binary(per_object[name].get(v), sizes[v]) for name in labels], -1) for v in views]
    else:
        matched = _match_views(_mask_files(folder), view_names, folder)
        views = sorted(matched)
        raw = {v: _read_raw(matched[v]) for v in views}
        values = sorted(set().union(*(np.unique(r).tolist() for r in raw.values())) - {0})
        binary = len(values) <= 1 and set(values) <= {1, 255, 65535}
        labels = ["selection"] if binary else [f"label{v}" for v in values]
        codes = values[:1] if binary else values
        masks = [_fit_to_view(np.stack([(raw[v] == c) for c in codes] or [raw[v] != 0], -1).astype(np.float32),
                              matched[v], sizes[v]) for v in views]
    stacked = torch.from_numpy(np.stack(masks).astype(np.float32))
    if not bool((stacked > 0).any()):
        raise ReconError(f"{folder}: every mask is empty (no pixel selected in any view)")
    return ViewMasks(view_indices=views, masks=stacked, labels=labels)


def _mask_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in MASK_SUFFIXES)


def _binary(path: Path | None, size: tuple[int, int]) -> np.ndarray:
    """A binary mask file as float [H, W, 1] at the view's size (all zero when the object has no file there)."""
    if path is None:
        return np.zeros((size[1], size[0], 1), np.float32)
    raw = _read_raw(path)
    return _fit_to_view((raw > 0).astype(np.float32)[..., None], path, size)


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
