"""Every Triton kernel specialisation the public ops launch compiles to a cubin for sm_80 and sm_90 with Triton's
own ptxas, and spills no registers (``recon.kernels.aot``).

The interpreter runs in the rest of the suite accept code that Triton's real compiler rejects, so this is what
tells whether recon runs on a GPU at all. The specialisations come from the ops' own launches over their options
(recorded in the interpreter), not from a hand-kept list; a Triton function of the kernel modules that no
recorded launch reaches fails the test too. Compiled kernels are kept in Triton's cache (~/.triton/cache), so a
second run takes a fraction of the first (several minutes on 2 CPU cores).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("triton")


def _compile_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # compile, do not interpret


@pytest.fixture(scope="module")
def nvidia_backend():
    try:
        from triton import knobs
        from triton.backends.nvidia.compiler import CUDABackend  # noqa: F401

        ptxas = knobs.nvidia.ptxas.path
    except Exception as exc:  # a Triton build without the NVIDIA backend or its bundled tools
        pytest.skip(f"Triton has no NVIDIA backend with ptxas here: {exc}")
    return ptxas


@pytest.mark.slow
def test_every_public_op_specialisation_compiles_without_spills(nvidia_backend, tmp_path):
    report = tmp_path / "aot.json"
    run = subprocess.run([sys.executable, "-m", "recon.kernels.aot", "--arch", "80", "90", "--json", str(report)],
                         env=_compile_env(), capture_output=True, text=True, timeout=3000)
    problems = run.stdout[run.stdout.rfind("specialisations compiled"):]
    assert run.returncode == 0, f"{problems}\n{run.stderr[-3000:]}"
    results = json.loads(report.read_text())
    kernels = {r["kernel"].split(":")[1] for r in results}
    assert {"_blend_fwd_kernel", "_blend_bwd_kernel", "_project_kernel", "_project_bwd_kernel", "_sh_kernel",
            "_hash_fwd_kernel", "_hash_bwd_kernel", "_composite_fwd_kernel", "_composite_bwd_kernel",
            "_classify_kernel", "_emit_vertices_kernel", "_emit_faces_kernel"} <= kernels
    from recon.kernels.splatting.triton import MAX_BLOCK_D

    # every channel block width (powers of two up to the tile's largest) x tile x background x absgrad
    expected = sum(2 * 2 * (widest.bit_length()) for widest in MAX_BLOCK_D.values())
    for arch in (80, 90):
        blends = {r["launch"] for r in results if r["arch"] == arch and "_blend_bwd_kernel" in r["kernel"]}
        assert len(blends) == expected, sorted(blends)
    assert all(r["ok"] and r["spill_stores"] == 0 for r in results)


BROKEN_KERNEL = textwrap.dedent('''
    import triton
    import triton.language as tl


    @triton.jit
    def broken_kernel(x_ptr, out_ptr, BLOCK: tl.constexpr):
        offs = tl.arange(0, BLOCK)
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for c in tl.static_range(2):
            bit: tl.constexpr = c & 1  # the interpreter runs this; the compiler refuses to re-declare a constexpr
            acc += tl.load(x_ptr + offs) * bit
        tl.store(out_ptr + offs, acc)
''')

RECORD = textwrap.dedent('''
    import dataclasses, json, torch
    from recon.kernels import aot
    import broken
    with aot.record_launches() as launches:
        broken.broken_kernel[(1,)](torch.ones(16), torch.empty(16), BLOCK=16)
    print(json.dumps([dataclasses.astuple(x) for x in launches]))
''')

COMPILE = textwrap.dedent('''
    import json, sys
    from recon.kernels import aot
    (kernel, args, kwargs), = json.loads(sys.stdin.read())
    launch = aot.Launch(kernel, tuple(tuple(a) if isinstance(a, list) else a for a in args),
                        tuple(tuple(kv) for kv in kwargs))
    print("\\n".join(aot.failures([aot.compile_launch(launch, 90)])))
''')


def test_a_kernel_the_interpreter_accepts_but_the_compiler_rejects_is_reported(nvidia_backend, tmp_path):
    (tmp_path / "broken.py").write_text(BROKEN_KERNEL)
    env = {**_compile_env(), "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    recorded = subprocess.run([sys.executable, "-c", RECORD], env={**env, "TRITON_INTERPRET": "1"},
                              capture_output=True, text=True, timeout=300)
    assert recorded.returncode == 0, recorded.stderr[-3000:]  # the interpreter is happy with it
    compiled = subprocess.run([sys.executable, "-c", COMPILE], input=recorded.stdout, env=env, capture_output=True,
                              text=True, timeout=300)
    assert compiled.returncode == 0, compiled.stderr[-3000:]
    report = compiled.stdout
    assert "sm_90 broken_kernel[BLOCK=16]: does not compile" in report, report
    assert "constexpr cannot be reassigned" in report and "specialisation:" in report, report
