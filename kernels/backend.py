"""One place that picks the backend of every kernel: ``torch`` | ``triton`` | ``cuda``.

Order of precedence: the ``backend=`` argument of the op, then the ``RECON_BACKEND`` environment
variable, then the per-kernel default for the tensors' device (``DEFAULT_GPU_BACKEND``; measured choices
are recorded in docs/benchmarks.md). CPU tensors run the torch reference, except that ``triton`` is
honoured on the CPU when ``TRITON_INTERPRET=1`` (how the suite checks Triton kernels without a GPU).
A backend that cannot run here falls back with a one-line warning, never a traceback.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import warnings

import torch

BACKENDS = ("torch", "triton", "cuda")

# Default GPU backend per kernel; a kernel absent here defaults to "triton".
DEFAULT_GPU_BACKEND: dict[str, str] = {}


class BackendFallbackWarning(UserWarning):
    """A requested backend could not run here, so another one was used."""


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    """True when the ``triton`` package imports."""
    return importlib.util.find_spec("triton") is not None


def triton_interpreting() -> bool:
    """True when Triton kernels run in the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.lru_cache(maxsize=None)
def pycuda_available() -> bool:
    """True when ``pycuda`` imports (the ``cuda`` extra) and a CUDA device is present."""
    return torch.cuda.is_available() and importlib.util.find_spec("pycuda") is not None


@functools.lru_cache(maxsize=None)
def _warn_once(message: str) -> None:
    warnings.warn(message, BackendFallbackWarning, stacklevel=3)


def _usable(backend: str, device: torch.device, kernel: str) -> bool:
    if backend == "torch":
        return True
    if backend == "triton":
        return triton_available() and (device.type == "cuda" or triton_interpreting())
    if backend == "cuda":
        if device.type != "cuda" or not pycuda_available():
            return False
        from recon.kernels.cuda import has_kernel  # imported lazily: pycuda loads only here

        return has_kernel(kernel)
    return False


def resolve_backend(kernel: str, device: torch.device | str, backend: str | None = None) -> str:
    """Name the backend that runs ``kernel`` on ``device``.

    Args:
        kernel: the kernel's name, e.g. ``"rasterize"``, ``"hash_encode"``.
        device: the device of the op's input tensors.
        backend: an explicit choice; ``None`` reads ``RECON_BACKEND`` and then the default.

    Returns:
        One of ``BACKENDS``. An unknown name raises ``ValueError``.
    """
    device = torch.device(device)
    requested = backend or os.environ.get("RECON_BACKEND") or None
    if requested is not None and requested not in BACKENDS:
        raise ValueError(f"unknown backend {requested!r}; choose one of {', '.join(BACKENDS)}")
    if requested is None:
        if device.type != "cuda":
            return "torch"
        requested = DEFAULT_GPU_BACKEND.get(kernel, "triton")
    if _usable(requested, device, kernel):
        return requested
    fallback = "triton" if requested == "cuda" and _usable("triton", device, kernel) else "torch"
    _warn_once(f"recon: {kernel}: backend {requested!r} cannot run on {device.type} here; using {fallback!r}")
    return fallback
