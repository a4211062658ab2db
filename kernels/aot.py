"""Ahead-of-time compilation of every Triton kernel specialisation the public ops launch, for real GPUs, on a
machine without one.

Triton's CPU interpreter (``TRITON_INTERPRET=1``) accepts code that its real code generator rejects, so a suite
that only interprets can pass while every GPU fails at the first call. This module closes that gap in two steps:

1. ``record_public_op_launches()`` runs the public ops (``rasterize``, ``gaussian_pixel_weights``,
   ``hash_encode``, ``composite_rays``, ``marching_cubes``) forward and backward on small CPU inputs over their
   options, in the interpreter, and records each kernel launch: the kernel, its arguments (tensor dtype and
   16-byte alignment, scalar values) and its constexprs and launch options. The specialisations therefore come
   from the code's own launches, not from a hand-kept list.
2. ``compile_launch()`` (in a process that is *not* interpreting) feeds a recorded launch through Triton's own
   argument binder, so the signature, constexprs and divisibility attributes are exactly those a GPU launch
   would specialise on, and compiles it to a cubin for ``sm_<arch>`` with Triton's bundled ptxas. Resource
   use (registers, stack) is read back from the cubin with the bundled ``cuobjdump``; where there is a stack
   frame, ``ptxas -v`` says how many bytes of it are spilled registers.

Compiled kernels land in Triton's on-disk cache (keyed by source, options and target), so a second run only
binds and looks up. Command line: ``python -m recon.kernels.aot --arch 80 90`` prints one line per
specialisation and exits non-zero when any fails to compile or spills registers.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

# Modules holding the Triton kernels of the public ops (each kernel must be launched by ``exercise_public_ops``).
KERNEL_MODULES = (
    "recon.kernels.splatting.triton",
    "recon.kernels.hashgrid.triton",
    "recon.kernels.volume.triton",
    "recon.kernels.isosurface.triton",
)
ARCHS = (80, 90)


@dataclass(frozen=True)
class Launch:
    """One recorded kernel launch: enough to rebuild the arguments Triton specialises on."""

    kernel: str  # "module:name"
    args: tuple  # per positional argument: ("tensor", dtype name, aligned to 16 bytes) or a scalar (int/float/bool/None)
    kwargs: tuple  # sorted (name, value) pairs: constexprs and launch options (num_warps, ...)

    def describe(self) -> str:
        """A short human-readable specialisation: the kernel, its keyword constexprs/options and any half-precision
        tensor arguments."""
        consts = ", ".join(f"{k}={v}" for k, v in self.kwargs)
        halves = sorted({a[1] for a in self.args if isinstance(a, tuple) and a[1] in ("float16", "bfloat16")})
        return f"{self.kernel.split(':')[1]}[{consts}]" + (f" ({', '.join(halves)} tensors)" if halves else "")


@dataclass
class Compiled:
    """The outcome of compiling one specialisation for one arch."""

    kernel: str
    specialisation: str  # the bound signature, constexprs and attributes, as Triton keys its cache
    arch: int
    ok: bool
    error: str = ""
    registers: int = 0
    stack: int = 0  # bytes of stack frame per thread (spills live there, but not only they)
    shared: int = 0  # bytes of dynamic shared memory per program (Triton's own, for reductions and layouts)
    launch: str = ""
    spill_stores: int = 0  # bytes per thread, from ``ptxas -v`` (run only when there is a stack frame)
    spill_loads: int = 0


# ----------------------------------------------------------------------------------------------- recording
def _describe_arg(value: Any) -> Any:
    if hasattr(value, "data_ptr") and hasattr(value, "dtype"):
        return ("tensor", str(value.dtype).removeprefix("torch."), value.data_ptr() % 16 == 0)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot record a kernel argument of type {type(value).__name__}")


@contextlib.contextmanager
def record_launches() -> Iterator[list[Launch]]:
    """Record every Triton kernel launch inside the block (the interpreter must be on: ``TRITON_INTERPRET=1``)."""
    from triton.runtime.interpreter import InterpretedFunction

    from recon.kernels.backend import triton_interpreting

    if not triton_interpreting():
        raise RuntimeError("recording launches needs TRITON_INTERPRET=1 (set before the kernels are imported)")
    launches: list[Launch] = []
    original = InterpretedFunction.run

    def run(self, *args, grid, warmup, **kwargs):
        launches.append(Launch(f"{self.fn.__module__}:{self.fn.__name__}", tuple(_describe_arg(a) for a in args),
                               tuple(sorted(kwargs.items()))))
        return original(self, *args, grid=grid, warmup=warmup, **kwargs)

    InterpretedFunction.run = run
    try:
        yield launches
    finally:
        InterpretedFunction.run = original


def _random_gaussians(n: int, channels: int, generator) -> tuple:
    import torch

    means = torch.randn(n, 3, generator=generator) * 0.5
    quats = torch.randn(n, 4, generator=generator)
    scales = torch.rand(n, 3, generator=generator) * 0.15 + 0.01
    opacities = torch.rand(n, generator=generator) * 0.9 + 0.05
    colors = torch.rand(n, channels, generator=generator)
    return means, quats, scales, opacities, colors


def _camera(width: int, height: int):
    import torch

    viewmats = torch.eye(4)[None].clone()
    viewmats[0, 2, 3] = 3.0
    Ks = torch.tensor([[[1.1 * width, 0.0, width / 2], [0.0, 1.1 * width, height / 2], [0.0, 0.0, 1.0]]])
    return viewmats, Ks


def _backward(outputs, leaves) -> None:
    import torch

    loss = sum((o.float() * torch.randn_like(o.float())).sum() for o in outputs if o.requires_grad)
    torch.autograd.grad(loss, [t for t in leaves if t.requires_grad], allow_unused=True)


# Options each op is exercised over. Channel counts cover every blend block width (1, 2, 4, 8, 16) and chunked
# channels with and without a remainder; sizes are odd and even so Triton's divisibility attributes vary.
RASTER_CHANNELS = (1, 2, 3, 7, 16, 33, 64)
RASTER_TILES = (8, 16, 32)
HASH_FEATURES = (1, 2, 4, 8)


def exercise_public_ops(seed: int = 0) -> None:
    """Run every public op, forward and backward, over its options on tiny CPU inputs with ``backend="triton"``."""
    import torch

    from recon.kernels import composite_rays, gaussian_pixel_weights, hash_encode, marching_cubes, rasterize
    from recon.kernels.splatting.op import ABSGRAD_MAX_CHANNELS

    g = torch.Generator().manual_seed(seed)
    width, height = 13, 9  # 2 x 2 tiles of 8, one tile of 16 or 32: enough for every branch, fast to interpret
    viewmats, Ks = _camera(width, height)
    for channels in RASTER_CHANNELS:
        for tile_size in RASTER_TILES:
            for background in (None, torch.rand(channels, generator=g)):
                for absgrad in (False, True) if channels <= ABSGRAD_MAX_CHANNELS else (False,):
                    leaves = [t.requires_grad_() for t in _random_gaussians(8, channels, g)]
                    image, alpha, _ = rasterize(*leaves, viewmats, Ks, width, height, tile_size=tile_size,
                                                background=background, absgrad=absgrad, backend="triton")
                    _backward((image, alpha), leaves)
    for sh_degree in range(4):
        for antialiased in (False, True):
            means, quats, scales, opacities, _ = _random_gaussians(9, 3, g)
            sh = torch.randn(9, (sh_degree + 1) ** 2, 3, generator=g) * 0.3
            leaves = [t.requires_grad_() for t in (means, quats, scales, opacities, sh)]
            image, alpha, _ = rasterize(*leaves, viewmats, Ks, 17, 8, sh_degree=sh_degree, mode="rgb+depth",
                                        antialiased=antialiased, background=torch.rand(3, generator=g),
                                        backend="triton")
            _backward((image, alpha), leaves)
    means, quats, scales, opacities, _ = _random_gaussians(10, 1, g)
    gaussian_pixel_weights(means, quats, scales, opacities, viewmats, Ks, width, height,
                           torch.rand(1, height, width, 33, generator=g), backend="triton")

    for features in HASH_FEATURES:
        for dtype in (torch.float32, torch.float16):
            for positions_grad in (False, True):
                table = (torch.randn(3, 2**8, features, generator=g) * 0.1).to(dtype).requires_grad_()
                positions = torch.rand(37, 3, generator=g).to(dtype).requires_grad_(positions_grad)
                out = hash_encode(positions, table, base_resolution=4, per_level_scale=2.0, backend="triton")
                _backward((out,), (positions, table))

    for samples_per_ray in ((1, 0, 2), (5, 9, 3, 1), (33, 2)):
        ray_indices = torch.repeat_interleave(torch.arange(len(samples_per_ray)), torch.tensor(samples_per_ray))
        count = len(ray_indices)
        sigmas = torch.rand(count, generator=g).requires_grad_()
        rgbs = torch.rand(count, 3, generator=g).requires_grad_()
        deltas, ts = torch.full((count,), 0.1), torch.linspace(0.1, 2.0, count)
        outputs = composite_rays(sigmas, rgbs, deltas, ts, ray_indices, len(samples_per_ray), backend="triton")
        _backward(outputs, (sigmas, rgbs))

    grid = torch.randn(6, 5, 7, generator=g)
    for inside in ("below", "above"):
        marching_cubes(grid, 0.1, inside=inside, backend="triton")


def record_public_op_launches(seed: int = 0) -> list[Launch]:
    """The distinct launches of ``exercise_public_ops`` (interpreter on), in first-seen order."""
    with record_launches() as launches:
        exercise_public_ops(seed)
    return list(dict.fromkeys(launches))


def record_in_subprocess(seed: int = 0, timeout: float = 1200) -> list[Launch]:
    """``record_public_op_launches`` in a fresh interpreter process (this one may already hold compiled kernels)."""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    code = f"import json, dataclasses; from recon.kernels import aot; " \
           f"print(json.dumps([dataclasses.astuple(x) for x in aot.record_public_op_launches({seed})]))"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"recording the public ops' launches failed:\n{result.stderr[-4000:]}")
    return [Launch(k, tuple(tuple(x) if isinstance(x, list) else x for x in a), tuple(tuple(kv) for kv in kw))
            for k, a, kw in json.loads(result.stdout)]


def unlaunched_kernels(launches: list[Launch]) -> list[str]:
    """Triton functions of ``KERNEL_MODULES`` that no launch reaches: neither launched nor called by name from
    the source of a launched kernel or of a function it calls. A new kernel missing from the exercise shows here."""
    import inspect

    from recon.kernels.backend import triton_interpreting

    if triton_interpreting():
        raise RuntimeError("unlaunched_kernels reads JIT functions: run it with TRITON_INTERPRET unset")
    functions: dict[str, Any] = {}
    for module_name in KERNEL_MODULES:
        module = importlib.import_module(module_name)
        for name, value in vars(module).items():
            if type(value).__name__ == "JITFunction" and value.fn.__module__ == module_name:
                functions[f"{module_name}:{name}"] = value
    reached = {launch.kernel for launch in launches}
    frontier = list(reached)
    while frontier:
        source = inspect.getsource(functions[frontier.pop()].fn)
        for key in functions:
            if key not in reached and re.search(rf"\b{key.split(':')[1]}\(", source):
                reached.add(key)
                frontier.append(key)
    return sorted(set(functions) - reached)


# ----------------------------------------------------------------------------------------------- compiling
class _RecordedTensor:
    """Stands in for a tensor argument in Triton's binder: its dtype and its pointer's 16-byte alignment."""

    def __init__(self, dtype: str, aligned: bool):
        import torch

        self.dtype = getattr(torch, dtype)
        self._ptr = 0 if aligned else 4

    def data_ptr(self) -> int:
        return self._ptr


def _tool(name: str) -> str:
    from triton import knobs

    return getattr(knobs.nvidia, name).path


def _resources(cubin: bytes) -> tuple[int, int]:
    """(registers, stack bytes) of the single kernel in ``cubin``, by cuobjdump -res-usage."""
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".cubin") as fh:
        fh.write(cubin)
        fh.flush()
        text = subprocess.run([_tool("cuobjdump"), "-res-usage", fh.name], capture_output=True, text=True,
                              check=True).stdout
    usage = dict(re.findall(r"(REG|STACK):(\d+)", text))
    return int(usage["REG"]), int(usage["STACK"])


def ptxas_spills(ptx: str, arch: str) -> tuple[int, int]:
    """(spill store bytes, spill load bytes) that the bundled ``ptxas -v`` reports for ``ptx`` on ``arch``
    (e.g. "sm_90a")."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "kernel.ptx"
        source.write_text(ptx)
        log = subprocess.run([_tool("ptxas"), "-v", f"--gpu-name={arch}", str(source), "-o",
                              str(Path(folder) / "kernel.cubin")], capture_output=True, text=True, check=True).stderr
    stores, loads = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log).groups()
    return int(stores), int(loads)


