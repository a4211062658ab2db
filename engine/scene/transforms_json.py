"""transforms.json scenes in their three dialects: Blender / NeRF-synthetic, instant-ngp and nerfstudio.

All three store OpenGL camera-to-world matrices (``transform_matrix``) and image paths relative to the
JSON file; they differ in how intrinsics are given:

* Blender: ``camera_angle_x`` only (square pixels, centred principal point, size from the images), split
  into ``transforms_{train,val,test}.json``; ``file_path`` has no extension (``./train/r_0`` -> ``.png``).
* instant-ngp: ``fl_x fl_y cx cy w h`` and OpenCV distortion ``k1 k2 p1 p2`` (top level or per frame),
  ``aabb_scale`` with ``scale``/``offset`` giving the scene box.
* nerfstudio: as instant-ngp plus ``camera_model`` (OPENCV, OPENCV_FISHEYE, PINHOLE...), per-frame
  ``mask_path``, ``ply_file_path`` (sparse points in the same world frame) and optional
  ``train_filenames``/``test_filenames``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from recon.engine.errors import ReconError
from recon.engine.scene.camera import Camera, opengl_to_opencv
from recon.engine.scene.scene import Frame, Scene, split_indices

TRANSFORMS_FILES = ("transforms.json", "transforms_train.json")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG")
PERSPECTIVE_MODELS = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV", "FULL_OPENCV")
FISHEYE_MODELS = ("OPENCV_FISHEYE",)
# instant-ngp maps transforms.json positions p to p * scale + offset; its unit cube [0, 1]^3 is then
# inflated by aabb_scale around (0.5, 0.5, 0.5).
NGP_DEFAULT_SCALE = 0.33
NGP_DEFAULT_OFFSET = (0.5, 0.5, 0.5)


def has_transforms(root: Path) -> bool:
    """True when ``root`` holds ``transforms.json`` or ``transforms_train.json``."""
    return any((root / name).is_file() for name in TRANSFORMS_FILES)


def read_json(path: Path) -> dict:
    """A JSON object from ``path``, or a one-line ``ReconError``."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ReconError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except json.JSONDecodeError as exc:
        raise ReconError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
    except UnicodeDecodeError:
        raise ReconError(f"{path}: not a text file") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("frames"), list) or not meta["frames"]:
        raise ReconError(f"{path}: no \"frames\" list (not a transforms.json file)")
    return meta


def detect_dialect(meta: dict, path: Path) -> str:
    """``blender``, ``instant-ngp`` or ``nerfstudio`` from the keys of a transforms file."""
    if any(key in meta for key in ("camera_model", "ply_file_path", "applied_transform")):
        return "nerfstudio"
    first = meta["frames"][0] if isinstance(meta["frames"][0], dict) else {}
    if any(key in meta or key in first for key in ("fl_x", "fl_y", "w", "h", "aabb_scale")):
        return "instant-ngp"
    if "camera_angle_x" in meta:
        return "blender"
    raise ReconError(f"{path}: unknown transforms.json dialect (no camera_model, fl_x or camera_angle_x)")


def load_transforms(root: Path, *, test_every: int, background: tuple[float, float, float]) -> Scene:
    """A ``Scene`` of a transforms.json folder, in the file's world coordinates, full-resolution cameras.

    The official split is used when ``transforms_train.json`` and ``transforms_test.json`` both exist (the
    validation file is not used) or when a nerfstudio file lists ``train_filenames``/``test_filenames``;
    otherwise every ``test_every``-th frame is held out.
    """
    train_file, test_file = root / "transforms_train.json", root / "transforms_test.json"
    if train_file.is_file() and test_file.is_file():
        meta = read_json(train_file)
        dialect = detect_dialect(meta, train_file)
        train = _frames(meta, train_file, dialect)
        test = _frames(read_json(test_file), test_file, dialect)
        frames, train_idx, test_idx = train + test, list(range(len(train))), list(range(len(train), len(train) + len(test)))
    else:
        path = root / "transforms.json" if (root / "transforms.json").is_file() else train_file
        meta = read_json(path)
        dialect = detect_dialect(meta, path)
        frames = _frames(meta, path, dialect)
        if dialect == "nerfstudio":
            frames.sort(key=lambda f: str(f.image_path))
        train_idx, test_idx = _listed_split(meta, frames, path) or split_indices(len(frames), test_every)
    points, colors = _ply_points(meta, root) if dialect == "nerfstudio" else (None, None)
    return Scene(root=root, source_format=dialect, frames=frames, train_indices=train_idx, test_indices=test_idx,
                 points=points, point_colors=colors, background=background, aabb=_ngp_aabb(meta))


