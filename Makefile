# Two commands do all set-up on a fresh machine: `make demo` and `make test`. Both reuse .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q
# A bare `torch` pulls a CUDA build of several GB; without a GPU take the CPU wheel (2.13.0 lies on disk).
HAS_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1)
TORCH := $(if $(HAS_GPU),torch,torch==2.13.0)
DEMO_SCENE ?= demo/scene
DEMO_RUN ?= runs/demo
# The full 30000-step schedule on a GPU; a short one on the CPU (about 5 minutes on 2 cores).
DEMO_STEPS ?= $(if $(HAS_GPU),30000,600)

.PHONY: demo test venv clean cuda gpu-check

$(VENV)/.base: setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) "$(TORCH)"
	$(PIP) -e .
	touch $@

$(VENV)/.test: $(VENV)/.base setup.py
	$(PIP) -e ".[test,mesh]"
	touch $@

venv: $(VENV)/.base

demo: $(VENV)/.base
	$(VENV)/bin/recon demo-scene $(DEMO_SCENE)
	$(VENV)/bin/recon info $(DEMO_SCENE)
	$(VENV)/bin/recon fit $(DEMO_SCENE) -o $(DEMO_RUN) --steps $(DEMO_STEPS) \
	  $$(test -d $(DEMO_RUN)/checkpoints && echo --resume)
	$(VENV)/bin/recon render $(DEMO_RUN) --path orbit --frames 60 -o $(DEMO_RUN)/orbit.mp4

test: $(VENV)/.test
	$(PY) -m pytest -q tests

# The CUDA C kernels (kernels/cuda/*.cu) as fatbins next to their sources; RECON_CUDA_ARCHS=75;80;86;89;90 by default
# (RECON_CUDA_FLAGS replaces the default nvcc flags).
cuda:
	cmake -S . -B build/cuda -DRECON_CUDA_ARCHS="$(or $(RECON_CUDA_ARCHS),75;80;86;89;90)" \
	  $(if $(RECON_CUDA_FLAGS),-DRECON_CUDA_FLAGS="$(RECON_CUDA_FLAGS)")
	cmake --build build/cuda

# On a machine with an NVIDIA GPU: kernels against their references on the GPU, the CUDA build, gsplat agreement and a
# quick run of every benchmark, as one table in gpu-check/summary.md (exit 2 without a GPU). Uses .venv when it exists.
gpu-check:
	$(if $(wildcard $(PY)),$(PY),$(PYTHON)) bench/gpu_check.py --out gpu-check

clean:
	rm -rf $(VENV) demo runs build gpu-check *.egg-info
