"""What the viewer draws for a camera: colour, depth, alpha, or the number of Gaussians per tile.

Every mode returns an RGB float image [H, W, 3] in [0, 1] plus a one-line caption. Depth and alpha are grey
like ``recon render --depth`` (near bright); the tile heat map colours ``log(1 + count)`` per 16x16 tile
(the rasterizer's own tiles, so it shows where splatting spends its time) over a faint grey copy of the
render.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from recon.engine.render import covered_depth_range, depth_image
from recon.engine.scene.camera import Camera, camera_matrices

MODES = {"RGB": "rgb", "Depth": "depth", "Alpha": "alpha", "Gaussians per tile": "tiles"}
# Anchors of the heat map, dark blue (few) to yellow (many).
HEAT_COLOURS = np.array([[0.05, 0.03, 0.20], [0.25, 0.10, 0.55], [0.70, 0.15, 0.45], [0.98, 0.45, 0.10],
                         [0.99, 0.95, 0.35]])


def modes_for(kind: str) -> list[str]:
    """Display names of the modes a model of ``kind`` supports (the tile heat map needs Gaussians)."""
    return [name for name, mode in MODES.items() if mode != "tiles" or kind in ("gaussians", "points")]


def heat_colours(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] [...] to RGB [..., 3] along ``HEAT_COLOURS``."""
    stops = np.linspace(0.0, 1.0, len(HEAT_COLOURS))
    v = np.clip(values, 0.0, 1.0)
    return np.stack([np.interp(v, stops, HEAT_COLOURS[:, c]) for c in range(3)], axis=-1)


def tile_counts(model: Any, camera: Camera) -> tuple[np.ndarray, int]:
    """Gaussians overlapping each tile [tiles_y, tiles_x] for ``camera``, and the tile size in pixels."""
    from recon.kernels.splatting.reference import tile_ranges

    viewmats, Ks = camera_matrices([camera], model.device)
    with torch.no_grad():
        _, _, meta = model.rasterize(viewmats, Ks, camera.width, camera.height)
    starts, ends = tile_ranges(meta["tile_offsets"], meta["flatten_ids"].numel())
    shape = meta["tile_offsets"].shape[1:]
    return (ends - starts).reshape(shape).cpu().numpy(), int(meta["tile_size"])


def render_mode(model: Any, camera: Camera, mode: str, background: tuple[float, float, float]
                ) -> tuple[np.ndarray, str]:
    """``model`` seen by ``camera`` in ``mode`` (a value of ``MODES``): (RGB [H, W, 3] in [0, 1], caption)."""
    with torch.no_grad():
        out = model.render(camera, background=background)
    rgb = out["rgb"].detach().float().cpu().numpy()
    if mode == "rgb":
        return rgb, ""
    alpha = out["alpha"].detach().float().cpu().numpy()
    if mode == "alpha":
        return np.repeat(alpha, 3, axis=-1), f"mean alpha {alpha.mean():.3f}"
    if mode == "depth":
        depth = out["depth"].detach().float().cpu().numpy()
        near, far = covered_depth_range(depth, alpha)
        return np.repeat(depth_image(depth, alpha, (near, far)), 3, axis=-1), f"depth {near:.3g} (white) to {far:.3g}"
    if mode != "tiles":
        raise ValueError(f"unknown render mode {mode!r}")
    counts, tile = tile_counts(model, camera)
    top = max(int(counts.max()), 1)
    heat = heat_colours(np.log1p(counts) / np.log1p(top))
    heat = np.repeat(np.repeat(heat, tile, axis=0), tile, axis=1)[:camera.height, :camera.width]
    grey = rgb.mean(-1, keepdims=True)
    caption = f"Gaussians per {tile}x{tile} tile: max {top}, mean {counts.mean():.1f} (log colour scale)"
    return 0.8 * heat + 0.2 * grey, caption
