"""``recon fit --view``: the browser viewer inside a training loop, through the trainers' ``on_step`` hook.

Trainers call ``on_step(step, model, loss)`` after each optimiser step. With no browser connected it returns
after one check, so training runs at full speed. With one, the viewer renders in the training thread (never
concurrently with an optimiser step), spending at most ``render_share`` of the wall time on rendering, shows
the step and loss, and re-renders the trained model every ``refresh_seconds``. A tab that closes or dies is
dropped by the viewer; nothing it does can raise into the training loop.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from recon.engine.render.sources import RenderSource
from recon.engine.scene.scene import Normalization
from recon.engine.viewer.server import Viewer
from recon.engine.viewer.target import ViewTarget

_log = logging.getLogger("recon.viewer")


def training_target(source: Path, kind: str, config: dict, run_dir: Path) -> ViewTarget:
    """What the live viewer shows before the first step: the scene's cameras (scene folders; loaded as the fit
    with options ``config`` loads them) or nothing."""
    from recon.engine.scene.undistorted import load_fit_scene

    source = Path(source)
    if source.is_dir():
        scene = load_fit_scene(source, kind, config)
        render_source = RenderSource(model=None, kind=kind, train=[f.camera for f in scene.train_frames],
                                     test=[f.camera for f in scene.test_frames],
                                     normalization=scene.normalization, scene=scene)
        points = scene.points
    else:
        render_source = RenderSource(model=None, kind=kind, train=[], test=[], normalization=Normalization())
        points = None
    return ViewTarget(render_source, f"training {source.name} ({kind})", points, Path(run_dir) / "views")


class LiveView:
    """The ``on_step`` hook of a training loop that feeds a started ``Viewer``."""

    def __init__(self, viewer: Viewer, total_steps: int, *, render_share: float = 0.25,
                 refresh_seconds: float = 1.0, status_seconds: float = 0.5):
        self.viewer = viewer
        self.total_steps = total_steps
        self.render_share = render_share
        self.refresh_seconds = refresh_seconds
        self.status_seconds = status_seconds
        self.started = time.perf_counter()
        self.render_seconds = 0.0
        self.last_refresh = self.last_status = -float("inf")

    def on_step(self, step: int, model: Any, loss: torch.Tensor | float) -> None:
        """Called by the trainer after each step; cheap unless a browser is connected."""
        if not self.viewer.connected:
            return
        try:
            self._serve(step, model, loss)
        except Exception as exc:  # the viewer must never stop a fit
            _log.warning("viewer: %s", exc)

    def _serve(self, step: int, model: Any, loss: torch.Tensor | float) -> None:
        viewer = self.viewer
        viewer.model = model
        now = time.perf_counter()
        if now - self.last_status >= self.status_seconds:
            self.last_status = now
            value = float(loss.detach()) if torch.is_tensor(loss) else float(loss)
            viewer.training.content = f"training: step {step} of {self.total_steps}, loss {value:.5f}"
            viewer.training.visible = True
        if now - self.last_refresh >= self.refresh_seconds:
            self.last_refresh = now
            viewer.changed()
        if self.render_seconds <= self.render_share * (now - self.started):
            tick = time.perf_counter()
            if viewer.render_pending():
                self.render_seconds += time.perf_counter() - tick
