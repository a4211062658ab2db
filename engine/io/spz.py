"""Niantic's SPZ format, gzip versions 2 and 3 (version 3 written), with spherical harmonics up to degree 3.

The file is one gzip stream holding a 16-byte little-endian header and then one array per attribute::

    uint32 magic 0x5053474e ("NGSP")   uint32 version (2 or 3)   uint32 number of Gaussians N
    uint8 SH degree   uint8 fractional bits   uint8 flags (bit 0: antialiased)   uint8 reserved (0)

    positions  N x 3 x int24   fixed point: value * 2^fractional_bits, rounded
    alphas     N x uint8       sigmoid(opacity logit) * 255
    colours    N x 3 x uint8   f_dc * 0.15 * 255 + 127.5 (0.15 < SH_C0 leaves room outside [0, 1])
    scales     N x 3 x uint8   (log scale + 10) * 16
    rotations  N x 4 bytes     v3: uint32, bits 30-31 the index (in x, y, z, w order) of the largest
                               component, then three 10-bit fields, first kept component highest: sign
                               bit then a 9-bit magnitude of |c| / sqrt(1/2);  v2: N x 3 x uint8 for
                               x, y, z (q * 127.5 + 127.5 with w >= 0), w derived
    sh         N x D x 3 uint8 D = 3, 8 or 15 coefficients, colour fastest; round(c * 128) + 128 snapped
                               to a step of 8 (degree 1) or 16 (degrees 2 and 3)

SPZ stores right-up-back axes (three.js); 3DGS PLY data (COLMAP, recon) is right-down-front, so y and z
flip on the way in and out: positions (y, z), quaternions (their y and z parts) and the SH coefficients whose
basis functions are odd in y or z (``SH_FLIPS``). Header flag bit 1 (extensions) is refused.
"""
from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from recon.engine.errors import ReconError
from recon.engine.io.atomic import write_bytes_atomic
from recon.engine.io.ply import SplatArrays
from recon.engine.io.splat_codec import (file_bytes, from_smallest_three, logit, sigmoid, smallest_three,
                                        unit_quats)

MAGIC = 0x5053474E
HEADER = struct.Struct("<IIIBBBB")
VERSION = 3
COLOR_SCALE = 0.15
FLAG_ANTIALIASED = 0x1
FLAG_EXTENSIONS = 0x2
FRACTIONAL_BITS = 12
SH_COEFFS = {0: 0, 1: 3, 2: 8, 3: 15}
# Sign of each higher SH coefficient (degree 1: y, z, x; degree 2: xy, yz, 3z^2-1, xz, x^2-y^2; degree 3 ...)
# under (x, y, z) -> (x, -y, -z).
SH_FLIPS = np.array([-1, -1, 1, -1, 1, 1, -1, 1, -1, 1, -1, -1, 1, -1, 1], dtype=np.float64)
AXIS_FLIPS = np.array([1.0, -1.0, -1.0])  # x, y, z of positions and of quaternion vector parts
_SQRT1_2 = np.sqrt(0.5)


def _fractional_bits(means: np.ndarray) -> int:
    """12 bits (about 0.25 mm in metres) unless the largest coordinate would overflow 24 signed bits."""
    largest = float(np.abs(means).max()) if means.size else 0.0
    bits = FRACTIONAL_BITS
    while bits > 0 and largest * (1 << bits) >= (1 << 23) - 1:
        bits -= 1
    return bits


def _sh_steps(coeffs: int) -> np.ndarray:
    """Quantisation step of each higher coefficient: 8 for degree 1 (5 bits), 16 above (4 bits)."""
    return np.where(np.arange(coeffs) < 3, 8, 16)


