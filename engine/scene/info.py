"""``describe_scene``: a short, human-readable account of a loaded scene (what ``recon info`` prints)."""
from __future__ import annotations

from collections import Counter

import numpy as np

from recon.engine.scene.scene import Scene
from recon.engine.scene.undistorted import lens_plans
from recon.engine.sfm.report import read_record, report_from_dict, summary_line


def describe_scene(scene: Scene, max_fov: float = 120.0) -> str:
    """Format, images per split, resolutions, camera models and intrinsics, lens handling (which cameras Gaussian
    fits undistort, into what, with ``max_fov``), points, bounds, normalisation and, for a scene made by
    ``recon sfm``, how it went.

    Bounds are given in the data's original coordinates (the scene itself may be normalised).
    """
    cameras = [f.camera for f in scene.frames]
    norm = scene.normalization
    rows = [
        ("scene", str(scene.root)),
        ("format", scene.source_format),
        ("images", f"{len(scene.frames)} ({len(scene.train_indices)} train, {len(scene.test_indices)} test)"),
        ("resolution", _counted(f"{c.width}x{c.height}" for c in cameras)
         + (f" (downscale {scene.downscale})" if scene.downscale != 1 else "")),
        ("camera models", _counted(c.model for c in cameras)),
        ("intrinsics", _intrinsics(scene)),
        *_lens_rows(scene, max_fov),
        ("points", "none" if scene.points is None else f"{len(scene.points):,}"),
        ("background", ", ".join(f"{v:g}" for v in scene.background)),
        ("camera centres", _bounds(norm.to_original(scene.camera_centers)) + "  (original coordinates)"),
    ]
    if scene.points is not None and len(scene.points):
        rows.append(("point bounds", _bounds(norm.to_original(scene.points)) + "  (original coordinates)"))
    if scene.aabb is not None:
        rows.append(("scene box", _bounds(norm.to_original(scene.aabb)) + "  (original coordinates)"))
    rows.append(("normalisation", f"centre ({', '.join(f'{v:.4g}' for v in norm.center)}), "
                                  f"scale {norm.scale:.4g}  (x_normalised = (x - centre) * scale)"))
    record = read_record(scene.root)
    if record is not None:
        report = report_from_dict(record["report"])
        rows.append(("made by", f"recon sfm from {report.source}: {summary_line(report)}"))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _counted(values) -> str:
    """``a (3), b (1)`` for the distinct values, most common first."""
    return ", ".join(f"{value} ({count})" for value, count in Counter(values).most_common())


def _intrinsics(scene: Scene) -> str:
    """The shared intrinsics and distortion, or how many distinct sets there are."""
    sets = {(c.fx, c.fy, c.cx, c.cy, tuple(sorted(c.distortion.items()))) for c in (f.camera for f in scene.frames)}
    if len(sets) != 1:
        return f"{len(sets)} distinct sets"
    fx, fy, cx, cy, distortion = next(iter(sets))
    text = f"fx {fx:.6g}, fy {fy:.6g}, cx {cx:.6g}, cy {cy:.6g}"
    return text + "".join(f", {k} {v:.4g}" for k, v in distortion)


def _lens_rows(scene: Scene, max_fov: float) -> list[tuple[str, str]]:
    """What fits do about lens distortion: nothing to do, or per distorted camera the undistortion of Gaussian
    fits (NeRF traces exact rays)."""
    plans = lens_plans(scene, max_fov)
    if not plans:
        return [("distortion", "none (pinhole cameras)")]
    rows = [("distortion", "gaussians undistort the images once (cached; --distortion ignore to skip), "
                           "nerf traces exact rays through the lens")]
    return rows + [("undistorted", plan.describe()) for plan in plans]


def _bounds(points: np.ndarray) -> str:
    """``x [a, b]  y [c, d]  z [e, f]`` of points [N, 3]."""
    lo, hi = points.min(0), points.max(0)
    return "  ".join(f"{axis} [{a:.4g}, {b:.4g}]" for axis, a, b in zip("xyz", lo, hi))
