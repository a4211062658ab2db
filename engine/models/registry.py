"""Find the model class of a run directory from the ``kind`` its checkpoints record.

Every scene model module (gaussians, nerf, sdf) provides a class with

* ``from_checkpoint(state: dict, device) -> model`` (classmethod): rebuild from a saved checkpoint;
* ``render(camera: Camera, *, background=None) -> dict`` with ``rgb`` [H, W, 3], ``depth`` [H, W, 1] and
  ``alpha`` [H, W, 1] tensors, in normalised scene coordinates (so ``recon render`` works for all);
* ``extract_mesh(resolution: int) -> (vertices, faces)`` in normalised coordinates (``recon export --mesh``).
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch

from recon.engine.errors import NotBuiltError, ReconError
from recon.engine.train.rundir import load_checkpoint, read_config

# kind -> "module:ClassName"
MODEL_CLASSES: dict[str, str] = {
    "gaussians": "recon.engine.models.gaussians:GaussianModel",
    "nerf": "recon.engine.models.nerf:NerfModel",
    "sdf": "recon.engine.models.sdf:FieldModel",
    "occupancy": "recon.engine.models.sdf:FieldModel",
}


def model_class(kind: str) -> type:
    """The class that implements model ``kind``."""
    if kind not in MODEL_CLASSES:
        raise ReconError(f"unknown model kind {kind!r}; known: {', '.join(MODEL_CLASSES)}")
    module_name, class_name = MODEL_CLASSES[kind].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise NotBuiltError(f"the {kind} model is not built yet in this version of recon") from None
        raise
    return getattr(module, class_name)


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[Any, dict[str, Any]]:
    """Load the newest checkpoint of a run as a model; returns (model, checkpoint state)."""
    run_dir = Path(run_dir)
    read_config(run_dir)  # a clear error when this is no run directory
    state = load_checkpoint(run_dir, map_location=device)
    if state is None:
        raise ReconError(f"{run_dir}: the run has no checkpoint yet")
    return model_class(state["kind"]).from_checkpoint(state, device), state