def compile_launch(launch: Launch, arch: int) -> Compiled:
    """Bind ``launch`` as Triton would on a GPU of compute capability ``arch`` (80, 90, ...) and compile it to a
    cubin with the bundled ptxas. Never raises for a kernel's own errors: they come back in ``error``."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.compiler import sm_arch_from_capability
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature

    module_name, name = launch.kernel.split(":")
    fn = getattr(importlib.import_module(module_name), name)
    if type(fn).__name__ != "JITFunction":
        raise RuntimeError("compiling needs TRITON_INTERPRET unset (the kernels are interpreted functions)")
    target = GPUTarget("cuda", arch, 32)
    backend = make_backend(target)
    args = [_RecordedTensor(a[1], a[2]) if isinstance(a, tuple) else a for a in launch.args]
    kwargs = dict(launch.kwargs)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound, specialization, options = binder(*args, **kwargs)
    # Triton 3.6's own packing of a launch (JITFunction.run does the same before compiling).
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, specialization, options)
    spec = f"{signature} {constexprs} {attrs} num_warps={options.num_warps}"
    result = Compiled(launch.kernel, spec, arch, ok=False, launch=launch.describe())
    try:
        kernel = triton.compile(ASTSource(fn, signature, constexprs, attrs), target=target, options=options.__dict__)
        result.registers, result.stack = _resources(kernel.asm["cubin"])
        result.shared = kernel.metadata.shared  # dynamic: cuobjdump sees only static shared memory
        if result.stack:  # no stack frame, no spills; else ask ptxas how much of it is spilled registers
            result.spill_stores, result.spill_loads = ptxas_spills(kernel.asm["ptx"], sm_arch_from_capability(arch))
        result.ok = True
    except Exception as exc:  # any compiler failure is the kernel's: report it with the specialisation
        result.error = f"{type(exc).__name__}: {exc}"
    return result


def _compile_task(task: tuple[Launch, int]) -> Compiled:
    return compile_launch(*task)


def compile_all(launches: list[Launch], archs: tuple[int, ...] = ARCHS, jobs: int | None = None,
                progress: Callable[[Compiled], None] | None = None) -> list[Compiled]:
    """Compile each launch for each arch in ``jobs`` processes (default: one per CPU); distinct specialisations
    only (launches that bind to the same signature, constexprs and attributes compile once)."""
    tasks = [(launch, arch) for arch in archs for launch in launches]
    results: dict[tuple[str, str, int], Compiled] = {}
    env_interpret = os.environ.pop("TRITON_INTERPRET", None)  # workers must compile, not interpret
    try:
        with ProcessPoolExecutor(max_workers=jobs or os.cpu_count() or 1) as pool:
            for compiled in pool.map(_compile_task, tasks):
                key = (compiled.kernel, compiled.specialisation, compiled.arch)
                if key not in results:
                    results[key] = compiled
                    if progress:
                        progress(compiled)
    finally:
        if env_interpret is not None:
            os.environ["TRITON_INTERPRET"] = env_interpret
    return list(results.values())


def failures(results: list[Compiled]) -> list[str]:
    """One line per specialisation that failed to compile or spills registers."""
    lines = []
    for r in results:
        if not r.ok:
            lines.append(f"sm_{r.arch} {r.launch}: does not compile: {r.error.strip()[:2000]}\n  specialisation: "
                         f"{r.specialisation}")
        elif r.spill_stores or r.spill_loads:
            lines.append(f"sm_{r.arch} {r.launch}: spills {r.spill_stores} B stored / {r.spill_loads} B loaded per "
                         f"thread at {r.registers} registers")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recon.kernels.aot", description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, nargs="+", default=list(ARCHS), help="compute capabilities (80 90)")
    parser.add_argument("--jobs", type=int, default=None, help="compile processes (default: one per CPU)")
    parser.add_argument("--json", type=Path, help="also write every result as JSON here")
    args = parser.parse_args(argv)
    launches = record_in_subprocess()
    missing = unlaunched_kernels(launches)
    results = compile_all(launches, tuple(args.arch), args.jobs,
                          lambda r: print(f"sm_{r.arch} {'ok  ' if r.ok else 'FAIL'} regs {r.registers:3d} spills "
                                          f"{r.spill_stores:4d} smem {r.shared:6d}  {r.launch}", flush=True))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1))
    problems = failures(results) + [f"{name}: no public op launches it" for name in missing]
    print(f"{len(results)} specialisations compiled for sm_{', sm_'.join(map(str, args.arch))}; "
          f"{len(problems)} problems")
    for line in problems:
        print(line)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