def _frames(meta: dict, path: Path, dialect: str) -> list[Frame]:
    """The frames of one transforms file (its order kept)."""
    data_dir = path.parent
    image_paths = []
    for i, frame in enumerate(meta["frames"]):
        if not isinstance(frame, dict) or "file_path" not in frame or "transform_matrix" not in frame:
            raise ReconError(f"{path}: frame {i} needs \"file_path\" and \"transform_matrix\"")
        image_paths.append(resolve_image_path(data_dir, str(frame["file_path"])))
    existing = next((p for p in image_paths if p.is_file()), None)
    if existing is None:
        raise ReconError(f"{path}: none of its {len(image_paths)} images exist (first: {image_paths[0]})")
    fallback_size = _image_size(existing)
    frames = []
    for frame, image_path in zip(meta["frames"], image_paths):
        values = {**meta, **frame}  # per-frame intrinsics override the file's
        size = None if "w" in values and "h" in values else (
            _image_size(image_path) if image_path.is_file() else fallback_size)
        camera = _camera(values, size, dialect, path, image_path.name)
        mask = data_dir / frame["mask_path"] if "mask_path" in frame else None
        frames.append(Frame(name=str(frame["file_path"]), image_path=image_path, camera=camera, mask_path=mask))
    return frames


def resolve_image_path(data_dir: Path, file_path: str) -> Path:
    """``data_dir / file_path``; a path without an extension (Blender's ``./train/r_0``) gets the image
    suffix found on disk, ``.png`` when none is."""
    path = data_dir / file_path
    if path.suffix or path.is_file():
        return path
    return next((path.with_suffix(s) for s in IMAGE_SUFFIXES if path.with_suffix(s).is_file()), path.with_suffix(".png"))


def _image_size(path: Path) -> tuple[int, int]:
    from recon.engine.io.images import image_size

    return image_size(path)


def _camera(values: dict, size: tuple[int, int] | None, dialect: str, path: Path, name: str) -> Camera:
    """Intrinsics, distortion and pose of one frame from its merged (file + frame) keys."""
    try:
        width, height = (int(values["w"]), int(values["h"])) if size is None else size
        fx = _focal(values, "fl_x", "camera_angle_x", width)
        fy = _focal(values, "fl_y", "camera_angle_y", height) if ("fl_y" in values or "camera_angle_y" in values) else fx
        if fx is None:
            raise ReconError(f"{path}: no focal length for {name} (needs fl_x or camera_angle_x)")
        cx, cy = float(values.get("cx", width / 2)), float(values.get("cy", height / 2))
        matrix = np.asarray(values["transform_matrix"], dtype=np.float64)
        model, distortion = _distortion(values, dialect, path)
    except (TypeError, ValueError) as exc:
        raise ReconError(f"{path}: bad camera values for {name} ({exc})") from None
    if matrix.shape == (3, 4):
        matrix = np.vstack([matrix, [0.0, 0.0, 0.0, 1.0]])
    if matrix.shape != (4, 4) or not np.all(np.isfinite(matrix)):
        raise ReconError(f"{path}: the transform_matrix of {name} is not a finite 4x4 (or 3x4) matrix")
    if abs(np.linalg.det(matrix[:3, :3]) - 1.0) > 1e-2:
        raise ReconError(f"{path}: the transform_matrix of {name} does not hold a rotation "
                         f"(determinant {np.linalg.det(matrix[:3, :3]):.4g})")
    if not all(math.isfinite(v) for v in (fx, fy, cx, cy)) or fx <= 0 or fy <= 0 or width <= 0 or height <= 0:
        raise ReconError(f"{path}: invalid intrinsics for {name} (fx={fx}, fy={fy}, size {width}x{height})")
    return Camera(width=width, height=height, fx=fx, fy=fy, cx=cx, cy=cy,
                  world_to_camera=opengl_to_opencv(matrix), model=model, distortion=distortion)


