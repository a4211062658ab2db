"""The ``.splat`` format of antimatter15's WebGL viewer (also read by SuperSplat and most web viewers).

No header: N records of 32 bytes, little endian, in the PLY's coordinates (no axis change)::

    float32 x, y, z          position
    float32 sx, sy, sz       linear scales (exp of the PLY's log scales)
    uint8   r, g, b, a       colour 0.5 + SH_C0 * f_dc and opacity sigmoid(logit), times 255
    uint8   w, x, y, z       unit quaternion, q * 128 + 128

View-dependent colour (higher SH) is not stored. Writers order the records by decreasing
``exp(sum of log scales) * opacity`` so viewers that stream the file show the large, opaque ones first.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from recon.engine.errors import ReconError
from recon.engine.io.atomic import write_bytes_atomic
from recon.engine.io.ply import SplatArrays
from recon.engine.io.splat_codec import SH_C0, file_bytes, logit, sigmoid, unit_quats

RECORD = np.dtype([("position", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rotation", "u1", 4)])


def encode_splat(splats: SplatArrays) -> bytes:
    """The ``.splat`` bytes of ``splats`` (higher SH dropped), largest opaque Gaussians first."""
    log_scales = np.asarray(splats.scales, dtype=np.float64)
    opacity = sigmoid(splats.opacities)
    order = np.argsort(-np.exp(log_scales.sum(1)) * opacity, kind="stable")
    records = np.empty(len(splats), dtype=RECORD)
    records["position"] = np.asarray(splats.means, dtype=np.float32)[order]
    records["scale"] = np.exp(log_scales[order]).astype(np.float32)
    colour = 0.5 + SH_C0 * np.asarray(splats.sh0, dtype=np.float64).reshape(-1, 3)
    rgba = np.concatenate([colour, opacity[:, None]], axis=1)[order]
    records["rgba"] = np.clip(np.round(rgba * 255.0), 0, 255).astype(np.uint8)
    records["rotation"] = np.clip(np.round(unit_quats(splats.quats)[order] * 128.0 + 128.0), 0, 255).astype(np.uint8)
    return records.tobytes()


def write_splat(path: str | os.PathLike, splats: SplatArrays) -> None:
    """Write ``splats`` as a ``.splat`` file, atomically."""
    write_bytes_atomic(Path(path), encode_splat(splats))


def decode_splat(data: bytes, path: str | os.PathLike = "<bytes>") -> SplatArrays:
    """``SplatArrays`` (SH degree 0) from ``.splat`` bytes; ``ReconError`` naming ``path`` when malformed."""
    if len(data) == 0 or len(data) % RECORD.itemsize:
        raise ReconError(f"{path}: {len(data)} bytes is not a whole number of 32-byte .splat records")
    records = np.frombuffer(data, dtype=RECORD)
    n = len(records)
    position = records["position"].astype(np.float32)
    scale = records["scale"].astype(np.float64)
    bad = ~np.isfinite(position).all(1) | ~np.isfinite(scale).all(1) | (scale <= 0).any(1)
    if bad.any():
        raise ReconError(f"{path}: {int(bad.sum())} Gaussian(s) have non-finite positions or non-positive scales")
    rgba = records["rgba"].astype(np.float64) / 255.0
    return SplatArrays(
        means=position,
        sh0=((rgba[:, :3] - 0.5) / SH_C0).astype(np.float32).reshape(n, 1, 3),
        shN=np.zeros((n, 0, 3), dtype=np.float32),
        opacities=logit(rgba[:, 3]),
        scales=np.log(scale).astype(np.float32),
        quats=unit_quats((records["rotation"].astype(np.float64) - 128.0) / 128.0).astype(np.float32),
    )


def read_splat(path: str | os.PathLike) -> SplatArrays:
    """Read a ``.splat`` file (see ``decode_splat``)."""
    return decode_splat(file_bytes(path), path)
