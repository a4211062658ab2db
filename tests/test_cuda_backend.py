"""The CUDA C backend (kernels/cuda): its CMake build, its fallback without pycuda/GPU, its kernels' numerics.

1. The CMake build of the .cu sources for the shipped archs (sm_75/80/86/89/90) must succeed with nvcc warnings
   as errors, ptxas register spills included, and name every kernel entry point; skipped only when nvcc (or
   cmake) is not found.
2. Without pycuda or a GPU, ``rasterize(..., backend="cuda")`` falls back with a BackendFallbackWarning and
   returns the torch result; the loader takes a fatbin only when it is newer than its sources and keys its
   compile cache by the sources and the arch.
3. On the CPU, the same .cu sources compiled by g++ against a small emulation of the CUDA built-ins used
   (every CUDA thread a ucontext fiber on one OS thread, barriers for __syncthreads/__syncthreads_count and the
   warp shuffles) run through ``kernels/cuda/blend.py`` in place of pycuda, and stage 4 is compared with
   ``reference.blend_tiles``: forward within 1e-5 abs, gradients within rtol 1e-3 and atol 1e-4 times the
   largest reference magnitude (the backward recovers T by division and sums in another order), as for Triton.
   Every launch's arguments are checked against the kernel's C signature parsed from its source (count, order,
   pointee dtype of each tensor, int vs float), which is what pycuda's packing relies on. This checks the
   kernels' logic and the argument marshalling, not CUDA's float behaviour or speed.
4. GPU only (a CUDA device and pycuda): ``rasterize(backend="cuda")`` against the torch reference, forward and
   every gradient, on random scenes (several seeds, odd image sizes, D in {1, 3, 4, 7, 33}, background on/off,
   absgrad) with the tolerances above, and under a non-default stream.
"""
from __future__ import annotations

import ctypes
import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from recon.kernels import backend as B
from recon.kernels import rasterize
from recon.kernels.splatting import reference

pytestmark = pytest.mark.kernels

REPO = Path(__file__).resolve().parents[1]
KERNEL_DIR = REPO / "kernels" / "cuda"
KERNELS = [f"blend_{stage}_{bound}" for stage in ("forward", "backward") for bound in (4, 8, 16)]
SHIPPED_ARCHS = ("75", "80", "86", "89", "90")  # CMakeLists.txt's default RECON_CUDA_ARCHS


