"""Gaussian splat files in every format recon reads and writes, chosen by suffix (and PLY layout).

| format          | suffix                  | holds                                  | module            |
|-----------------|-------------------------|----------------------------------------|-------------------|
| ``ply``         | ``.ply``                | INRIA 3DGS PLY, float32, exact         | ``ply.py``        |
| ``compressed``  | ``.ply`` (``.compressed.ply`` by custom) | PlayCanvas chunks, SH as bytes | ``compressed_ply.py`` |
| ``splat``       | ``.splat``              | 32 bytes a Gaussian, no higher SH      | ``dot_splat.py``  |
| ``spz``         | ``.spz``                | Niantic SPZ v3 (gzip), SH to degree 3  | ``spz.py``        |

Every reader returns ``SplatArrays`` in the file's coordinates (raw, pre-activation values) or raises
``ReconError`` naming the file.
"""
from __future__ import annotations

import os
from pathlib import Path

from recon.engine.errors import ReconError
from recon.engine.io.ply import SplatArrays, check_finite, read_ply_data, read_splat_ply, write_splat_ply

SPLAT_SUFFIXES = (".ply", ".splat", ".spz")
FORMATS = ("ply", "compressed", "splat", "spz")


def is_splat_file(path: str | os.PathLike) -> bool:
    """True when ``path`` names a file whose suffix is one of ``SPLAT_SUFFIXES``."""
    return Path(path).suffix.lower() in SPLAT_SUFFIXES


def read_splats(path: str | os.PathLike) -> SplatArrays:
    """Read a splat file of any format in ``FORMATS`` (PLY layouts told apart by their elements)."""
    from recon.engine.io import compressed_ply, dot_splat, spz

    path = Path(path)
    if not path.is_file():
        raise ReconError(f"{path}: {'not a file' if path.exists() else 'no such file'}")
    suffix = path.suffix.lower()
    if suffix == ".splat":
        return check_finite(dot_splat.read_splat(path), path)
    if suffix == ".spz":
        return check_finite(spz.read_spz(path), path)
    if suffix != ".ply":
        raise ReconError(f"{path}: not a splat file; recon reads {', '.join(SPLAT_SUFFIXES)}")
    if not _is_compressed(path):
        return read_splat_ply(path)
    return check_finite(compressed_ply.decode_compressed_ply(read_ply_data(path), path), path)


def _is_compressed(path: Path) -> bool:
    """True when the PLY header declares PlayCanvas's chunk and packed vertex layout."""
    from recon.engine.io.compressed_ply import VERTEX_FIELDS

    with open(path, "rb") as fh:
        header = fh.read(64 * 1024).split(b"end_header", 1)[0].decode("ascii", errors="replace")
    words = header.split()
    return "chunk" in words and all(name in words for name in VERTEX_FIELDS)


def write_splats(path: str | os.PathLike, splats: SplatArrays, fmt: str) -> None:
    """Write ``splats`` to ``path`` in format ``fmt`` (one of ``FORMATS``), atomically."""
    from recon.engine.io import compressed_ply, dot_splat, spz

    writers = {"ply": write_splat_ply, "compressed": compressed_ply.write_compressed_ply,
               "splat": dot_splat.write_splat, "spz": spz.write_spz}
    if fmt not in writers:
        raise ReconError(f"unknown splat format {fmt!r}; choose one of {', '.join(FORMATS)}")
    writers[fmt](path, splats)
