"""``make gpu-check``: verify recon on an NVIDIA GPU in one call and print one table of pass/fail and figures.

Steps, each a subprocess with its own time limit (the whole check is sized for under 8 minutes on an H100):
  install      recon itself (editable, no deps), plyfile, pycuda and gsplat (the peer) into ``<out>/site``: from
               the wheels in ``.whl/`` when that folder exists (offline machines; see ../shared/gpu/README.md),
               else from the package index; pycuda and gsplat are optional (their steps skip without them)
  cuda-build   the CUDA C kernels for this GPU's arch (CMake + nvcc, spills are errors)
  kernel-tests every test marked ``kernels`` (Triton and CUDA C against the torch reference, run on the GPU)
  gsplat-check the rasterizer's agreement with gsplat on the garden scene
  rasterize    forward / forward+backward times: recon-triton, recon-cuda and gsplat (garden, then 3x3 tiled)
  hashgrid     encoding throughput vs the torch reference (instant-ngp sizes)
  marching     marching cubes 256^3 and 512^3 vs scikit-image
  fit-3dgs     a short 3DGS fit of the demo scene (PSNR, time, peak memory)
  fit-nerf     a short NeRF fit of the demo scene (PSNR against time)

The table (and each step's full log) goes to ``--out`` (default ``gpu-check/``): ``summary.md`` holds the date,
the device and the versions, so its figures can go into docs/benchmarks.md as measured. Exit code: 0 when every
step that ran passed, 1 when one failed, 2 when there is no NVIDIA GPU.

  make gpu-check                       (or: python bench/gpu_check.py --out gpu-check)
"""
from __future__ import annotations

import argparse
import datetime
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GARDEN_CANDIDATES = (REPO.parent / "shared" / "data" / "gsplat-garden" / "test_garden.npz",
                     REPO / ".gpu" / "test_garden.npz")


@dataclass
class Step:
    name: str
    command: list[str]
    timeout: int
    needs: str = ""  # a module that must import for the step to run (else it is skipped)
    tail: int = 6  # lines of output shown as the step's figures


@dataclass
class Outcome:
    name: str
    status: str  # PASS, FAIL, SKIP
    seconds: float
    figures: str


def gpu_name() -> str | None:
    """The first GPU's name from nvidia-smi, or None without an NVIDIA GPU."""
    if shutil.which("nvidia-smi") is None:
        return None
    run = subprocess.run(["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"], capture_output=True,
                         text=True)
    return run.stdout.strip().splitlines()[0] if run.returncode == 0 and run.stdout.strip() else None


def install(site: Path, env: dict[str, str], log) -> str:
    """Install recon (editable) and the optional GPU packages into ``site``; returns what was installed."""
    wheels = REPO / ".whl"
    offline = ["--no-index", "--find-links", str(wheels)] if wheels.is_dir() else []
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check"]
    done = []
    if subprocess.run([sys.executable, "-c", "import recon.kernels"], env=env, capture_output=True).returncode:
        subprocess.run([*pip, "--no-build-isolation", "-e", str(REPO)], check=True, stdout=log, stderr=log)
        done.append("recon")
    packages = {"plyfile": "plyfile", "pycuda": "pycuda", "gsplat": "gsplat"}
    extra = {"pycuda": ["pytools", "mako", "platformdirs", "siphash24"]}
    for module, name in packages.items():
        if subprocess.run([sys.executable, "-c", f"import {module}"], env=env, capture_output=True).returncode == 0:
            continue
        build = ["--no-build-isolation"] if module == "pycuda" else []
        run = subprocess.run([*pip, *offline, *build, "--target", str(site), name, *extra.get(module, [])],
                             stdout=log, stderr=log)
        done.append(name if run.returncode == 0 else f"{name} (failed)")
    return ", ".join(done) or "nothing (all present)"


def run_step(step: Step, env: dict[str, str], logs: Path) -> Outcome:
    if step.needs and subprocess.run([sys.executable, "-c", f"import {step.needs}"], env=env,
                                     capture_output=True).returncode:
        return Outcome(step.name, "SKIP", 0.0, f"{step.needs} does not import")
    start = time.perf_counter()
    log_path = logs / f"{step.name}.log"
    with open(log_path, "w") as log:
        log.write(f"$ {' '.join(step.command)}\n")
        log.flush()
        try:
            run = subprocess.run(step.command, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                 timeout=step.timeout)
            status = "PASS" if run.returncode == 0 else "FAIL"
        except subprocess.TimeoutExpired:
            status = "FAIL"
            log.write(f"\n(timed out after {step.timeout} s)\n")
    lines = [line.rstrip() for line in log_path.read_text().splitlines()[1:] if line.strip()]
    return Outcome(step.name, status, time.perf_counter() - start, " / ".join(lines[-step.tail:]))


