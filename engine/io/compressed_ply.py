"""PlayCanvas's compressed PLY (``*.compressed.ply``, read by SuperSplat and the PlayCanvas engine).

A binary little-endian PLY in the 3DGS PLY's coordinates, Gaussians in chunks of 256 (sorted along a Morton
curve so that each chunk is small in space)::

    element chunk C     float min_x min_y min_z max_x max_y max_z
                              min_scale_x .. min_scale_z max_scale_x .. max_scale_z   (log scales, in [-20, 20])
                              min_r min_g min_b max_r max_g max_b                     (colour 0.5 + SH_C0 * f_dc)
    element vertex N    uint  packed_position   11/10/11 bits (x in the top bits) across the chunk's box
                        uint  packed_rotation   bits 30-31: index (w, x, y, z order) of the largest component,
                                                then three 10-bit unorms of c / sqrt(2) + 0.5, first kept highest
                        uint  packed_scale      11/10/11 bits across the chunk's log-scale range
                        uint  packed_color      8/8/8/8: r, g, b across the chunk's colour range, then opacity
    element sh N        uchar f_rest_0 .. f_rest_{M-1}   (optional; channel-major like the 3DGS PLY)
                              byte = trunc((f_rest / 8 + 0.5) * 256), clamped to 0..255

Files whose chunks lack the six colour fields (colour stored directly in [0, 1]) are read too.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from recon.engine.errors import ReconError
from recon.engine.io.atomic import write_bytes_atomic
from recon.engine.io.ply import REST_FIELDS_TO_DEGREE, SplatArrays
from recon.engine.io.splat_codec import (SH_C0, from_smallest_three, from_unorm, logit, sigmoid, smallest_three,
                                         unit_quats, unorm)

CHUNK = 256
CHUNK_FIELDS = ("min_x", "min_y", "min_z", "max_x", "max_y", "max_z",
                "min_scale_x", "min_scale_y", "min_scale_z", "max_scale_x", "max_scale_y", "max_scale_z")
COLOR_FIELDS = ("min_r", "min_g", "min_b", "max_r", "max_g", "max_b")
VERTEX_FIELDS = ("packed_position", "packed_rotation", "packed_scale", "packed_color")
SCALE_LIMIT = 20.0
_SQRT1_2 = np.sqrt(0.5)


def morton_order(points: np.ndarray) -> np.ndarray:
    """Indices [N] sorting ``points`` [N, 3] along a 3D Morton (Z-order) curve, 10 bits per axis."""
    lo, hi = points.min(0), points.max(0)
    cells = np.floor((points - lo) / np.where(hi > lo, hi - lo, 1.0) * 1023.0 + 0.5).astype(np.uint64)
    code = np.zeros(len(points), dtype=np.uint64)
    for bit in range(10):
        for axis in range(3):
            code |= ((cells[:, axis] >> np.uint64(bit)) & np.uint64(1)) << np.uint64(3 * bit + 2 - axis)
    return np.argsort(code, kind="stable")


def _chunk_ranges(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-chunk min and max [C, D] of ``values`` [N, D] (the last chunk may be short)."""
    n = len(values)
    starts = np.arange(0, n, CHUNK)
    return np.minimum.reduceat(values, starts, axis=0), np.maximum.reduceat(values, starts, axis=0)


