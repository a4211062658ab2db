"""Progressive rendering for one browser: small images while the camera moves, full size once it is still,
and renders that a newer camera overtook are dropped instead of shown.

``Progressive`` only decides; the viewer renders. Each change (camera, settings, a trained model) bumps a
version. ``next_job`` answers what to render now: a preview, sized so that it takes about
``preview_seconds`` at the measured speed, while changes keep coming; the full image once none came for
``still_after`` seconds. ``finished`` reports a render back: it is shown only if its version is still the
newest (else it is stale and dropped), and its time per pixel sizes the next preview.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass

from recon.engine.scene.camera import Camera


@dataclass(frozen=True)
class Job:
    """One render to do: ``camera`` (possibly scaled down), the ``version`` it shows, and whether it is full size."""

    camera: Camera
    version: int
    full: bool


class Progressive:
    """The render schedule of one view (thread-safe: changes come from the server, jobs run elsewhere)."""

    def __init__(self, *, still_after: float = 0.25, preview_seconds: float = 0.1, min_preview_side: int = 64):
        self.still_after = still_after
        self.preview_seconds = preview_seconds
        self.min_preview_side = min_preview_side
        self.camera: Camera | None = None
        self.version = 0
        self.changed_at = -math.inf
        self.shown: tuple[int, bool] = (0, True)  # (version, full) of the image on screen
        self.seconds_per_pixel: float | None = None
        self.dropped = 0
        self._lock = threading.Lock()

    def change(self, now: float, camera: Camera | None = None, *, still: bool = False) -> None:
        """Something visible changed at ``now`` (a new ``camera``, else settings or the model).

        ``still`` marks a change that is not a movement (a setting, a trained model): it goes straight to
        full size.
        """
        with self._lock:
            if camera is not None:
                self.camera = camera
            self.version += 1
            self.changed_at = now - self.still_after if still else now

    def next_job(self, now: float) -> Job | None:
        """What to render at ``now``, or None when the screen is up to date (or the next step must wait)."""
        with self._lock:
            if self.camera is None:
                return None
            still = now - self.changed_at >= self.still_after
            version, full = self.shown
            if version == self.version and (full or not still):
                return None
            if still:
                return Job(self.camera, self.version, True)
            return Job(self._preview_camera(), self.version, False)

    def wait(self, now: float) -> float | None:
        """Seconds until a job is due if none is now (a preview shown, waiting for stillness), else None."""
        with self._lock:
            if self.camera is None or self.shown != (self.version, False):
                return None
            return max(self.still_after - (now - self.changed_at), 0.0)

    def finished(self, job: Job, seconds: float) -> bool:
        """Report ``job`` rendered in ``seconds``; True to show it, False when a newer change made it stale."""
        with self._lock:
            pixels = job.camera.width * job.camera.height
            rate = seconds / max(pixels, 1)
            self.seconds_per_pixel = rate if self.seconds_per_pixel is None else 0.5 * (self.seconds_per_pixel + rate)
            if job.version != self.version:
                self.dropped += 1
                return False
            self.shown = (job.version, job.full)
            return True

    def _preview_camera(self) -> Camera:
        camera = self.camera
        pixels = camera.width * camera.height
        if self.seconds_per_pixel is None:
            budget = 256 * 256  # before the first measurement
        else:
            budget = self.preview_seconds / max(self.seconds_per_pixel, 1e-12)
        budget = max(budget, self.min_preview_side ** 2)
        if budget >= pixels:
            return camera
        return camera.scaled(math.sqrt(pixels / budget))
