"""What an SfM run did: registered images, points, reprojection error, cameras, time per stage.

The report is printed at the end of ``recon sfm`` and kept in the scene as ``sfm.json`` (with the
source's fingerprint and the options, which decide whether a later ``recon fit`` may reuse the scene).
"""
from __future__ import annotations

import contextlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

RECORD_NAME = "sfm.json"
_SHOWN_NAMES = 10


@dataclass
class SfmReport:
    """The outcome of one SfM run.

    ``images`` are the names given to SfM (in name order), ``registered`` those with a pose in the kept
    model, ``skipped`` the input files left out (with the reason). ``models`` lists the registered-image
    count of every model the mapper made, largest (kept) first. ``cameras`` are the kept model's cameras as
    ``{"model", "width", "height", "params"}``; ``only_in_other_models`` names the images registered only in
    models other than the kept one; ``stages`` maps a stage name to ``{"wall_s", "cpu_s"}``;
    ``video`` says how the frames were chosen (None for photos).
    """

    source: str
    kind: str
    images: list[str]
    registered: list[str]
    skipped: list[str]
    points: int
    mean_reprojection_error: float
    cameras: list[dict]
    matcher: str
    pairs: int
    mapper: str
    models: list[int]
    only_in_other_models: list[str]
    sift_device: str
    stages: dict[str, dict] = field(default_factory=dict)
    video: dict | None = None

    @property
    def unregistered(self) -> list[str]:
        """Names given to SfM that the kept model has no pose for."""
        registered = set(self.registered)
        return [name for name in self.images if name not in registered]


def report_from_dict(data: dict) -> SfmReport:
    """The ``SfmReport`` stored in ``sfm.json``."""
    return SfmReport(**data)


def write_record(folder: Path, report: SfmReport, fingerprint: dict, options: dict, intake: dict) -> None:
    """Write ``sfm.json`` into ``folder``: the report, the source's fingerprint, the options and the intake
    state (what a later run with other matching or mapping options starts from)."""
    from recon.engine.io.atomic import write_json_atomic

    write_json_atomic(folder / RECORD_NAME, {"report": asdict(report), "fingerprint": fingerprint,
                                             "options": options, "intake": intake})


def read_record(folder: Path) -> dict | None:
    """The ``sfm.json`` of a scene folder made by ``recon sfm``, or None (absent or unreadable)."""
    try:
        return json.loads((folder / RECORD_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN_NAMES])
    return shown + (f", ... ({len(names) - _SHOWN_NAMES} more)" if len(names) > _SHOWN_NAMES else "")


def _camera(camera: dict) -> str:
    from recon.engine.scene.colmap import CAMERA_MODELS

    names = CAMERA_MODELS.get(camera["model"], (0, ()))[1] or tuple(f"p{i}" for i in range(len(camera["params"])))
    values = ", ".join(f"{n} {v:.4g}" for n, v in zip(names, camera["params"]))
    return f"{camera['model']} {camera['width']}x{camera['height']} ({values})"


def summary_line(report: SfmReport) -> str:
    """One line: registered images, points, mean reprojection error and camera models."""
    models = sorted({c["model"] for c in report.cameras})
    return (f"{len(report.registered)} of {len(report.images)} images registered, {report.points:,} points, "
            f"mean reprojection error {report.mean_reprojection_error:.3g} px, {', '.join(models)}")


def format_report(report: SfmReport, out: Path | str) -> str:
    """The report as printed at the end of ``recon sfm``."""
    registered = f"{len(report.registered)} of {len(report.images)}"
    if report.unregistered:
        registered += f" (not registered: {_names(report.unregistered)})"
    rows = [("images registered", registered)]
    if report.skipped:
        rows.append(("inputs skipped", _names(report.skipped)))
    if report.video:
        v = report.video
        frames = (f"{len(report.images)} of {v['frame_count']} frames kept ({v['width']}x{v['height']}, "
                  f"{v['fps']:.4g} fps, rotation {v['rotation']}, sharpest of every {v['window']})")
        if v["dropped"]:
            frames += f"; {len(v['dropped'])} dropped as blurred (frames {_names([str(i) for i in v['dropped']])})"
        rows.append(("video", frames))
    rows += [
        ("points", f"{report.points:,}"),
        ("mean reprojection", f"{report.mean_reprojection_error:.3f} px"),
        ("camera model" if len(report.cameras) == 1 else "camera models", "; ".join(_camera(c) for c in report.cameras)),
        ("matching", f"{report.matcher}, {report.pairs:,} pairs; SIFT on {report.sift_device}"),
    ]
    mapping = f"{report.mapper}"
    if len(report.models) > 1:
        mapping += (f"; {len(report.models)} models ({', '.join(map(str, report.models))} images), kept the largest"
                    + (f"; only in the others: {_names(report.only_in_other_models)}" if report.only_in_other_models
                       else ", which holds every image the others do"))
    rows.append(("mapping", mapping))
    rows.append(("time per stage", ", ".join(f"{name} {t['wall_s']:.1f} s (CPU {t['cpu_s']:.1f} s)"
                                             for name, t in report.stages.items())))
    width = max(len(name) for name, _ in rows)
    head = f"structure from motion: {report.source} -> {out}"
    return "\n".join([head] + [f"  {name:<{width}}  {value}" for name, value in rows])


class StageTimer:
    """Wall and CPU seconds (all threads of this process, so pycolmap's too) of named stages."""

    def __init__(self) -> None:
        self.stages: dict[str, dict] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.stages[name] = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}
