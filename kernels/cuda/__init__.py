"""CUDA C backend (issue 9): plain ``extern "C"`` kernels in ``*.cu`` here, loaded and launched through pycuda.

``backend="cuda"`` (or ``RECON_BACKEND=cuda``) runs the rasterizer's tile blending, forward and backward, with
these kernels and its other stages with Triton. The kernels come from the ``*.fatbin`` files built by
``make cuda`` or, without them, are compiled at first use (see ``loader.py``). Without pycuda or a GPU,
``kernels/backend.py`` falls back with a one-line warning; this package imports without either.
"""
from __future__ import annotations

import functools
import warnings

# The CUDA sources each public kernel needs.
KERNEL_SOURCES: dict[str, tuple[str, ...]] = {"rasterize": ("blend_forward", "blend_backward")}


@functools.lru_cache(maxsize=None)
def has_kernel(kernel: str) -> bool:
    """True when the CUDA C code of ``kernel`` (e.g. ``"rasterize"``) loads on the current GPU.

    Loading compiles the sources at first use if no fatbin was built. Any failure (no pycuda, no GPU, no nvcc,
    a compile error) gives False and one warning line saying why; the dispatcher then falls back.
    """
    if kernel not in KERNEL_SOURCES:
        return False
    try:
        import torch

        from recon.kernels.cuda import loader

        index = torch.cuda.current_device()
        for source in KERNEL_SOURCES[kernel]:
            loader.module(source, index)
    except Exception as exc:  # noqa: BLE001 (a missing backend must never raise here)
        from recon.kernels.backend import BackendFallbackWarning

        reason = (str(exc).strip().splitlines() or [""])[0]
        warnings.warn(f"recon: CUDA C kernels for {kernel} do not load: {type(exc).__name__}: {reason}",
                      BackendFallbackWarning, stacklevel=2)
        return False
    return True
