"""GPU kernels with pure-PyTorch references; each public op dispatches through ``backend.py``.

Public ops (imported on first use, so ``import recon.kernels`` stays cheap). No subpackage shares its op's
name: Python binds an imported subpackage onto its parent, which would shadow a function of that name.

* ``rasterize``        tile-based Gaussian splatting, forward and backward (``kernels/splatting``)
* ``gaussian_pixel_weights``  per-Gaussian blending weights summed against pixel weights (``kernels/splatting``)
* ``hash_encode``      multiresolution hash-grid encoding (``kernels/hashgrid``)
* ``composite_rays``   volume rendering over packed ray samples (``kernels/volume``)
* ``marching_cubes``   iso-surface extraction from a dense grid (``kernels/isosurface``)
"""
from __future__ import annotations

import importlib
from typing import Any

_OPS = {
    "rasterize": "recon.kernels.splatting",
    "gaussian_pixel_weights": "recon.kernels.splatting",
    "hash_encode": "recon.kernels.hashgrid",
    "composite_rays": "recon.kernels.volume",
    "marching_cubes": "recon.kernels.isosurface",
}

__all__ = list(_OPS)


def __getattr__(name: str) -> Any:
    if name in _OPS:
        return getattr(importlib.import_module(_OPS[name]), name)
    raise AttributeError(f"module 'recon.kernels' has no attribute {name!r}")
