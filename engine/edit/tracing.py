"""Semantic tracing: lift 2D masks onto Gaussians (GaussianEditor's formulation).

The weight of Gaussian i for label j is

    w_ij = sum_p o_i(p) T_i(p) M_j(p) / sum_p o_i(p) T_i(p)

over every pixel p of every masked view, where o_i(p) T_i(p) is its blending weight at p. Numerator and
denominator come from one ``gaussian_pixel_weights`` call per batch of views (the masks plus a channel of
ones). A Gaussian no view sees (zero denominator) gets weight 0 and is never selected.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from recon.engine.errors import ReconError
from recon.engine.io.atomic import atomic_path

SELECTION_FILE = "selection.npz"


@dataclass
class Selection:
    """Per-Gaussian label weights [N, L], whether any view saw it [N], and the chosen label's selection [N]."""

    labels: list[str]
    weights: torch.Tensor  # [N, L] float32 in [0, 1]
    seen: torch.Tensor  # [N] bool
    selected: torch.Tensor  # [N] bool
    label: str
    threshold: float

    def subset(self, keep: torch.Tensor) -> "Selection":  # keep: [N] bool
        """The selection restricted to the Gaussians ``keep`` marks (after deleting or extracting)."""
        return Selection(self.labels, self.weights[keep], self.seen[keep], self.selected[keep], self.label,
                         self.threshold)


def trace_totals(
    means: torch.Tensor,  # [N, 3]
    quats: torch.Tensor,  # [N, 4] wxyz
    scales: torch.Tensor,  # [N, 3] linear
    opacities: torch.Tensor,  # [N] in [0, 1]
    viewmats: torch.Tensor,  # [C, 4, 4]
    Ks: torch.Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    masks: torch.Tensor,  # [C, H, W, L] in [0, 1]
    *,
    views_per_batch: int = 8,
    **options,
) -> torch.Tensor:
    """Per Gaussian, sum_p o_i T_i M_j for each label j and, last, sum_p o_i T_i over C views. [N, L + 1]

    Views of other sizes add their totals: ``label_weights`` turns the sum into weights.
    """
    from recon.kernels import gaussian_pixel_weights
    from recon.kernels.splatting.op import MAX_CHANNELS  # L labels + 1 channel of ones

    n_labels = masks.shape[-1]
    if n_labels + 1 > MAX_CHANNELS:
        raise ReconError(f"at most {MAX_CHANNELS - 1} mask labels can be traced at once, got {n_labels}")
    totals = torch.zeros(means.shape[0], n_labels + 1, device=means.device, dtype=torch.float32)
    for start in range(0, masks.shape[0], views_per_batch):
        batch = masks[start:start + views_per_batch].to(device=means.device, dtype=means.dtype)
        pixel_weights = torch.cat([batch, torch.ones_like(batch[..., :1])], dim=-1)
        totals += gaussian_pixel_weights(
            means, quats, scales, opacities, viewmats[start:start + views_per_batch],
            Ks[start:start + views_per_batch], width, height, pixel_weights, **options).float()
    return totals


def label_weights(totals: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # totals: [N, L + 1]
    """Label weights [N, L] (numerators over the last column) and the seen flag [N] (a non-zero denominator)."""
    denominator = totals[:, -1]
    seen = denominator > 1e-8
    weights = torch.where(seen[:, None], totals[:, :-1] / denominator.clamp_min(1e-8)[:, None], 0.0)
    return weights.clamp(0.0, 1.0), seen


def trace_weights(*args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """``label_weights(trace_totals(...))``: label weights [N, L] and seen flags [N] from one set of views."""
    return label_weights(trace_totals(*args, **kwargs))


def select(weights: torch.Tensor, seen: torch.Tensor, label_index: int, threshold: float = 0.5) -> torch.Tensor:
    """Gaussians whose weight for label ``label_index`` reaches ``threshold`` and that some view saw. [N] bool"""
    return seen & (weights[:, label_index] >= threshold)


def save_selection(run_dir: str | Path, selection: Selection) -> Path:
    """Write ``selection.npz`` (labels, weights, seen, selected, label, threshold) into a run directory."""
    path = Path(run_dir) / SELECTION_FILE
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, labels=np.array(selection.labels), weights=selection.weights.cpu().numpy(),
                     seen=selection.seen.cpu().numpy(), selected=selection.selected.cpu().numpy(),
                     label=np.array(selection.label), threshold=np.array(selection.threshold))
    return path


def load_selection(path: str | Path, count: int) -> Selection:
    """Read a ``selection.npz`` (or the one in run directory ``path``) made for ``count`` Gaussians."""
    path = Path(path)
    if path.is_dir():
        path = path / SELECTION_FILE
    try:
        with np.load(path) as data:
            selection = Selection(
                labels=[str(s) for s in data["labels"]], weights=torch.from_numpy(data["weights"]),
                seen=torch.from_numpy(data["seen"]), selected=torch.from_numpy(data["selected"]),
                label=str(data["label"]), threshold=float(data["threshold"]))
    except (OSError, KeyError, ValueError) as exc:
        raise ReconError(f"{path}: not a readable selection file ({exc})") from None
    if selection.selected.shape[0] != count:
        raise ReconError(f"{path}: made for {selection.selected.shape[0]} Gaussians, the run has {count}")
    return selection