def steps(garden: Path | None, arch: str) -> list[Step]:
    py = sys.executable
    garden_args = ["--data", str(garden)] if garden else []
    return [
        Step("cuda-build", ["make", "cuda", f"RECON_CUDA_ARCHS={arch}",
                            "RECON_CUDA_FLAGS=-O3 -Xptxas --warn-on-spills --Werror all-warnings"], 180, tail=2),
        Step("kernel-tests", [py, "-m", "pytest", "-q", "-m", "kernels", "-p", "no:cacheprovider", "tests"], 240,
             tail=3),
        Step("gsplat-check", [py, "bench/rasterize.py", "--device", "cuda", "--check", *garden_args], 150,
             needs="gsplat"),
        Step("rasterize", [py, "bench/rasterize.py", "--device", "cuda", "--backends", "triton,cuda", "--vs-gsplat",
                           *garden_args], 120),
        Step("rasterize-tiled", [py, "bench/rasterize.py", "--device", "cuda", "--scene", "tiled", "--backends",
                                 "triton,cuda", "--vs-gsplat", *garden_args], 120),
        Step("hashgrid", [py, "bench/hashgrid.py", "--device", "cuda", "--repeats", "5"], 90),
        Step("marching", [py, "bench/marching_cubes.py", "--device", "cuda", "--sizes", "256", "512",
                          "--chunked-size", "0", "--repeats", "2"], 120, needs="skimage"),
        Step("fit-3dgs", [py, "bench/fit_gaussians.py", "--device", "cuda", "--scenes", "demo", "--steps", "3000"],
             180),
        Step("fit-nerf", [py, "bench/nerf.py", "--device", "cuda", "--scene", "demo", "--steps", "3000",
                          "--eval-every", "1000"], 180),
    ]


def table(outcomes: list[Outcome]) -> str:
    rows = ["| step | result | seconds | figures (last lines of its log) |", "|---|---|---|---|"]
    rows += [f"| {o.name} | {o.status} | {o.seconds:.0f} | {o.figures.replace('|', '/')} |" for o in outcomes]
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "gpu-check", help="folder for summary.md and the logs")
    parser.add_argument("--only", nargs="*", help="run only these steps (names as in the table)")
    args = parser.parse_args()
    name = gpu_name()
    if name is None:
        print("make gpu-check: needs an NVIDIA GPU (nvidia-smi finds none); nothing was run", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    site = (args.out / "site").resolve()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
           "PYTHONUNBUFFERED": "1"}
    env.pop("TRITON_INTERPRET", None)
    env.pop("RECON_BACKEND", None)
    started = time.perf_counter()
    with open(args.out / "install.log", "w") as log:
        installed = install(site, env, log)
    arch = name.rsplit(",", 1)[-1].strip().replace(".", "")
    garden = next((p for p in GARDEN_CANDIDATES if p.is_file()), None)
    outcomes = [Outcome("install", "PASS", time.perf_counter() - started, installed)]
    for step in steps(garden, arch):
        if args.only and step.name not in args.only:
            continue
        outcome = run_step(step, env, args.out)
        outcomes.append(outcome)
        print(f"{outcome.name:16s} {outcome.status} {outcome.seconds:6.0f} s  {outcome.figures[:160]}", flush=True)
    versions = subprocess.run([sys.executable, "-c", "import torch, triton; print(f'torch {torch.__version__} "
                               "(CUDA {torch.version.cuda}), triton {triton.__version__}')"], env=env,
                              capture_output=True, text=True).stdout.strip()
    header = (f"# recon gpu-check, {datetime.date.today().isoformat()}\n\n"
              f"Device: {name.split(',')[0]} (sm_{arch}); {versions}; garden data: {garden or 'absent'}; "
              f"total {time.perf_counter() - started:.0f} s\n\n")
    summary = header + table(outcomes) + "\n"
    (args.out / "summary.md").write_text(summary)
    print("\n" + summary)
    return 1 if any(o.status == "FAIL" for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
