"""Find, load and launch the CUDA C kernels of ``kernels/cuda/*.cu`` through pycuda, on PyTorch's context and
stream, with tensors' device pointers as arguments.

Where a source's code comes from, first match wins:

1. ``<name>.fatbin`` next to ``<name>.cu``, built by ``make cuda`` (CMakeLists.txt at the repository root) and
   shipped as package data; skipped when older than its ``.cu`` or a ``.cuh`` or when the driver refuses it.
2. ``<cache>/<name>-sm_XY-<hash>.cubin``, where ``<cache>`` is ``$RECON_CUDA_CACHE`` or ``~/.cache/recon/cuda``
   and ``<hash>`` is the SHA-256 of every ``.cu``/``.cuh`` source here plus the arch.
3. Compiled now by ``pycuda.compiler.compile`` (nvcc from PATH or ``$CUDA_HOME/bin``) for the device's arch,
   announced by one line on stderr, then stored in that cache.

Context: ``pycuda.autoprimaryctx`` initialises the driver on the device's *primary* context, which is the
context PyTorch's runtime calls use, so ``tensor.data_ptr()`` is valid inside the kernels. Each launch also
pushes the primary context of the tensors' device, so ``cuda:1`` tensors work.

Streams: pycuda launches on a ``pycuda.driver.Stream`` or on ``None`` (the legacy default stream, handle 0) and
cannot wrap a foreign handle: ``Stream(flags)`` only creates a new stream and ``Stream.handle`` is read-only
(``PYCUDA_PARSE_STREAM_PY`` in pycuda's C++ extracts a ``stream`` object). So when PyTorch's current stream is
its default stream (``cuda_stream == 0``, the usual case) kernels launch with ``stream=None``, which *is* that
stream. Under ``torch.cuda.stream(s)`` they launch on one pycuda stream per device that is ordered after the
current stream and before its later work by events in both directions (``torch.cuda.ExternalStream`` wraps
pycuda's handle so ``wait_stream`` can be used), which keeps PyTorch's stream semantics and its caching
allocator's reuse rules.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

KERNEL_DIR = Path(__file__).resolve().parent
SOURCES = ("blend_forward", "blend_backward")


def cache_dir() -> Path:
    """Folder of the cubins compiled at first use (``$RECON_CUDA_CACHE`` or ``~/.cache/recon/cuda``)."""
    return Path(os.environ.get("RECON_CUDA_CACHE") or Path.home() / ".cache" / "recon" / "cuda")


def source_hash(arch: str) -> str:
    """SHA-256 (hex, 16 digits) of every ``.cu``/``.cuh`` file next to this module, plus ``arch``."""
    digest = hashlib.sha256(arch.encode())
    for path in sorted(KERNEL_DIR.glob("*.cu")) + sorted(KERNEL_DIR.glob("*.cuh")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def prebuilt_fatbin(name: str) -> Path | None:
    """``<name>.fatbin`` next to the sources, or None when absent or older than ``<name>.cu`` or a header here
    (the files CMakeLists.txt makes it depend on)."""
    fatbin = KERNEL_DIR / f"{name}.fatbin"
    if not fatbin.is_file() or fatbin.stat().st_size == 0:
        return None
    newest = max(p.stat().st_mtime for p in [KERNEL_DIR / f"{name}.cu", *KERNEL_DIR.glob("*.cuh")])
    return fatbin if fatbin.stat().st_mtime >= newest else None


@functools.lru_cache(maxsize=None)
def _driver() -> Any:
    """``pycuda.driver`` with the primary context set up (imported lazily: pycuda is the optional ``cuda`` extra)."""
    torch.cuda.init()  # PyTorch first, so that both share the primary context it retains
    importlib.import_module("pycuda.autoprimaryctx")  # initialises the driver and retains a primary context
    import pycuda.driver as cuda

    return cuda


@functools.lru_cache(maxsize=None)
def _primary_context(index: int) -> Any:
    return _driver().Device(index).retain_primary_context()


@contextlib.contextmanager
def _on_device(index: int) -> Iterator[None]:
    """Make device ``index``'s primary context (PyTorch's) current for pycuda calls, then restore the previous one.

    pycuda re-activates the context under its own stack top on pop (device 0's from autoprimaryctx), so with
    several GPUs PyTorch's current device is set again afterwards.
    """
    cuda = _driver()
    previous = torch.cuda.current_device()
    _primary_context(index).push()
    try:
        yield
    finally:
        cuda.Context.pop()
        if torch.cuda.device_count() > 1:
            torch.cuda.set_device(previous)


def _arch(index: int) -> str:
    major, minor = torch.cuda.get_device_capability(index)
    return f"sm_{major}{minor}"


def _compile(name: str, arch: str) -> bytes:
    """Compile ``<name>.cu`` for ``arch`` with nvcc through pycuda, caching the cubin by source hash + arch."""
    cached = cache_dir() / f"{name}-{arch}-{source_hash(arch)}.cubin"
    if cached.is_file():
        return cached.read_bytes()
    print(f"recon: no prebuilt kernels/cuda/{name}.fatbin (build it with `make cuda`); compiling {name}.cu for "
          f"{arch} with nvcc through pycuda, cached in {cached.parent}", file=sys.stderr)
    from pycuda.compiler import compile as nvcc_compile

    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "/usr/local/cuda"
    nvcc = shutil.which("nvcc") or os.path.join(cuda_home, "bin", "nvcc")
    cubin = nvcc_compile((KERNEL_DIR / f"{name}.cu").read_text(), nvcc=nvcc, no_extern_c=True, arch=arch,
                         options=["-O3"], include_dirs=[str(KERNEL_DIR)], cache_dir=False)
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(f".{os.getpid()}.tmp")
    partial.write_bytes(cubin)
    partial.replace(cached)  # atomic: concurrent first uses never read half a file
    return cubin


@functools.lru_cache(maxsize=None)
def module(name: str, index: int) -> Any:
    """The pycuda module of ``<name>.cu`` loaded in device ``index``'s primary context."""
    cuda = _driver()
    with _on_device(index):
        fatbin = prebuilt_fatbin(name)
        if fatbin is not None:
            try:
                return cuda.module_from_buffer(fatbin.read_bytes())
            except cuda.Error as exc:  # e.g. built for other archs and without PTX this driver can JIT
                print(f"recon: {fatbin} does not load on this GPU ({str(exc).splitlines()[0]}); compiling instead",
                      file=sys.stderr)
        return cuda.module_from_buffer(_compile(name, _arch(index)))


@functools.lru_cache(maxsize=None)
def function(source: str, kernel: str, index: int, arg_format: str) -> Any:
    """Kernel ``kernel`` of ``<source>.cu`` on device ``index``, prepared for ``arg_format`` (struct codes)."""
    func = module(source, index).get_function(kernel)
    func.prepare(arg_format)
    return func


@functools.lru_cache(maxsize=None)
def _side_stream(index: int) -> tuple[Any, torch.cuda.ExternalStream]:
    """A pycuda stream on device ``index`` and the same stream as PyTorch sees it."""
    with _on_device(index):
        stream = _driver().Stream()
    return stream, torch.cuda.ExternalStream(stream.handle, device=torch.device("cuda", index))


def _arg(value: Any) -> tuple[str, Any]:
    """struct code and value of one kernel argument: tensors (and None) as pointers, int32, float32."""
    if value is None:
        return "P", 0
    if isinstance(value, torch.Tensor):
        if not value.is_cuda or not value.is_contiguous():
            raise ValueError(f"CUDA kernel arguments must be contiguous CUDA tensors, got {value.device} "
                             f"contiguous={value.is_contiguous()}")
        return "P", value.data_ptr()
    if isinstance(value, bool):
        return "i", int(value)
    if isinstance(value, int):
        return "i", value
    if isinstance(value, float):
        return "f", value
    raise TypeError(f"unsupported CUDA kernel argument {type(value).__name__}")


def launch(source: str, kernel: str, device: torch.device, grid: tuple[int, int], block: int, shared_bytes: int,
           args: Sequence[Any]) -> None:
    """Launch ``kernel`` of ``<source>.cu`` on a ``grid`` (x, y) of blocks of ``block`` threads (1D) with
    ``shared_bytes`` of dynamic shared memory, on PyTorch's current stream of ``device``. ``args``: tensors/None
    (pointers), ints, floats."""
    if grid[0] == 0 or grid[1] == 0:
        return
    index = device.index if device.index is not None else torch.cuda.current_device()
    codes, values = zip(*(_arg(a) for a in args))
    current = torch.cuda.current_stream(torch.device("cuda", index))
    with _on_device(index):
        func = function(source, kernel, index, "".join(codes))
        if current.cuda_stream == 0:  # PyTorch's default stream is the legacy default stream: pycuda's None
            func.prepared_async_call(tuple(grid), (block, 1, 1), None, *values, shared_size=shared_bytes)
            return
        stream, as_torch = _side_stream(index)
        as_torch.wait_stream(current)
        func.prepared_async_call(tuple(grid), (block, 1, 1), stream, *values, shared_size=shared_bytes)
        current.wait_stream(as_torch)
