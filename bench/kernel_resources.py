"""Registers, spilled bytes, stack and shared memory of every GPU kernel recon ships, per specialisation and arch,
read from the compilers without a GPU.

* Triton: every specialisation the public ops launch (``recon.kernels.aot``: recorded in the interpreter, bound
  as on a GPU, compiled with Triton's bundled ptxas; spills from ``ptxas -v``).
* CUDA C (``kernels/cuda/*.cu``): ``nvcc -Xptxas -v`` for each arch; skipped when nvcc is absent.

Prints a summary per kernel and arch (for docs/benchmarks.md), writes the full tables with ``--markdown`` and
exits 1 when anything fails to compile or spills. Rows that differ only in Triton's integer divisibility hints
show the largest figures.

Examples:
  python bench/kernel_resources.py --markdown docs/kernel_resources.md     # sm_80 and sm_90
  python bench/kernel_resources.py --arch 90 --json resources.json
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# ptxas -v: "Compiling entry function 'name' for 'sm_80'", then the stack/spill line, then "Used N registers, ..."
_PTXAS_FUNCTION = re.compile(
    r"Compiling entry function '(\w+)' for '(sm_\w+)'\s+.*?"
    r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads\s+.*?"
    r"Used (\d+) registers(?:, used \d+ barriers)?(?:, (\d+) bytes cumulative stack size)?(?:, (\d+) bytes smem)?",
    re.S)


def triton_rows(archs: list[int], jobs: int | None) -> list[dict]:
    """One row per Triton specialisation and arch (compiled in ``jobs`` processes)."""
    from recon.kernels import aot

    launches = aot.record_in_subprocess()
    results = aot.compile_all(launches, tuple(archs), jobs)
    return [asdict(r) for r in sorted(results, key=lambda r: (r.arch, r.kernel, r.launch))]


def cuda_rows(archs: list[int]) -> list[dict]:
    """One row per CUDA C kernel and arch from ``nvcc -Xptxas -v`` ([] without nvcc)."""
    nvcc = shutil.which("nvcc") or os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc")
    if not os.access(nvcc, os.X_OK):
        print("nvcc not found: no CUDA C figures", file=sys.stderr)
        return []
    source_dir = REPO / "kernels" / "cuda"
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
    rows = []
    for source in sorted(source_dir.glob("*.cu")):
        with tempfile.TemporaryDirectory() as folder:
            log = subprocess.run([nvcc, "--fatbin", "-O3", "-Xptxas", "-v", *gencode, "-I", str(source_dir), "-o",
                                  str(Path(folder) / "out.fatbin"), str(source)],
                                 capture_output=True, text=True, check=True).stderr
        for name, arch, stack, stores, loads, regs, _, smem in _PTXAS_FUNCTION.findall(log):
            rows.append({"kernel": name, "arch": int(arch.removeprefix("sm_")), "registers": int(regs),
                         "spill_stores": int(stores), "spill_loads": int(loads), "stack": int(stack),
                         "shared": int(smem or 0)})
    return sorted(rows, key=lambda r: (r["arch"], r["kernel"]))


FIGURES = ("registers", "spill_stores", "spill_loads", "stack", "shared")


def merged(rows: list[dict], name_key: str) -> list[dict]:
    """One row per (arch, name), the largest of each figure (specialisations that differ in hints only)."""
    out: dict[tuple[int, str], dict] = {}
    for r in rows:
        key = (r["arch"], r[name_key])
        if key in out:
            out[key].update({f: max(out[key][f], r[f]) for f in FIGURES})
        else:
            out[key] = {"arch": r["arch"], "name": r[name_key], **{f: r[f] for f in FIGURES}}
    return sorted(out.values(), key=lambda r: (r["name"], r["arch"]))


def markdown(rows: list[dict], shared_note: str) -> str:
    lines = [f"| kernel | arch | registers | spill stores / loads (B) | stack (B) | shared ({shared_note}) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| `{r['name']}` | sm_{r['arch']} | {r['registers']} | {r['spill_stores']} / "
                     f"{r['spill_loads']} | {r['stack']} | {r['shared']} |")
    return "\n".join(lines)


def summary(rows: list[dict]) -> str:
    """Per kernel and arch: specialisations, register range, largest spill and shared memory."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["name"].split("[")[0], r["arch"]), []).append(r)
    lines = ["| kernel | arch | specialisations | registers | largest spill (B) | largest shared (B) |",
             "|---|---|---|---|---|---|"]
    for (name, arch), group in sorted(groups.items()):
        regs = [r["registers"] for r in group]
        lines.append(f"| `{name}` | sm_{arch} | {len(group)} | {min(regs)}-{max(regs)} | "
                     f"{max(r['spill_stores'] for r in group)} | {max(r['shared'] for r in group)} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, nargs="+", default=[80, 90], help="compute capabilities")
    parser.add_argument("--jobs", type=int, default=None, help="Triton compile processes (default: one per CPU)")
    parser.add_argument("--json", type=Path, help="write every row as JSON here")
    parser.add_argument("--markdown", type=Path, help="write the full tables as Markdown here")
    args = parser.parse_args()
    os.environ.pop("TRITON_INTERPRET", None)
    triton = triton_rows(args.arch, args.jobs)
    cuda = cuda_rows(args.arch)
    failed = [r for r in triton if not r["ok"]]
    for r in failed:
        print(f"sm_{r['arch']} {r['launch']}: does not compile: {r['error'][:500]}", file=sys.stderr)
    triton_table = merged([r for r in triton if r["ok"]], "launch")
    cuda_table = merged(cuda, "kernel")
    print(summary(triton_table + cuda_table))
    if args.markdown:
        text = ("### Triton (every specialisation the public ops launch)\n\n"
                + markdown(triton_table, "dynamic, per program") + "\n")
        if cuda:
            text += ("\n### CUDA C (kernels/cuda, nvcc -O3)\n\n"
                     + markdown(cuda_table, "static, per block; plus 32 B per thread dynamic") + "\n")
        args.markdown.write_text(text)
    if args.json:
        args.json.write_text(json.dumps({"triton": triton, "cuda": cuda}, indent=1))
    spilled = [r for r in triton + cuda if r["spill_stores"] or r["spill_loads"]]
    print(f"\n{len(triton)} Triton specialisations, {len(cuda)} CUDA C kernels; {len(failed)} failed to compile, "
          f"{len(spilled)} spill", file=sys.stderr)
    return 1 if failed or spilled else 0


if __name__ == "__main__":
    sys.exit(main())
