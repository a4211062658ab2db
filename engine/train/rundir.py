"""Run directories: resolved config (JSON), checkpoints, metrics.json and a log, all written atomically.

Layout of a run directory::

    config.json            the resolved configuration (model kind, scene, every option)
    checkpoints/step_NNNNNNN.pt   model kind, parameters, optimiser state, step, normalisation
    metrics.json           evaluation figures at the end of the fit
    log.txt                one line per event (start, resume, checkpoint, evaluation)
"""
from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path
from typing import Any

import torch

from recon.engine.errors import ReconError
from recon.engine.io.atomic import atomic_path, write_json_atomic

CHECKPOINT_DIR = "checkpoints"
_CHECKPOINT_RE = re.compile(r"step_(\d+)\.pt$")


def default_run_dir(scene_name: str, root: str | Path = "runs") -> Path:
    """``runs/<scene>-<YYYYmmdd-HHMMSS>``."""
    return Path(root) / f"{scene_name}-{time.strftime('%Y%m%d-%H%M%S')}"


def write_config(run_dir: Path, config: dict[str, Any]) -> None:
    """Write the resolved configuration as ``config.json``."""
    write_json_atomic(Path(run_dir) / "config.json", config)


def read_config(run_dir: Path) -> dict[str, Any]:
    """Read ``config.json`` of a run directory; a clear error when it is not one."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ReconError(f"{run_dir}: not a run directory (no config.json)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ReconError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno})") from None


def write_metrics(run_dir: Path, metrics: dict[str, Any]) -> None:
    """Write ``metrics.json``."""
    write_json_atomic(Path(run_dir) / "metrics.json", metrics)


def log_line(run_dir: Path, message: str) -> None:
    """Append one time-stamped line to ``log.txt``."""
    with open(Path(run_dir) / "log.txt", "a", encoding="utf-8") as fh:
        fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")


def checkpoint_paths(run_dir: Path) -> list[Path]:
    """Checkpoints of a run, oldest step first."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    found = [(int(m.group(1)), p) for p in folder.glob("step_*.pt") if (m := _CHECKPOINT_RE.search(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(run_dir: Path, state: dict[str, Any], keep: int = 2) -> Path:
    """Save ``state`` (which must hold ``kind`` and ``step``) atomically; keep the newest ``keep``."""
    if "kind" not in state or "step" not in state:
        raise ValueError("a checkpoint needs 'kind' and 'step'")
    path = Path(run_dir) / CHECKPOINT_DIR / f"step_{int(state['step']):07d}.pt"
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    for old in checkpoint_paths(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def resume_state(run_dir: Path, kind: str, config: Any, *, resume: bool, map_location: str | torch.device = "cpu",
                 mmap: bool = False) -> tuple[dict[str, Any] | None, Any]:
    """For ``--resume``: the newest checkpoint of a ``kind`` run and the run's own config dataclass
    (every option as saved, except ``steps`` from ``config``, so a run can be extended). ``mmap``: see
    ``load_checkpoint``.

    Without ``resume`` returns ``(None, config)``, refusing a run directory that already holds checkpoints
    (a fresh fit would silently mix with them); a run with no checkpoint or of another kind is an error.
    """
    if not resume:
        if checkpoint_paths(run_dir):
            raise ReconError(f"{run_dir}: the run directory already holds checkpoints; pass --resume or another -o")
        return None, config
    state = load_checkpoint(run_dir, map_location=map_location, mmap=mmap)
    if state is None:
        raise ReconError(f"{run_dir}: --resume, but the run has no checkpoint")
    if state["kind"] != kind:
        raise ReconError(f"{run_dir}: --resume, but the run is a {state['kind']} fit, not {kind}")
    if "edit" in state:  # written by `recon edit`: the model only, and photos of the unedited scene would undo it
        raise ReconError(f"{run_dir}: --resume, but this is an edited run (of {state['edit'].get('from')}); it keeps "
                         f"no optimiser state and fitting it to the original photos would undo the edit: render or "
                         f"export it, or refine it with `recon edit --op finetune`")
    names = {f.name for f in dataclasses.fields(config)}
    saved = {k: v for k, v in state["config"].items() if k in names}
    return state, type(config)(**{**saved, "steps": config.steps})


def load_checkpoint(run_dir: Path, map_location: str | torch.device = "cpu",
                    mmap: bool = False) -> dict[str, Any] | None:
    """The newest checkpoint of a run, or None when it has none.

    With ``mmap`` the tensors are mapped from the file and read when used: a process that takes only its
    shard of a large model reads only those rows.
    """
    paths = checkpoint_paths(run_dir)
    if not paths:
        return None
    try:
        return torch.load(paths[-1], map_location=map_location, weights_only=False, mmap=mmap)
    except (OSError, RuntimeError, EOFError) as exc:
        raise ReconError(f"{paths[-1]}: unreadable checkpoint ({exc})") from None
