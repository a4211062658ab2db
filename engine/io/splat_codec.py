"""Quantisation helpers shared by the web splat formats (``.splat``, ``.spz``, PlayCanvas compressed PLY).

Everything works on numpy arrays of raw 3DGS parameters (``SplatArrays``): logit opacities, log scales,
SH coefficients, quaternions w, x, y, z. Conventions drawn here once:

* ``SH_C0 * f_dc + 0.5`` is the degree-0 colour in [0, 1] (the 3DGS rule every viewer uses);
* a quaternion and its negation are the same rotation, so "smallest three" codes drop the largest
  component after flipping the sign that makes it positive, and store its index instead.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from recon.engine.errors import ReconError

SH_C0 = 0.28209479177387814
# The logit of an 8-bit opacity of 0 or 255 is infinite; readers clamp it to this.
MAX_LOGIT = 12.0


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function, float32, without overflow warnings for large |x|."""
    x = np.asarray(x, dtype=np.float64)
    return (0.5 * (1.0 + np.tanh(0.5 * x))).astype(np.float32)


def logit(p: np.ndarray) -> np.ndarray:
    """Inverse of ``sigmoid``, clamped to [-MAX_LOGIT, MAX_LOGIT] (p = 0 or 1 come from 8-bit codes)."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1.0 - 1e-12)
    return np.clip(np.log(p / (1.0 - p)), -MAX_LOGIT, MAX_LOGIT).astype(np.float32)


def unit_quats(quats: np.ndarray) -> np.ndarray:
    """Quaternions [N, 4] scaled to unit length; a zero quaternion becomes the identity (w = 1)."""
    q = np.asarray(quats, dtype=np.float64)
    norm = np.linalg.norm(q, axis=1, keepdims=True)
    identity = np.zeros_like(q)
    identity[:, 0] = 1.0
    return np.where(norm > 0, q / np.where(norm > 0, norm, 1.0), identity)


def smallest_three(quats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split unit quaternions [N, 4] (any component order) into the index of the largest-magnitude
    component [N] and the other three [N, 3] in order, signs flipped so that the dropped one is positive.
    The three lie in [-1/sqrt(2), 1/sqrt(2)]."""
    q = np.asarray(quats, dtype=np.float64)
    largest = np.argmax(np.abs(q), axis=1)
    sign = np.where(q[np.arange(len(q)), largest] < 0, -1.0, 1.0)[:, None]
    keep = np.ones_like(q, dtype=bool)
    keep[np.arange(len(q)), largest] = False
    return largest, (q * sign)[keep].reshape(len(q), 3)


def from_smallest_three(largest: np.ndarray, three: np.ndarray) -> np.ndarray:
    """Inverse of ``smallest_three``: quaternions [N, 4] in the component order they were split in."""
    three = np.asarray(three, dtype=np.float64)
    n = len(three)
    out = np.empty((n, 4))
    keep = np.ones((n, 4), dtype=bool)
    keep[np.arange(n), largest] = False
    out[keep] = three.reshape(-1)
    out[np.arange(n), largest] = np.sqrt(np.clip(1.0 - (three * three).sum(1), 0.0, 1.0))
    return out


def unorm(values: np.ndarray, bits: int) -> np.ndarray:
    """Values in [0, 1] to unsigned integers of ``bits`` bits, rounding to nearest (clamped)."""
    top = (1 << bits) - 1
    return np.clip(np.floor(np.asarray(values, dtype=np.float64) * top + 0.5), 0, top).astype(np.uint32)


def from_unorm(codes: np.ndarray, bits: int) -> np.ndarray:
    """Inverse of ``unorm``: the low ``bits`` bits of ``codes`` as float64 in [0, 1]."""
    top = (1 << bits) - 1
    return (np.asarray(codes, dtype=np.uint32) & top).astype(np.float64) / top


def file_bytes(path: str | os.PathLike) -> bytes:
    """The contents of ``path``; ``ReconError`` naming it when it cannot be read."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ReconError(f"{path}: cannot read ({exc.strerror or exc})") from None