def _focal(values: dict, focal_key: str, angle_key: str, size: int) -> float | None:
    if focal_key in values:
        return float(values[focal_key])
    if angle_key in values:
        return 0.5 * size / math.tan(0.5 * float(values[angle_key]))
    return None


def _distortion(values: dict, dialect: str, path: Path) -> tuple[str, dict[str, float]]:
    """Camera model name and named distortion coefficients of a frame."""
    if dialect == "blender":
        return "PINHOLE", {}
    model = str(values.get("camera_model", "OPENCV_FISHEYE" if values.get("is_fisheye") else "OPENCV"))
    if model in FISHEYE_MODELS:
        return model, {k: float(values.get(k, 0.0)) for k in ("k1", "k2", "k3", "k4")}
    if model not in PERSPECTIVE_MODELS:
        raise ReconError(f"{path}: unsupported camera_model {model} "
                         f"(supported: {', '.join(PERSPECTIVE_MODELS + FISHEYE_MODELS)})")
    coefficients = {k: float(values.get(k, 0.0)) for k in ("k1", "k2", "p1", "p2", "k3")}
    if not any(coefficients.values()):
        return "PINHOLE", {}
    if coefficients["k3"]:
        return "FULL_OPENCV", coefficients
    del coefficients["k3"]
    return "OPENCV", coefficients


def _listed_split(meta: dict, frames: list[Frame], path: Path) -> tuple[list[int], list[int]] | None:
    """nerfstudio's ``train_filenames``/``test_filenames`` as indices into ``frames``, or None."""
    if "train_filenames" not in meta or "test_filenames" not in meta:
        return None
    index = {str(Path(f.name)): i for i, f in enumerate(frames)}
    split = []
    for key in ("train_filenames", "test_filenames"):
        unknown = [n for n in meta[key] if str(Path(n)) not in index]
        if unknown:
            raise ReconError(f"{path}: {key} names {unknown[0]}, which no frame has")
        split.append([index[str(Path(n))] for n in meta[key]])
    return split[0], split[1]


def _ngp_aabb(meta: dict) -> np.ndarray | None:
    """instant-ngp's scene box [2, 3] in the file's coordinates, from ``aabb_scale``, ``scale`` and ``offset``."""
    if "aabb_scale" not in meta:
        return None
    half = 0.5 * float(meta["aabb_scale"])
    scale = float(meta.get("scale", NGP_DEFAULT_SCALE))
    offset = np.asarray(meta.get("offset", NGP_DEFAULT_OFFSET), dtype=np.float64)
    return np.stack([(0.5 - half - offset) / scale, (0.5 + half - offset) / scale])


def _ply_points(meta: dict, root: Path) -> tuple[np.ndarray | None, np.ndarray | None]:
    """nerfstudio's sparse points (``ply_file_path``): xyz [N, 3] float32 and rgb [N, 3] uint8."""
    if "ply_file_path" not in meta:
        return None, None
    from plyfile import PlyData, PlyParseError

    path = root / meta["ply_file_path"]
    try:
        vertex = PlyData.read(str(path))["vertex"]
        xyz = np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=1).astype(np.float32)
        names = vertex.data.dtype.names
        rgb = (np.stack([vertex[c] for c in ("red", "green", "blue")], axis=1).astype(np.uint8)
               if all(c in names for c in ("red", "green", "blue")) else np.full_like(xyz, 128, dtype=np.uint8))
    except (OSError, KeyError, ValueError, PlyParseError) as exc:
        raise ReconError(f"{path}: cannot read the point cloud ({exc})") from None
    if not np.all(np.isfinite(xyz)):
        raise ReconError(f"{path}: non-finite point coordinates")
    return xyz, rgb