def _normalise(values: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """``values`` [N, D] mapped into [0, 1] across their chunk's [low, high] [C, D] (0 for a flat range)."""
    chunk = np.arange(len(values)) // CHUNK
    lo, span = low[chunk], (high - low)[chunk]
    return np.where(span < 1e-5, 0.0, np.clip((values - lo) / np.where(span < 1e-5, 1.0, span), 0.0, 1.0))


def _pack_11_10_11(unit: np.ndarray) -> np.ndarray:
    return (unorm(unit[:, 0], 11) << 21) | (unorm(unit[:, 1], 10) << 11) | unorm(unit[:, 2], 11)


def _unpack_11_10_11(packed: np.ndarray) -> np.ndarray:
    return np.stack([from_unorm(packed >> 21, 11), from_unorm(packed >> 11, 10), from_unorm(packed, 11)], axis=1)


def encode_compressed_ply(splats: SplatArrays) -> bytes:
    """The compressed PLY bytes of ``splats`` (Gaussians reordered along a Morton curve)."""
    n = len(splats)
    order = morton_order(np.asarray(splats.means, dtype=np.float64))
    means = np.asarray(splats.means, dtype=np.float64)[order]
    log_scales = np.asarray(splats.scales, dtype=np.float64)[order]
    colours = 0.5 + SH_C0 * np.asarray(splats.sh0, dtype=np.float64).reshape(n, 3)[order]

    position_lo, position_hi = _chunk_ranges(means)
    scale_lo, scale_hi = (np.clip(r, -SCALE_LIMIT, SCALE_LIMIT) for r in _chunk_ranges(log_scales))
    colour_lo, colour_hi = _chunk_ranges(colours)
    chunks = np.concatenate([position_lo, position_hi, scale_lo, scale_hi, colour_lo, colour_hi], axis=1)

    largest, three = smallest_three(unit_quats(splats.quats)[order])
    rotation = largest.astype(np.uint32) << 30
    for i, shift in enumerate((20, 10, 0)):
        rotation |= unorm(three[:, i] * _SQRT1_2 + 0.5, 10) << shift
    colour_unit = _normalise(colours, colour_lo, colour_hi)
    alpha = sigmoid(np.asarray(splats.opacities)[order]).astype(np.float64)
    packed = np.empty(n, dtype=[(name, "<u4") for name in VERTEX_FIELDS])
    packed["packed_position"] = _pack_11_10_11(_normalise(means, position_lo, position_hi))
    packed["packed_rotation"] = rotation
    packed["packed_scale"] = _pack_11_10_11(_normalise(log_scales, scale_lo, scale_hi))
    packed["packed_color"] = ((unorm(colour_unit[:, 0], 8) << 24) | (unorm(colour_unit[:, 1], 8) << 16)
                              | (unorm(colour_unit[:, 2], 8) << 8) | unorm(alpha, 8))

    rest = np.asarray(splats.shN, dtype=np.float64)[order]
    f_rest = rest.transpose(0, 2, 1).reshape(n, -1)  # channel-major, as in the 3DGS PLY
    sh_bytes = np.clip(np.trunc((f_rest / 8.0 + 0.5) * 256.0), 0, 255).astype(np.uint8)

    lines = ["ply", "format binary_little_endian 1.0", "comment written by recon",
             f"element chunk {len(chunks)}", *[f"property float {name}" for name in CHUNK_FIELDS + COLOR_FIELDS],
             f"element vertex {n}", *[f"property uint {name}" for name in VERTEX_FIELDS]]
    if f_rest.shape[1]:
        lines += [f"element sh {n}", *[f"property uchar f_rest_{i}" for i in range(f_rest.shape[1])]]
    header = ("\n".join(lines + ["end_header"]) + "\n").encode("ascii")
    return header + chunks.astype("<f4").tobytes() + packed.tobytes() + sh_bytes.tobytes()


def write_compressed_ply(path: str | os.PathLike, splats: SplatArrays) -> None:
    """Write ``splats`` as a PlayCanvas compressed PLY, atomically."""
    write_bytes_atomic(Path(path), encode_compressed_ply(splats))


def decode_compressed_ply(ply, path: str | os.PathLike) -> SplatArrays:
    """``SplatArrays`` from a parsed compressed PLY (a ``plyfile.PlyData``); ``ReconError`` when malformed."""
    chunk, vertex = ply["chunk"].data, ply["vertex"].data
    names = set(chunk.dtype.names or ())
    missing = [name for name in CHUNK_FIELDS if name not in names]
    if missing:
        raise ReconError(f"{path}: compressed PLY chunk element lacks {', '.join(missing)}")
    n = len(vertex)
    if n == 0:
        raise ReconError(f"{path}: the PLY has no Gaussians")
    if len(chunk) != -(-n // CHUNK):
        raise ReconError(f"{path}: {len(chunk)} chunks for {n} Gaussians; a compressed PLY has one per {CHUNK}")

    def columns(fields: tuple[str, ...]) -> np.ndarray:
        return np.stack([np.asarray(chunk[f], dtype=np.float64) for f in fields], axis=1)

    index = np.arange(n) // CHUNK
    bounds = columns(CHUNK_FIELDS)
    if not np.isfinite(bounds).all():
        raise ReconError(f"{path}: NaN or infinite chunk bounds")
    packed = {name: np.asarray(vertex[name], dtype=np.uint32) for name in VERTEX_FIELDS}

    def lerp(lo: np.ndarray, hi: np.ndarray, t: np.ndarray) -> np.ndarray:
        return lo[index] * (1.0 - t) + hi[index] * t

    means = lerp(bounds[:, 0:3], bounds[:, 3:6], _unpack_11_10_11(packed["packed_position"]))
    log_scales = lerp(bounds[:, 6:9], bounds[:, 9:12], _unpack_11_10_11(packed["packed_scale"]))
    rotation = packed["packed_rotation"]
    three = np.stack([(from_unorm(rotation >> s, 10) - 0.5) / _SQRT1_2 for s in (20, 10, 0)], axis=1)
    quats = from_smallest_three((rotation >> 30).astype(np.int64), three)
    colour = packed["packed_color"]
    rgb = np.stack([from_unorm(colour >> s, 8) for s in (24, 16, 8)], axis=1)
    if all(name in names for name in COLOR_FIELDS):
        ranges = columns(COLOR_FIELDS)
        rgb = lerp(ranges[:, 0:3], ranges[:, 3:6], rgb)

    f_rest = np.zeros((n, 0))
    if "sh" in [e.name for e in ply.elements]:
        sh = ply["sh"].data
        fields = sorted((f for f in sh.dtype.names or () if f.startswith("f_rest_")), key=lambda f: int(f[7:]))
        if len(fields) not in REST_FIELDS_TO_DEGREE or len(sh) != n:
            raise ReconError(f"{path}: sh element with {len(fields)} fields for {len(sh)} rows; expected 9, 24 or "
                             f"45 fields for {n} rows")
        codes = np.stack([np.asarray(sh[f], dtype=np.float64) for f in fields], axis=1) if fields else f_rest
        unit = np.where(codes == 0, 0.0, np.where(codes == 255, 1.0, (codes + 0.5) / 256.0))
        f_rest = (unit - 0.5) * 8.0
    rest = f_rest.shape[1] // 3
    return SplatArrays(
        means=means.astype(np.float32),
        sh0=((rgb - 0.5) / SH_C0).astype(np.float32).reshape(n, 1, 3),
        shN=f_rest.reshape(n, 3, rest).transpose(0, 2, 1).astype(np.float32).copy(),
        opacities=logit(from_unorm(colour, 8)),
        scales=log_scales.astype(np.float32),
        quats=quats.astype(np.float32),
    )