def _nvcc() -> str | None:
    found = shutil.which("nvcc")
    for candidate in (found, os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def _gpu_backend_ready() -> bool:
    return torch.cuda.is_available() and importlib.util.find_spec("pycuda") is not None


# ---------------------------------------------------------------------------------------------------- 1. build


def test_cmake_builds_the_kernels_without_spills_for_the_shipped_archs(tmp_path):
    nvcc, cmake = _nvcc(), shutil.which("cmake")
    if nvcc is None or cmake is None:
        pytest.skip(f"needs nvcc and cmake to build kernels/cuda (nvcc: {nvcc}, cmake: {cmake})")
    out = tmp_path / "out"
    # --warn-on-spills is in the default flags; --Werror all-warnings makes a spill (a ptxas warning) fail the build
    configure = [cmake, "-S", str(REPO), "-B", str(tmp_path / "build"), f"-DRECON_CUDA_ARCHS={';'.join(SHIPPED_ARCHS)}",
                 f"-DRECON_CUDA_OUTPUT_DIR={out}", f"-DRECON_NVCC={nvcc}",
                 "-DRECON_CUDA_FLAGS=-O3 -Xptxas --warn-on-spills --Werror all-warnings"]
    for command in (configure, [cmake, "--build", str(tmp_path / "build")]):
        run = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, f"{' '.join(command)} failed:\n{run.stdout}\n{run.stderr}"
    cuobjdump = shutil.which("cuobjdump") or (str(Path(nvcc).parent / "cuobjdump")
                                              if (Path(nvcc).parent / "cuobjdump").exists() else None)
    for source in ("blend_forward", "blend_backward"):
        fatbin = out / f"{source}.fatbin"
        assert fatbin.is_file() and fatbin.stat().st_size > 0, fatbin
        names = [k for k in KERNELS if k.startswith(source)]
        if cuobjdump:
            listing = subprocess.run([cuobjdump, "-symbols", str(fatbin)], capture_output=True, text=True).stdout
            elves = subprocess.run([cuobjdump, "--list-elf", str(fatbin)], capture_output=True, text=True).stdout
            assert all(f"sm_{arch}" in elves for arch in SHIPPED_ARCHS), elves
        else:  # the build passes --no-compress, so the ELF symbol tables are plain bytes
            listing = fatbin.read_bytes().decode("latin-1")
        for name in names:
            assert re.search(rf"\b{name}\b", listing), f"{name} missing from {fatbin}"


# ------------------------------------------------------------------------------------------------- 2. fallback


@pytest.mark.skipif(_gpu_backend_ready(), reason="checks the fallback where pycuda or the GPU is missing")
def test_cuda_backend_falls_back_to_torch(monkeypatch, seed):
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # otherwise the fallback would be Triton's CPU interpreter
    B._warn_once.cache_clear()
    gen = torch.Generator().manual_seed(seed)
    n = 30
    means = torch.randn(n, 3, generator=gen) * 0.5 + torch.tensor([0.0, 0.0, 3.0])
    quats = torch.randn(n, 4, generator=gen)
    scales = torch.rand(n, 3, generator=gen) * 0.1 + 0.02
    opacities = torch.rand(n, generator=gen)
    colors = torch.rand(n, 3, generator=gen)
    viewmats = torch.eye(4)[None]
    Ks = torch.tensor([[[40.0, 0, 15.5], [0, 40.0, 10.0], [0, 0, 1]]])
    with pytest.warns(B.BackendFallbackWarning, match=r"backend 'cuda' cannot run on cpu here; using 'torch'"):
        img, alpha, meta = rasterize(means, quats, scales, opacities, colors, viewmats, Ks, 31, 21, backend="cuda")
    ref_img, ref_alpha, _ = rasterize(means, quats, scales, opacities, colors, viewmats, Ks, 31, 21, backend="torch")
    assert meta["backend"] == "torch"
    assert torch.equal(img, ref_img) and torch.equal(alpha, ref_alpha)
    assert alpha.max() > 0  # not an empty render


def test_loader_takes_a_fatbin_only_when_fresh_and_keys_the_cache_by_sources_and_arch(tmp_path, monkeypatch):
    from recon.kernels.cuda import loader

    for path in [*KERNEL_DIR.glob("*.cu"), *KERNEL_DIR.glob("*.cuh")]:
        shutil.copy(path, tmp_path / path.name)
    monkeypatch.setattr(loader, "KERNEL_DIR", tmp_path)
    assert loader.prebuilt_fatbin("blend_forward") is None  # none built
    fatbin = tmp_path / "blend_forward.fatbin"
    fatbin.write_bytes(b"fatbin")
    newest = max(p.stat().st_mtime for p in tmp_path.glob("*.cu*"))
    os.utime(fatbin, (newest + 10, newest + 10))
    assert loader.prebuilt_fatbin("blend_forward") == fatbin
    os.utime(tmp_path / "blend_backward.cu", (newest + 20, newest + 20))  # another kernel's source: still fresh
    assert loader.prebuilt_fatbin("blend_forward") == fatbin
    os.utime(tmp_path / "common.cuh", (newest + 20, newest + 20))  # a shared header: stale
    assert loader.prebuilt_fatbin("blend_forward") is None

    key = loader.source_hash("sm_80")
    assert key != loader.source_hash("sm_90")
    (tmp_path / "common.cuh").write_text((tmp_path / "common.cuh").read_text() + "\n// edited\n")
    assert loader.source_hash("sm_80") != key
    monkeypatch.setenv("RECON_CUDA_CACHE", str(tmp_path / "cache"))
    assert loader.cache_dir() == tmp_path / "cache"


# ------------------------------------------------------------------------------------------ 3. CPU emulation

EMULATION = r"""
#include <math.h>
#include <ucontext.h>
#include <algorithm>
#include <functional>
#include <vector>

struct float2 { float x, y; };
struct float4 { float x, y, z, w; };
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
struct Dim3 { unsigned x, y, z; };
// Every CUDA thread of a block is a fiber (ucontext) on one OS thread; blocks run one after the other.
// A barrier parks the fiber until all fibers of its block (or warp) have arrived.
static Dim3 threadIdx, emu_block_idx, emu_block_dim;
#define blockIdx emu_block_idx
#define blockDim emu_block_dim
#define __global__
#define __device__
#define __launch_bounds__(n)
using std::min;

alignas(16) float4 recon_shared[1024 * 2];  // the dynamic shared memory (extern __shared__)
static ucontext_t emu_scheduler;
static std::vector<ucontext_t> emu_fibers;
static std::vector<std::vector<char>> emu_stacks;
static std::function<void()> emu_body;
static unsigned emu_current;
static int emu_count = 0;
static float emu_lane_value[32][32];
static int emu_lane_flag[32][32];
struct EmuBarrier { int arrived = 0; long generation = 0; };
static EmuBarrier emu_block_barrier, emu_warp_barrier[8];

inline void emu_yield() { swapcontext(&emu_fibers[emu_current], &emu_scheduler); }
inline void emu_wait(EmuBarrier& barrier, int participants) {
    const long generation = barrier.generation;
    if (++barrier.arrived == participants) {
        barrier.arrived = 0;
        ++barrier.generation;
    } else {
        while (barrier.generation == generation) emu_yield();
    }
}
inline void __syncthreads() { emu_wait(emu_block_barrier, int(blockDim.x)); }
inline void emu_warp_sync() { emu_wait(emu_warp_barrier[threadIdx.x / 32], 32); }
inline int __syncthreads_count(int predicate) {
    __syncthreads();
    if (predicate) ++emu_count;
    __syncthreads();
    const int count = emu_count;
    __syncthreads();
    if (threadIdx.x == 0) emu_count = 0;
    return count;
}
inline float __shfl_down_sync(unsigned, float value, int offset) {
    const unsigned w = threadIdx.x / 32, lane = threadIdx.x % 32;
    emu_lane_value[w][lane] = value;
    emu_warp_sync();
    const float got = lane + offset < 32 ? emu_lane_value[w][lane + offset] : value;
    emu_warp_sync();
    return got;
}
inline int __any_sync(unsigned, int predicate) {
    const unsigned w = threadIdx.x / 32, lane = threadIdx.x % 32;
    emu_lane_flag[w][lane] = predicate != 0;
    emu_warp_sync();
    int any = 0;
    for (int l = 0; l < 32; ++l) any |= emu_lane_flag[w][l];
    emu_warp_sync();
    return any;
}
inline float atomicAdd(float* address, float value) {
    const float old = *address;
    *address = old + value;
    return old;
}
inline int atomicMax(int* address, int value) {
    const int old = *address;
    *address = std::max(old, value);
    return old;
}

#include "blend_forward.cu"
#include "blend_backward.cu"

static bool emu_fiber_done = false;
static void emu_fiber_main() {
    emu_body();
    emu_fiber_done = true;  // then uc_link resumes the scheduler
}

template <class Body>
static void emu_launch(int grid_x, int grid_y, int block, Body body) {
    emu_block_dim = {unsigned(block), 1, 1};
    emu_body = body;
    emu_fibers.assign(block, ucontext_t{});
    emu_stacks.assign(block, std::vector<char>(1 << 16));
    for (int b = 0; b < grid_x * grid_y; ++b) {
        emu_block_idx = {unsigned(b % grid_x), unsigned(b / grid_x), 0};
        for (int t = 0; t < block; ++t) {
            getcontext(&emu_fibers[t]);
            emu_fibers[t].uc_stack.ss_sp = emu_stacks[t].data();
            emu_fibers[t].uc_stack.ss_size = emu_stacks[t].size();
            emu_fibers[t].uc_link = &emu_scheduler;
            makecontext(&emu_fibers[t], emu_fiber_main, 0);
        }
        std::vector<char> finished(block, 0);
        for (int left = block; left > 0;) {  // round robin until every fiber has returned
            for (int t = 0; t < block; ++t) {
                if (finished[t]) continue;
                threadIdx = {unsigned(t), 0, 0};
                emu_current = unsigned(t);
                swapcontext(&emu_scheduler, &emu_fibers[t]);
                if (emu_fiber_done) {
                    finished[t] = 1;
                    --left;
                    emu_fiber_done = false;
                }
            }
        }
    }
}

// the extern "C" entry points emu_<kernel> are generated from the kernels' signatures (_emulation_wrappers)
"""


# One entry point per channel bound: `extern "C" __global__ void __launch_bounds__(256) <stem>_##MAX_D(<params>) {`
_ENTRY_POINT = re.compile(r'extern "C" __global__ void __launch_bounds__\(\d+\) (\w+)_##MAX_D\(([^)]*)\)\s*\{')
_POINTEE_DTYPES = {"float": torch.float32, "long long": torch.int64, "int": torch.int32}


def kernel_signatures() -> dict[str, list[tuple[str, str]]]:
    """``{kernel: [(C type, parameter name), ...]}`` of every entry point in ``kernels/cuda/*.cu``."""
    from recon.kernels.cuda.blend import CHANNEL_BOUNDS

    signatures = {}
    for path in sorted(KERNEL_DIR.glob("*.cu")):
        text = path.read_text().replace("\\\n", "\n")  # join the macro's continued lines
        for stem, params in _ENTRY_POINT.findall(text):
            parsed = [tuple(part.strip().rsplit(None, 1)) for part in params.split(",")]
            parsed = [(ctype.replace(" *", "*"), name) for ctype, name in parsed]
            for bound in CHANNEL_BOUNDS:
                signatures[f"{stem}_{bound}"] = parsed
    return signatures


def test_every_kernel_entry_point_is_found_with_its_signature():
    signatures = kernel_signatures()
    assert sorted(signatures) == sorted(KERNELS)
    for kernel, params in signatures.items():
        types = {ctype.removeprefix("const ").rstrip("*") for ctype, _ in params}
        assert types <= set(_POINTEE_DTYPES), (kernel, types)
        assert params[-1] == ("float", "max_alpha"), kernel


def test_launch_arguments_pack_as_pointers_ints_and_floats():
    from recon.kernels.cuda import loader

    assert [loader._arg(v) for v in (None, True, 7, 0.5)] == [("P", 0), ("i", 1), ("i", 7), ("f", 0.5)]
    with pytest.raises(TypeError, match="unsupported CUDA kernel argument str"):
        loader._arg("7")


def _emulation_wrappers(signatures: dict[str, list[tuple[str, str]]]) -> str:
    """C++ ``extern "C" emu_<kernel>(grid_x, grid_y, block, <the kernel's parameters>)`` running it in the
    emulation."""
    wrappers = []
    for kernel, params in signatures.items():
        declared = ", ".join(f"{ctype} {name}" for ctype, name in params)
        passed = ", ".join(name for _, name in params)
        wrappers.append(f'extern "C" void emu_{kernel}(int grid_x, int grid_y, int block, {declared}) {{\n'
                        f"    emu_launch(grid_x, grid_y, block, [=] {{ {kernel}({passed}); }});\n}}\n")
    return "\n".join(wrappers)


@pytest.fixture(scope="module")
def emulated_kernels(tmp_path_factory):
    """The .cu sources built by g++ against the emulation above, as a ctypes library, with their signatures."""
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("needs g++ (C++20) to run the CUDA sources in the CPU emulation")
    folder = tmp_path_factory.mktemp("cuda_emulation")
    for path in [*KERNEL_DIR.glob("*.cu"), *KERNEL_DIR.glob("*.cuh")]:
        text = path.read_text().replace("extern __shared__", "extern").replace("__shared__", "static")
        (folder / path.name).write_text(text)
    signatures = kernel_signatures()
    (folder / "emulation.cpp").write_text(EMULATION + _emulation_wrappers(signatures))
    library = folder / "emulation.so"
    build = subprocess.run([gxx, "-std=c++20", "-O1", "-shared", "-fPIC", "-Wno-unknown-pragmas",
                            "-o", str(library), str(folder / "emulation.cpp")], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    return ctypes.CDLL(str(library)), signatures


def _checked_argument(kernel: str, ctype: str, name: str, value):
    """``value`` as ctypes passes it to parameter ``ctype name``, after checking it is what pycuda would pack for
    that parameter: a tensor of the pointee's dtype or None for a pointer, an int for int, a float for float."""
    where = f"{kernel}({name})"
    if ctype.endswith("*"):
        if value is None:
            return ctypes.c_void_p(0)
        assert isinstance(value, torch.Tensor), f"{where}: pointer parameter given {type(value).__name__}"
        dtype = _POINTEE_DTYPES[ctype.removeprefix("const ").rstrip("*")]
        assert value.dtype == dtype, f"{where}: {ctype} given a {value.dtype} tensor"
        assert value.is_contiguous() and value.device.type == "cpu", where
        return ctypes.c_void_p(value.data_ptr())
    if ctype == "int":
        assert isinstance(value, int), f"{where}: int parameter given {type(value).__name__}"
        return ctypes.c_int(value)
    assert ctype == "float" and isinstance(value, float), f"{where}: {ctype} parameter given {type(value).__name__}"
    return ctypes.c_float(value)


def _emulated_launch(emulated):
    """A stand-in for ``loader.launch`` that runs the kernel in the emulation on CPU tensors."""
    lib, signatures = emulated

    def launch(source, kernel, device, grid, block, shared_bytes, args):
        assert shared_bytes == 32 * block and block % 32 == 0 and block <= 256
        params = signatures[kernel]
        assert len(args) == len(params), f"{kernel} takes {len(params)} arguments, launched with {len(args)}"
        converted = [_checked_argument(kernel, ctype, name, value) for (ctype, name), value in zip(params, args)]
        if grid[0] and grid[1]:
            getattr(lib, f"emu_{kernel}")(ctypes.c_int(grid[0]), ctypes.c_int(grid[1]), ctypes.c_int(block),
                                          *converted)

    return launch


def _blend_inputs(gen, n_cams, n, depth, width, height, tile_size, edge):
    """Projected random Gaussians (reference stages 1 and 3) as float32 leaves for stage 4."""
    means = torch.randn(n, 3, generator=gen) * 0.6
    means[:, 2] += 3.0
    quats = torch.randn(n, 4, generator=gen)
    scales = torch.rand(n, 3, generator=gen) * 0.15 + 0.01
    opacities = torch.rand(n, generator=gen)
    if edge == "dense":  # opaque and large: pixels hit the transmittance stop, whole blocks leave early
        opacities = opacities * 0.3 + 0.7
        scales = scales * 3.0
    if edge == "edge" and n >= 4:
        scales[0] = 1.5  # covers every tile
        opacities[1] = 1.0  # alpha clamped at max_alpha: no gradient to sigma and opacity there
        means[3] = means[2]  # coincident
        opacities[2] = 0.0
    viewmats = torch.eye(4)[None].repeat(n_cams, 1, 1)
    viewmats[1:, 0, 3] = 0.2
    Ks = torch.tensor([[1.1 * width, 0, width / 2], [0, 1.1 * width, height / 2], [0, 0, 1]])[None].repeat(n_cams, 1, 1)
    proj = reference.project_gaussians(means, quats, scales, opacities, viewmats, Ks, width, height)
    isect = reference.intersect_tiles(proj["means2d"], proj["radii"], proj["depths"], width, height, tile_size)
    colors = torch.rand(n_cams, n, depth, generator=gen)
    leaves = [t.detach().clone().requires_grad_(True)
              for t in (proj["means2d"], proj["conics"], colors, proj["opacities"])]
    return leaves, isect


EMULATED_CASES = [
    # cameras, n, D, width, height, tile, background, absgrad, max_alpha, edge cases
    (1, 40, 3, 29, 19, 8, False, False, 0.99, "edge"),
    (2, 30, 1, 23, 17, 8, True, True, 0.99, ""),
    (1, 50, 4, 37, 21, 16, True, False, 0.999, "edge"),
    (1, 35, 7, 19, 13, 8, False, True, 0.99, "edge"),
    (1, 25, 20, 17, 9, 8, True, False, 0.99, ""),  # two channel chunks (16 + 4)
    (2, 30, 37, 13, 11, 8, True, False, 0.99, "edge"),  # three chunks, background on every chunk
    (1, 40, 3, 21, 11, 5, False, True, 0.99, "edge"),  # 25 pixels in a 32-thread block
    (1, 300, 3, 19, 17, 8, True, True, 0.99, "dense"),  # several batches of 64 per tile, stop rule
    (1, 0, 3, 16, 16, 8, False, False, 0.99, ""),  # nothing to draw
]


@pytest.mark.parametrize("n_cams,n,depth,width,height,tile_size,with_bg,absgrad,max_alpha,edge", EMULATED_CASES)
def test_cuda_kernels_match_reference_in_cpu_emulation(emulated_kernels, monkeypatch, seed, n_cams, n, depth, width,
                                                        height, tile_size, with_bg, absgrad, max_alpha, edge):
    from recon.kernels.cuda import blend, loader

    monkeypatch.setattr(loader, "launch", _emulated_launch(emulated_kernels))
    gen = torch.Generator().manual_seed(seed)
    leaves, isect = _blend_inputs(gen, n_cams, n, depth, width, height, tile_size, edge)
    background = torch.rand(n_cams, depth, generator=gen) if with_bg else None
    v_img = torch.randn(n_cams, height, width, depth, generator=gen)
    v_alpha = torch.randn(n_cams, height, width, 1, generator=gen)
    results = []
    for stage in (reference.blend_tiles, blend.blend_tiles):
        inputs = [t.detach().clone().requires_grad_(True) for t in leaves]
        bg = background.clone().requires_grad_(True) if with_bg else None
        abs_sums = torch.zeros(n_cams * max(n, 1), 2) if absgrad else None
        img, alpha = stage(*inputs, isect["flatten_ids"], isect["tile_offsets"], width, height, tile_size, max_alpha,
                           bg, abs_sums)
        ((img * v_img).sum() + (alpha * v_alpha).sum()).backward()
        results.append((img.detach(), alpha.detach(), [t.grad for t in inputs], bg.grad if with_bg else None,
                        abs_sums))
    (img_r, alpha_r, grads_r, bg_r, abs_r), (img_c, alpha_c, grads_c, bg_c, abs_c) = results
    msg = f"seed {seed}"
    torch.testing.assert_close(img_c, img_r, rtol=1e-4, atol=1e-5, msg=lambda m: f"{msg} image: {m}")
    torch.testing.assert_close(alpha_c, alpha_r, rtol=1e-4, atol=1e-5, msg=lambda m: f"{msg} alpha: {m}")
    pairs = list(zip(("means2d", "conics", "colors", "opacities"), grads_r, grads_c))
    pairs += [("background", bg_r, bg_c), ("absgrad", abs_r, abs_c)]
    for name, ref, got in pairs:
        _assert_grad_close(ref, got, f"{msg} {name}")
    if n > 10:
        assert grads_r[0].abs().sum() > 0  # the comparison is not vacuous


def _assert_grad_close(ref, got, name):
    if ref is None or got is None:
        assert ref is None and got is None or (ref is not None and not ref.abs().any()), name
        return
    assert torch.isfinite(got).all(), name
    scale = max(1.0, ref.abs().max().item()) if ref.numel() else 1.0
    torch.testing.assert_close(got, ref.to(got.dtype), rtol=1e-3, atol=1e-4 * scale, msg=lambda m: f"{name}: {m}")


# ------------------------------------------------------------------------------------------------------ 4. GPU

requires_cuda_backend = pytest.mark.skipif(not _gpu_backend_ready(),
                                           reason="needs a CUDA GPU and pycuda (pip install .[cuda])")

GPU_CASES = [
    # n, cameras, width, height, D, background, absgrad, options
    (200, 1, 37, 29, 3, False, False, {}),
    (300, 2, 64, 48, 1, True, True, {}),
    (250, 1, 51, 33, 4, True, False, {"max_alpha": 0.999}),
    (150, 2, 45, 27, 7, False, True, {"antialiased": True}),
    (120, 1, 30, 20, 3, True, True, {"tile_size": 8, "mode": "rgb+depth"}),
    (100, 1, 29, 23, 33, True, False, {}),  # three channel chunks
]


@requires_cuda_backend
@pytest.mark.parametrize("case_seed", [0, 1, 2])
@pytest.mark.parametrize("n,n_cams,width,height,depth,with_bg,absgrad,options", GPU_CASES)
def test_cuda_rasterize_matches_reference_on_gpu(case_seed, n, n_cams, width, height, depth, with_bg, absgrad,
                                                 options):
    from recon.kernels.cuda import has_kernel

    assert has_kernel("rasterize"), "the CUDA kernels do not load on this GPU (see the warning)"
    gen = torch.Generator().manual_seed(case_seed)
    means = torch.randn(n, 3, generator=gen) * 0.6
    quats = torch.randn(n, 4, generator=gen)
    scales = torch.rand(n, 3, generator=gen) * 0.12 + 0.005
    opacities = torch.rand(n, generator=gen)
    opacities[:3] = torch.tensor([0.0, 1.0, 1.0])  # transparent; clamped at max_alpha
    colors = torch.rand(n, depth, generator=gen)
    viewmats = torch.eye(4)[None].repeat(n_cams, 1, 1)
    viewmats[:, 2, 3] = 3.0
    viewmats[1:, 0, 3] = 0.15
    Ks = torch.tensor([[1.2 * width, 0, width / 2], [0, 1.2 * width, height / 2], [0, 0, 1]])[None].repeat(n_cams, 1, 1)
    background = torch.rand(depth, generator=gen) if with_bg else None
    v_seed = torch.Generator().manual_seed(100 + case_seed)
    results = {}
    for backend, device in (("torch", "cuda"), ("cuda", "cuda")):  # same device, as the Triton tests compare
        leaves = [t.to(device).requires_grad_(True) for t in (means, quats, scales, opacities, colors)]
        img, alpha, meta = rasterize(*leaves, viewmats.to(device), Ks.to(device), width, height, backend=backend,
                                     absgrad=absgrad, background=None if background is None else background.to(device),
                                     **options)
        assert meta["backend"] == backend
        v_img = torch.randn(img.shape, generator=v_seed).to(device)
        v_alpha = torch.randn(alpha.shape, generator=v_seed).to(device)
        ((img * v_img).sum() + (alpha * v_alpha).sum()).backward()
        grads = [t.grad.cpu() if t.grad is not None else None for t in leaves]
        extra = [meta["means2d"].grad.cpu(), meta["means2d"].absgrad.cpu() if absgrad else None]
        results[backend] = (img.detach().cpu(), alpha.detach().cpu(), grads + extra)
    (img_r, alpha_r, grads_r), (img_c, alpha_c, grads_c) = results["torch"], results["cuda"]
    torch.testing.assert_close(img_c, img_r, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(alpha_c, alpha_r, rtol=1e-4, atol=1e-5)
    names = ("means", "quats", "scales", "opacities", "colors", "means2d", "absgrad")
    for name, ref, got in zip(names, grads_r, grads_c):
        _assert_grad_close(ref, got, f"seed {case_seed} {name}")


@requires_cuda_backend
def test_cuda_rasterize_on_a_side_stream_matches_default_stream():
    gen = torch.Generator().manual_seed(3)
    n = 400
    inputs = [torch.randn(n, 3, generator=gen) * 0.6 + torch.tensor([0.0, 0.0, 3.0]), torch.randn(n, 4, generator=gen),
              torch.rand(n, 3, generator=gen) * 0.1 + 0.01, torch.rand(n, generator=gen), torch.rand(n, 3, generator=gen)]
    inputs = [t.cuda() for t in inputs]
    viewmats = torch.eye(4, device="cuda")[None]
    Ks = torch.tensor([[[80.0, 0, 40.0], [0, 80.0, 30.0], [0, 0, 1]]], device="cuda")
    first, _, _ = rasterize(*inputs, viewmats, Ks, 81, 61, backend="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        second, _, _ = rasterize(*inputs, viewmats, Ks, 81, 61, backend="cuda")
        second = second * 1.0  # a torch op ordered after the kernel on the side stream
    torch.cuda.current_stream().wait_stream(side)
    torch.testing.assert_close(second, first, rtol=0, atol=1e-6)
