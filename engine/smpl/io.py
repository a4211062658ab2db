"""Files of the SMPL tools: joint and camera inputs, scans, fitted parameters (posed meshes are written
with ``recon.engine.io.mesh.write_mesh``)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from recon.engine.errors import ReconError
from recon.engine.io.atomic import atomic_path, write_json_atomic
from recon.engine.io.mesh import read_shape
from recon.engine.smpl.fit import PinholeCamera

PARAM_KEYS = ("betas", "global_orient", "body_pose", "transl")


def read_joints3d(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """3D joints [F, J, 3] and confidence [F, J] from ``.npy`` or JSON ([F, J, 3|4] / [J, 3|4], or
    ``{"joints": ...}``); a 4th column is the confidence, NaN joints get confidence 0."""
    path = Path(path)
    if not path.is_file():
        raise ReconError(f"{path}: joint file not found")
    try:
        if path.suffix == ".npy":
            array = np.asarray(np.load(path, allow_pickle=False), dtype=np.float64)
        else:
            doc = json.loads(path.read_text())
            array = np.asarray(doc["joints"] if isinstance(doc, dict) else doc, dtype=np.float64)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ReconError(f"{path}: cannot read joints ({exc})") from None
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise ReconError(f"{path}: joints have shape {list(array.shape)}, expected [frames, joints, 3]")
    conf = array[..., 3] if array.shape[-1] == 4 else np.ones(array.shape[:2])
    joints = array[..., :3]
    if not np.all(np.isfinite(joints)):
        raise ReconError(f"{path}: joints contain NaN or infinite values")
    return joints, conf


def read_camera(path: str | os.PathLike) -> PinholeCamera:
    """Camera JSON: ``fx``, ``fy``, ``cx``, ``cy`` (or ``K`` 3x3) and optional ``world_to_camera`` 4x4 (OpenCV)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
        if "K" in doc:
            k = np.asarray(doc["K"], dtype=np.float64).reshape(3, 3)
            fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
        else:
            fx, fy, cx, cy = (float(doc[key]) for key in ("fx", "fy", "cx", "cy"))
        w2c = np.asarray(doc.get("world_to_camera", np.eye(4)), dtype=np.float64).reshape(4, 4)
    except FileNotFoundError:
        raise ReconError(f"{path}: camera file not found") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ReconError(f"{path}: cannot read camera (need fx, fy, cx, cy or K; {exc})") from None
    if not (np.all(np.isfinite(w2c)) and all(np.isfinite(v) for v in (fx, fy, cx, cy)) and fx > 0 and fy > 0):
        raise ReconError(f"{path}: camera values must be finite with positive focal lengths")
    return PinholeCamera(float(fx), float(fy), float(cx), float(cy), w2c)


def default_camera(width: int, height: int) -> PinholeCamera:
    """An estimated camera for an image of this size: focal length = the larger side (about 53 degrees
    across), principal point at the centre, at the world origin looking down +z."""
    focal = float(max(width, height))
    return PinholeCamera(focal, focal, width / 2.0, height / 2.0)


def camera_for_image(path: str | os.PathLike) -> tuple[PinholeCamera, str]:
    """The camera of a photo and where its focal length came from: the EXIF focal length (35 mm equivalent, else
    focal length and sensor resolution; ``"exif"``), else ``default_camera`` (``"default"``)."""
    from PIL import Image

    from recon.engine.sfm.photos import exif_focal_pixels

    try:
        with Image.open(path) as im:
            width, height = im.size
            focal = exif_focal_pixels(im.getexif(), width, width, height)
    except (OSError, ValueError, SyntaxError) as exc:
        raise ReconError(f"{path}: cannot read image ({exc})") from None
    if focal is None:
        return default_camera(width, height), "default"
    return PinholeCamera(focal, focal, width / 2.0, height / 2.0), "exif"


def read_scan(path: str | os.PathLike) -> np.ndarray:
    """Points [N, 3] of a scan: a point cloud or the vertices of a mesh (.ply, .obj, .xyz)."""
    return np.asarray(read_shape(path).points, dtype=np.float64)


def write_params(out_dir: str | os.PathLike, params: dict[str, np.ndarray]) -> None:
    """``params.npz`` and ``params.json`` with betas [F, L], global_orient [F, 3], body_pose [F, 3(J-1)],
    transl [F, 3] (axis-angle, metres)."""
    out_dir = Path(out_dir)
    arrays = {k: np.asarray(params[k], dtype=np.float64) for k in PARAM_KEYS}
    with atomic_path(out_dir / "params.npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    write_json_atomic(out_dir / "params.json", {k: v.tolist() for k, v in arrays.items()})