def encode_spz(splats: SplatArrays) -> bytes:
    """The gzipped SPZ (version 3) bytes of ``splats``."""
    n = len(splats)
    degree = splats.sh_degree
    if degree not in SH_COEFFS:
        raise ReconError(f"SPZ stores SH degrees 0-3, not {degree}")
    means = np.asarray(splats.means, dtype=np.float64) * AXIS_FLIPS
    bits = _fractional_bits(means)
    fixed = np.round(means * (1 << bits)).astype(np.int64).reshape(-1)
    positions = np.stack([fixed & 0xFF, (fixed >> 8) & 0xFF, (fixed >> 16) & 0xFF], axis=1).astype(np.uint8)

    alphas = np.clip(np.round(sigmoid(splats.opacities).astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    colours = np.asarray(splats.sh0, dtype=np.float64).reshape(n, 3) * (COLOR_SCALE * 255.0) + 127.5
    scales = (np.asarray(splats.scales, dtype=np.float64) + 10.0) * 16.0

    wxyz = unit_quats(splats.quats)
    xyzw = np.concatenate([wxyz[:, 1:] * AXIS_FLIPS, wxyz[:, :1]], axis=1)
    largest, three = smallest_three(xyzw)
    magnitude = np.floor(511.0 * np.abs(three) / _SQRT1_2 + 0.5).astype(np.uint32).clip(0, 511)
    fields = ((three < 0).astype(np.uint32) << 9) | magnitude
    packed = (largest.astype(np.uint32) << 30) | (fields[:, 0] << 20) | (fields[:, 1] << 10) | fields[:, 2]

    coeffs = SH_COEFFS[degree]
    sh = np.asarray(splats.shN, dtype=np.float64).reshape(n, coeffs, 3) * SH_FLIPS[:coeffs, None]
    steps = _sh_steps(coeffs)[None, :, None]
    codes = np.round(sh * 128.0) + 128.0
    codes = (codes + steps // 2) // steps * steps

    header = HEADER.pack(MAGIC, VERSION, n, degree, bits, FLAG_ANTIALIASED if splats.antialiased else 0, 0)
    body = b"".join([
        positions.tobytes(),
        alphas.tobytes(),
        np.clip(np.round(colours), 0, 255).astype(np.uint8).tobytes(),
        np.clip(np.round(scales), 0, 255).astype(np.uint8).tobytes(),
        packed.astype("<u4").tobytes(),
        np.clip(codes, 0, 255).astype(np.uint8).tobytes(),
    ])
    return gzip.compress(header + body, compresslevel=9, mtime=0)


def write_spz(path: str | os.PathLike, splats: SplatArrays) -> None:
    """Write ``splats`` as an SPZ file (version 3), atomically."""
    write_bytes_atomic(Path(path), encode_spz(splats))


def decode_spz(data: bytes, path: str | os.PathLike = "<bytes>") -> SplatArrays:
    """``SplatArrays`` from gzipped SPZ bytes (versions 2 and 3); ``ReconError`` naming ``path`` when malformed."""
    try:
        raw = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise ReconError(f"{path}: not a gzip-compressed SPZ file ({exc})") from None
    if len(raw) < HEADER.size:
        raise ReconError(f"{path}: SPZ data shorter than its 16-byte header")
    magic, version, n, degree, bits, flags, _ = HEADER.unpack_from(raw)
    if magic != MAGIC:
        raise ReconError(f"{path}: bad SPZ magic {magic:#010x} (expected {MAGIC:#010x})")
    if version not in (2, 3):
        raise ReconError(f"{path}: SPZ version {version} is not supported (2 and 3 are)")
    if degree not in SH_COEFFS:
        raise ReconError(f"{path}: SPZ SH degree {degree} is not supported (0-3 are)")
    if flags & FLAG_EXTENSIONS:
        raise ReconError(f"{path}: the SPZ file uses extensions, which recon does not read")
    if n == 0:
        raise ReconError(f"{path}: the SPZ file has no Gaussians")
    coeffs = SH_COEFFS[degree]
    rotation_bytes = 4 if version >= 3 else 3
    sizes = [9 * n, n, 3 * n, 3 * n, rotation_bytes * n, 3 * coeffs * n]
    if len(raw) != HEADER.size + sum(sizes):
        raise ReconError(f"{path}: SPZ body holds {len(raw) - HEADER.size} bytes, {sum(sizes)} expected for "
                         f"{n} Gaussians of SH degree {degree}")
    arrays, offset = [], HEADER.size
    for size in sizes:
        arrays.append(np.frombuffer(raw, dtype=np.uint8, count=size, offset=offset))
        offset += size
    positions, alphas, colours, scales, rotations, sh = arrays

    p = positions.reshape(n * 3, 3).astype(np.int32)
    fixed = p[:, 0] | (p[:, 1] << 8) | (p[:, 2] << 16)
    fixed = np.where(fixed & 0x800000, fixed - (1 << 24), fixed)
    means = fixed.reshape(n, 3).astype(np.float64) / (1 << bits) * AXIS_FLIPS

    if version >= 3:
        packed = rotations.view("<u4").astype(np.uint32)
        fields = np.stack([(packed >> 20) & 0x3FF, (packed >> 10) & 0x3FF, packed & 0x3FF], axis=1)
        three = (fields & 0x1FF).astype(np.float64) / 511.0 * _SQRT1_2 * np.where(fields & 0x200, -1.0, 1.0)
        xyzw = from_smallest_three((packed >> 30).astype(np.int64), three)
    else:
        xyz = rotations.reshape(n, 3).astype(np.float64) / 127.5 - 1.0
        xyzw = np.concatenate([xyz, np.sqrt(np.clip(1.0 - (xyz * xyz).sum(1, keepdims=True), 0.0, 1.0))], axis=1)
    wxyz = np.concatenate([xyzw[:, 3:], xyzw[:, :3] * AXIS_FLIPS], axis=1)
    sh0 = (colours.reshape(n, 1, 3).astype(np.float64) / 255.0 - 0.5) / COLOR_SCALE
    shN = (sh.reshape(n, coeffs, 3).astype(np.float64) - 128.0) / 128.0 * SH_FLIPS[:coeffs, None]

    return SplatArrays(
        means=means.astype(np.float32),
        sh0=sh0.astype(np.float32),
        shN=shN.astype(np.float32),
        opacities=logit(alphas.astype(np.float64) / 255.0),
        scales=(scales.reshape(n, 3).astype(np.float64) / 16.0 - 10.0).astype(np.float32),
        quats=wxyz.astype(np.float32),
        antialiased=bool(flags & FLAG_ANTIALIASED),
    )


def read_spz(path: str | os.PathLike) -> SplatArrays:
    """Read an SPZ file (see ``decode_spz``)."""
    return decode_spz(file_bytes(path), path)
