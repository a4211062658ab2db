"""3D Gaussian splats in the INRIA 3DGS PLY layout (binary little endian, element ``vertex``).

Per vertex, all ``float``: ``x y z nx ny nz f_dc_0..2 f_rest_0..M-1 opacity scale_0..2 rot_0..3``.
``f_rest`` is channel-major (all coefficients of red, then green, then blue) with M = 3 * ((d + 1)^2 - 1)
for SH degree d (0, 9, 24 or 45 fields); ``opacity`` is a logit, ``scale_*`` are logs and ``rot_*`` a
quaternion w, x, y, z (not necessarily normalised). Arrays here are the raw, pre-activation values.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recon.engine.errors import ReconError
from recon.engine.io.atomic import atomic_path

# Number of f_rest fields -> SH degree.
REST_FIELDS_TO_DEGREE = {0: 0, 9: 1, 24: 2, 45: 3}


@dataclass
class SplatArrays:
    """Raw Gaussian parameters as stored in a 3DGS PLY (float32 numpy arrays).

    Attributes:
        means: [N, 3] positions.
        sh0: [N, 1, 3] degree-0 SH coefficients (f_dc).
        shN: [N, K - 1, 3] higher SH coefficients, K = (sh_degree + 1) ** 2.
        opacities: [N] logits.
        scales: [N, 3] log scales.
        quats: [N, 4] quaternions w, x, y, z.
        antialiased: rendered Mip-Splatting style (kept by formats that store it, e.g. SPZ).
    """

    means: np.ndarray
    sh0: np.ndarray
    shN: np.ndarray
    opacities: np.ndarray
    scales: np.ndarray
    quats: np.ndarray
    antialiased: bool = False

    @property
    def sh_degree(self) -> int:
        return int(round(np.sqrt(self.shN.shape[1] + 1))) - 1

    def __len__(self) -> int:
        return int(self.means.shape[0])


def _field_names(rest_count: int) -> list[str]:
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
            + [f"f_rest_{i}" for i in range(rest_count)]
            + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


def write_splat_ply(path: str | os.PathLike, splats: SplatArrays) -> None:
    """Write ``splats`` as an INRIA 3DGS PLY, atomically."""
    from plyfile import PlyData, PlyElement

    n, rest = len(splats), splats.shN.shape[1]
    f_rest = np.asarray(splats.shN, dtype=np.float32).transpose(0, 2, 1).reshape(n, 3 * rest)  # channel-major
    columns = np.concatenate([
        np.asarray(splats.means, dtype=np.float32).reshape(n, 3),
        np.zeros((n, 3), dtype=np.float32),
        np.asarray(splats.sh0, dtype=np.float32).reshape(n, 3),
        f_rest,
        np.asarray(splats.opacities, dtype=np.float32).reshape(n, 1),
        np.asarray(splats.scales, dtype=np.float32).reshape(n, 3),
        np.asarray(splats.quats, dtype=np.float32).reshape(n, 4),
    ], axis=1)
    names = _field_names(3 * rest)
    records = np.empty(n, dtype=[(name, "<f4") for name in names])
    for i, name in enumerate(names):
        records[name] = columns[:, i]
    ply = PlyData([PlyElement.describe(records, "vertex")], text=False, byte_order="<")
    with atomic_path(Path(path)) as tmp:
        ply.write(str(tmp))


def read_ply_data(path: str | os.PathLike):
    """Parse any PLY file with plyfile (a ``PlyData``); ``ReconError`` naming the file when it cannot."""
    from plyfile import PlyData

    try:
        return PlyData.read(str(path))
    except FileNotFoundError:
        raise ReconError(f"{path}: no such file") from None
    except Exception as exc:  # plyfile raises several types for malformed headers and bodies
        raise ReconError(f"{path}: not a readable PLY file ({exc})") from None


def read_splat_ply(path: str | os.PathLike) -> SplatArrays:
    """Read an INRIA 3DGS PLY (written by recon or by other 3DGS tools).

    Raises ``ReconError`` naming the file when it is unreadable, lacks a field, has an ``f_rest`` count
    other than 0/9/24/45, or holds NaN or infinite values.
    """
    path = Path(path)
    ply = read_ply_data(path)
    if "vertex" not in [e.name for e in ply.elements]:
        raise ReconError(f"{path}: no 'vertex' element, not a 3DGS PLY")
    vertex = ply["vertex"].data
    present = set(vertex.dtype.names or ())
    rest_count = sum(1 for name in present if name.startswith("f_rest_"))
    if rest_count not in REST_FIELDS_TO_DEGREE:
        raise ReconError(f"{path}: {rest_count} f_rest fields; a 3DGS PLY has 0, 9, 24 or 45")
    missing = [name for name in _field_names(rest_count) if name not in present and name not in ("nx", "ny", "nz")]
    if missing:
        raise ReconError(f"{path}: missing field(s) {', '.join(missing)}, not a 3DGS PLY")
    n = len(vertex)
    if n == 0:
        raise ReconError(f"{path}: the PLY has no Gaussians")

    def cols(names: list[str]) -> np.ndarray:
        if not names:
            return np.zeros((n, 0), dtype=np.float32)
        return np.stack([np.asarray(vertex[name], dtype=np.float32) for name in names], axis=1)

    rest = rest_count // 3
    splats = SplatArrays(
        means=cols(["x", "y", "z"]),
        sh0=cols([f"f_dc_{i}" for i in range(3)]).reshape(n, 1, 3),
        shN=cols([f"f_rest_{i}" for i in range(rest_count)]).reshape(n, 3, rest).transpose(0, 2, 1).copy(),
        opacities=np.asarray(vertex["opacity"], dtype=np.float32),
        scales=cols([f"scale_{i}" for i in range(3)]),
        quats=cols([f"rot_{i}" for i in range(4)]),
    )
    return check_finite(splats, path)


def check_finite(splats: SplatArrays, path: str | os.PathLike) -> SplatArrays:
    """``splats`` unchanged; ``ReconError`` naming ``path`` when any value is NaN or infinite."""
    n = len(splats)
    for name in ("means", "sh0", "shN", "opacities", "scales", "quats"):
        bad = ~np.isfinite(getattr(splats, name))
        if bad.any():
            raise ReconError(f"{path}: {int(bad.reshape(n, -1).any(1).sum())} Gaussian(s) have NaN or infinite "
                             f"values in {name}")
    return splats
