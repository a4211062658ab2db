"""COLMAP sparse models: read and write ``cameras``, ``images`` and ``points3D`` in binary and text.

The formats are COLMAP's own (little-endian binary, or the commented text files). Quaternions are
``qw qx qy qz`` of the world-to-camera rotation. Folders written by COLMAP 3.12+ also hold ``rigs`` and
``frames`` files; they describe camera rigs and are ignored here. ``load_colmap`` turns a model into a
``Scene`` in COLMAP's world coordinates with full-resolution cameras.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recon.engine.errors import ReconError
from recon.engine.io.atomic import atomic_path
from recon.engine.scene.camera import Camera
from recon.engine.scene.scene import Frame, Scene, split_indices

# model name -> (COLMAP model id, parameter names in COLMAP's order).
CAMERA_MODELS: dict[str, tuple[int, tuple[str, ...]]] = {
    "SIMPLE_PINHOLE": (0, ("f", "cx", "cy")),
    "PINHOLE": (1, ("fx", "fy", "cx", "cy")),
    "SIMPLE_RADIAL": (2, ("f", "cx", "cy", "k1")),
    "RADIAL": (3, ("f", "cx", "cy", "k1", "k2")),
    "OPENCV": (4, ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2")),
    "OPENCV_FISHEYE": (5, ("fx", "fy", "cx", "cy", "k1", "k2", "k3", "k4")),
    "FULL_OPENCV": (6, ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2", "k3", "k4", "k5", "k6")),
}
_MODEL_BY_ID = {model_id: name for name, (model_id, _) in CAMERA_MODELS.items()}
# COLMAP models recon does not handle, named in the error message.
_OTHER_MODELS = {7: "FOV", 8: "SIMPLE_RADIAL_FISHEYE", 9: "RADIAL_FISHEYE", 10: "THIN_PRISM_FISHEYE",
                 11: "RAD_TAN_THIN_PRISM_FISHEYE", 12: "SIMPLE_DIVISION", 13: "DIVISION"}
_INVALID_POINT3D = -1  # COLMAP writes uint64 max; read as int64 it is -1
_POINT2D_DTYPE = np.dtype([("x", "<f8"), ("y", "<f8"), ("point3d_id", "<i8")])
_TRACK_DTYPE = np.dtype([("image_id", "<u4"), ("point2d_idx", "<u4")])


@dataclass
class ColmapCamera:
    """One entry of ``cameras``: model name, image size and the model's parameters [P] float64."""

    id: int
    model: str
    width: int
    height: int
    params: np.ndarray


@dataclass
class ColmapImage:
    """One entry of ``images``: world-to-camera pose and the observed 2D points.

    ``qvec`` [4] is (qw, qx, qy, qz), ``tvec`` [3]; ``xys`` [P, 2] float64 and ``point3d_ids`` [P] int64
    (-1 where the keypoint has no 3D point).
    """

    id: int
    qvec: np.ndarray
    tvec: np.ndarray
    camera_id: int
    name: str
    xys: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    point3d_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


@dataclass
class ColmapPoints:
    """All of ``points3D``: ids [N] int64, xyz [N, 3] float64, rgb [N, 3] uint8, errors [N] float64 and
    one track per point, [L, 2] uint32 of (image id, 2D point index)."""

    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    xyz: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    rgb: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), dtype=np.uint8))
    errors: np.ndarray = field(default_factory=lambda: np.zeros(0))
    tracks: list[np.ndarray] = field(default_factory=list)


@dataclass
class ColmapModel:
    """A sparse reconstruction, keyed by COLMAP's ids."""

    cameras: dict[int, ColmapCamera]
    images: dict[int, ColmapImage]
    points: ColmapPoints


# --------------------------------------------------------------------------------------------------
# Rotations and cameras


def qvec_to_rotmat(qvec: np.ndarray) -> np.ndarray:
    """Rotation matrix [3, 3] of a quaternion (qw, qx, qy, qz) [4]; the quaternion is normalised first."""
    w, x, y, z = np.asarray(qvec, dtype=np.float64) / np.linalg.norm(qvec)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def rotmat_to_qvec(R: np.ndarray) -> np.ndarray:
    """Unit quaternion (qw, qx, qy, qz) [4] with qw >= 0 of a rotation matrix [3, 3]."""
    R = np.asarray(R, dtype=np.float64)
    # The eigenvector of the largest eigenvalue of this symmetric matrix is the quaternion (Bar-Itzhack).
    K = np.array([
        [R[0, 0] - R[1, 1] - R[2, 2], 0, 0, 0],
        [R[1, 0] + R[0, 1], R[1, 1] - R[0, 0] - R[2, 2], 0, 0],
        [R[2, 0] + R[0, 2], R[2, 1] + R[1, 2], R[2, 2] - R[0, 0] - R[1, 1], 0],
        [R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1], R[0, 0] + R[1, 1] + R[2, 2]],
    ]) / 3.0
    eigenvalues, eigenvectors = np.linalg.eigh(K)
    x, y, z, w = eigenvectors[:, np.argmax(eigenvalues)]
    q = np.array([w, x, y, z])
    return -q if q[0] < 0 else q


def camera_from_colmap(camera: ColmapCamera, world_to_camera: np.ndarray | None = None) -> Camera:
    """The ``Camera`` of a COLMAP camera entry, with distortion as named coefficients."""
    names = CAMERA_MODELS[camera.model][1]
    values = dict(zip(names, (float(p) for p in camera.params)))
    fx = values.get("fx", values.get("f"))
    fy = values.get("fy", values.get("f"))
    distortion = {k: v for k, v in values.items() if k not in ("f", "fx", "fy", "cx", "cy")}
    return Camera(width=camera.width, height=camera.height, fx=fx, fy=fy, cx=values["cx"], cy=values["cy"],
                  world_to_camera=np.eye(4) if world_to_camera is None else world_to_camera,
                  model=camera.model, distortion=distortion)


def colmap_camera(camera: Camera, camera_id: int) -> ColmapCamera:
    """The COLMAP entry of a ``Camera`` (its ``model`` must be one of ``CAMERA_MODELS``)."""
    if camera.model not in CAMERA_MODELS:
        raise ReconError(f"camera model {camera.model} cannot be written to COLMAP "
                         f"(supported: {', '.join(CAMERA_MODELS)})")
    values = {"f": camera.fx, "fx": camera.fx, "fy": camera.fy, "cx": camera.cx, "cy": camera.cy}
    params = [values[n] if n in values else camera.distortion.get(n, 0.0) for n in CAMERA_MODELS[camera.model][1]]
    if "f" in CAMERA_MODELS[camera.model][1] and camera.fx != camera.fy:
        raise ReconError(f"camera model {camera.model} has one focal length but fx={camera.fx} != fy={camera.fy}")
    return ColmapCamera(id=camera_id, model=camera.model, width=camera.width, height=camera.height,
                        params=np.asarray(params, dtype=np.float64))


def image_world_to_camera(image: ColmapImage) -> np.ndarray:
    """World-to-camera [4, 4] of an image entry."""
    pose = np.eye(4)
    pose[:3, :3] = qvec_to_rotmat(image.qvec)
    pose[:3, 3] = image.tvec
    return pose


# --------------------------------------------------------------------------------------------------
# Finding and reading models


def has_model(folder: Path) -> bool:
    """True when ``folder`` holds ``cameras`` and ``images`` files (binary or text)."""
    return all(any((folder / f"{name}{ext}").is_file() for ext in (".bin", ".txt")) for name in ("cameras", "images"))


def find_model_dir(root: Path) -> Path | None:
    """The model folder of a scene: ``root/sparse/0``, ``root/sparse`` or ``root`` itself; None if none."""
    for folder in (root / "sparse" / "0", root / "sparse", root):
        if has_model(folder):
            return folder
    return None


def model_files(folder: Path) -> dict[str, Path]:
    """Paths of ``cameras``, ``images`` and ``points3D`` in ``folder``: binary when ``cameras.bin`` exists."""
    ext = ".bin" if (folder / "cameras.bin").is_file() else ".txt"
    return {name: folder / f"{name}{ext}" for name in ("cameras", "images", "points3D")}


def read_model(folder: str | Path) -> ColmapModel:
    """Read a COLMAP model folder (binary preferred when both exist); ``points3D`` may be absent."""
    files = model_files(Path(folder))
    binary = files["cameras"].suffix == ".bin"
    cameras = _parse(files["cameras"], _read_cameras_bin if binary else _read_cameras_txt)
    images = _parse(files["images"], _read_images_bin if binary else _read_images_txt)
    points = (_parse(files["points3D"], _read_points_bin if binary else _read_points_txt)
              if files["points3D"].is_file() else ColmapPoints())
    for image in images.values():
        if image.camera_id not in cameras:
            raise ReconError(f"{files['images']}: image {image.name} uses camera {image.camera_id}, "
                             f"which {files['cameras'].name} does not define")
    return ColmapModel(cameras=cameras, images=images, points=points)


def _parse(path: Path, reader):
    """Run a file reader, turning I/O and format failures into a one-line ``ReconError``."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ReconError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not data.strip():
        raise ReconError(f"{path}: the file is empty")
    try:
        return reader(data, path)
    except (struct.error, _Truncated):
        raise ReconError(f"{path}: truncated or corrupt COLMAP binary file") from None
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        raise ReconError(f"{path}: cannot parse ({exc})") from None


class _Truncated(Exception):
    """A binary file ended before the data it announced."""


class _Reader:
    """Sequential little-endian reads from a byte string."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def unpack(self, fmt: str) -> tuple:
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values

    def array(self, dtype: np.dtype, count: int) -> np.ndarray:
        size = dtype.itemsize * count
        if self.pos + size > len(self.data):
            raise _Truncated
        out = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.pos).copy()
        self.pos += size
        return out

    def cstring(self) -> str:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise _Truncated
        text = self.data[self.pos:end].decode("utf-8")
        self.pos = end + 1
        return text

    def finish(self) -> None:
        if self.pos != len(self.data):
            raise ValueError(f"{len(self.data) - self.pos} bytes left after the last entry")


def _model_params(model_id_or_name: int | str, path: Path) -> tuple[str, int]:
    """(model name, parameter count) of a model id or name, or a ReconError naming the model."""
    name = _MODEL_BY_ID.get(model_id_or_name) if isinstance(model_id_or_name, int) else model_id_or_name
    if name not in CAMERA_MODELS:
        shown = _OTHER_MODELS.get(model_id_or_name, f"id {model_id_or_name}") \
            if isinstance(model_id_or_name, int) else model_id_or_name
        raise ReconError(f"{path}: unsupported camera model {shown} "
                         f"(supported: {', '.join(CAMERA_MODELS)})")
    return name, len(CAMERA_MODELS[name][1])


def _checked_camera(camera: ColmapCamera, path: Path) -> ColmapCamera:
    if camera.width <= 0 or camera.height <= 0 or not np.all(np.isfinite(camera.params)) or camera.params[0] <= 0:
        raise ReconError(f"{path}: camera {camera.id} has an invalid size or parameters "
                         f"({camera.width}x{camera.height}, {camera.params.tolist()})")
    return camera


def _read_cameras_bin(data: bytes, path: Path) -> dict[int, ColmapCamera]:
    reader = _Reader(data)
    cameras = {}
    for _ in range(reader.unpack("Q")[0]):
        camera_id, model_id, width, height = reader.unpack("IiQQ")
        name, count = _model_params(model_id, path)
        params = np.array(reader.unpack(f"{count}d"))
        cameras[camera_id] = _checked_camera(ColmapCamera(camera_id, name, width, height, params), path)
    reader.finish()
    return cameras


def _read_images_bin(data: bytes, path: Path) -> dict[int, ColmapImage]:
    reader = _Reader(data)
    images = {}
    for _ in range(reader.unpack("Q")[0]):
        image_id, qw, qx, qy, qz, tx, ty, tz, camera_id = reader.unpack("I7dI")
        name = reader.cstring()
        points = reader.array(_POINT2D_DTYPE, reader.unpack("Q")[0])
        images[image_id] = ColmapImage(image_id, np.array([qw, qx, qy, qz]), np.array([tx, ty, tz]), camera_id, name,
                                       np.stack([points["x"], points["y"]], axis=1), points["point3d_id"].copy())
    reader.finish()
    return images


def _read_points_bin(data: bytes, path: Path) -> ColmapPoints:
    reader = _Reader(data)
    count = reader.unpack("Q")[0]
    ids, xyz, rgb, errors, tracks = [], [], [], [], []
    for _ in range(count):
        point_id, x, y, z, r, g, b, error, length = reader.unpack("Q3d3BdQ")
        ids.append(point_id)
        xyz.append((x, y, z))
        rgb.append((r, g, b))
        errors.append(error)
        track = reader.array(_TRACK_DTYPE, length)
        tracks.append(np.stack([track["image_id"], track["point2d_idx"]], axis=1))
    reader.finish()
    return _points(ids, xyz, rgb, errors, tracks)


def _points(ids: list, xyz: list, rgb: list, errors: list, tracks: list) -> ColmapPoints:
    return ColmapPoints(ids=np.asarray(ids, dtype=np.int64), xyz=np.asarray(xyz, dtype=np.float64).reshape(-1, 3),
                        rgb=np.asarray(rgb, dtype=np.uint8).reshape(-1, 3), errors=np.asarray(errors, dtype=np.float64),
                        tracks=tracks)


def _text_lines(data: bytes) -> list[str]:
    """Lines of a COLMAP text file without its ``#`` comments (empty lines kept: images.txt needs them)."""
    return [line.strip() for line in data.decode("utf-8").splitlines() if not line.lstrip().startswith("#")]


def _read_cameras_txt(data: bytes, path: Path) -> dict[int, ColmapCamera]:
    cameras = {}
    for number, line in enumerate(_text_lines(data), 1):
        if not line:
            continue
        camera_id, model, width, height, *params = line.split()
        name, count = _model_params(model, path)
        if len(params) != count:
            raise ValueError(f"camera {camera_id}: {name} takes {count} parameters, found {len(params)}")
        camera = ColmapCamera(int(camera_id), name, int(width), int(height), np.array(params, dtype=np.float64))
        cameras[camera.id] = _checked_camera(camera, path)
    return cameras


def _read_images_txt(data: bytes, path: Path) -> dict[int, ColmapImage]:
    lines = _text_lines(data)
    images, i = {}, 0
    while i < len(lines):
        if not lines[i]:
            i += 1
            continue
        fields = lines[i].split(maxsplit=9)
        if len(fields) != 10:
            raise ValueError(f"image line {lines[i][:60]!r} has {len(fields)} fields, expected 10")
        points = np.array(lines[i + 1].split() if i + 1 < len(lines) else [], dtype=np.float64).reshape(-1, 3)
        image_id = int(fields[0])
        images[image_id] = ColmapImage(image_id, np.array(fields[1:5], dtype=np.float64),
                                       np.array(fields[5:8], dtype=np.float64), int(fields[8]), fields[9],
                                       points[:, :2].copy(), points[:, 2].astype(np.int64))
        i += 2
    return images


def _read_points_txt(data: bytes, path: Path) -> ColmapPoints:
    ids, xyz, rgb, errors, tracks = [], [], [], [], []
    for line in _text_lines(data):
        if not line:
            continue
        fields = line.split()
        ids.append(int(fields[0]))
        xyz.append([float(v) for v in fields[1:4]])
        rgb.append([int(v) for v in fields[4:7]])
        errors.append(float(fields[7]))
        tracks.append(np.array(fields[8:], dtype=np.uint32).reshape(-1, 2))
    return _points(ids, xyz, rgb, errors, tracks)


# --------------------------------------------------------------------------------------------------
# Writing models


def write_model(model: ColmapModel, folder: str | Path, *, binary: bool = True) -> None:
    """Write ``cameras``, ``images`` and ``points3D`` (``.bin`` or ``.txt``) into ``folder``, atomically."""
    folder = Path(folder)
    writers = ((_write_cameras_bin, _write_images_bin, _write_points_bin) if binary
               else (_write_cameras_txt, _write_images_txt, _write_points_txt))
    ext = ".bin" if binary else ".txt"
    for name, writer, part in zip(("cameras", "images", "points3D"), writers,
                                  (model.cameras, model.images, model.points)):
        with atomic_path(folder / f"{name}{ext}") as tmp:
            tmp.write_bytes(writer(part))


def _write_cameras_bin(cameras: dict[int, ColmapCamera]) -> bytes:
    out = [struct.pack("<Q", len(cameras))]
    for camera in cameras.values():
        out.append(struct.pack("<IiQQ", camera.id, CAMERA_MODELS[camera.model][0], camera.width, camera.height))
        out.append(np.asarray(camera.params, dtype="<f8").tobytes())
    return b"".join(out)


def _write_images_bin(images: dict[int, ColmapImage]) -> bytes:
    out = [struct.pack("<Q", len(images))]
    for image in images.values():
        out.append(struct.pack("<I7dI", image.id, *image.qvec, *image.tvec, image.camera_id))
        out.append(image.name.encode("utf-8") + b"\0")
        points = np.empty(len(image.xys), dtype=_POINT2D_DTYPE)
        points["x"], points["y"], points["point3d_id"] = image.xys[:, 0], image.xys[:, 1], image.point3d_ids
        out.append(struct.pack("<Q", len(points)) + points.tobytes())
    return b"".join(out)


def _write_points_bin(points: ColmapPoints) -> bytes:
    out = [struct.pack("<Q", len(points.ids))]
    for i, track in enumerate(points.tracks):
        out.append(struct.pack("<Q3d3BdQ", points.ids[i], *points.xyz[i], *points.rgb[i], points.errors[i], len(track)))
        out.append(np.asarray(track, dtype="<u4").tobytes())
    return b"".join(out)


def _write_cameras_txt(cameras: dict[int, ColmapCamera]) -> bytes:
    lines = ["# Camera list with one line of data per camera:",
             "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]",
             f"# Number of cameras: {len(cameras)}"]
    lines += [" ".join([str(c.id), c.model, str(c.width), str(c.height), *map(repr, map(float, c.params))])
              for c in cameras.values()]
    return ("\n".join(lines) + "\n").encode()


def _write_images_txt(images: dict[int, ColmapImage]) -> bytes:
    lines = ["# Image list with two lines of data per image:",
             "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
             "#   POINTS2D[] as (X, Y, POINT3D_ID)",
             f"# Number of images: {len(images)}"]
    for image in images.values():
        pose = [repr(float(v)) for v in (*image.qvec, *image.tvec)]
        lines.append(" ".join([str(image.id), *pose, str(image.camera_id), image.name]))
        lines.append(" ".join(f"{float(x)!r} {float(y)!r} {int(p)}" for (x, y), p in zip(image.xys, image.point3d_ids)))
    return ("\n".join(lines) + "\n").encode()


def _write_points_txt(points: ColmapPoints) -> bytes:
    lines = ["# 3D point list with one line of data per point:",
             "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)",
             f"# Number of points: {len(points.ids)}"]
    for i, track in enumerate(points.tracks):
        values = [str(int(points.ids[i])), *(repr(float(v)) for v in points.xyz[i]),
                  *(str(int(v)) for v in points.rgb[i]), repr(float(points.errors[i]))]
        lines.append(" ".join(values + [str(int(v)) for v in np.asarray(track).reshape(-1)]))
    return ("\n".join(lines) + "\n").encode()


# --------------------------------------------------------------------------------------------------
# Scenes


def colmap_images_dir(model_dir: Path, root: Path) -> Path:
    """The image folder of a model: ``images/`` in the scene root, or beside an ancestor of the model."""
    for folder in (root, *list(model_dir.parents)[:3]):
        if (folder / "images").is_dir():
            return folder / "images"
    return root / "images"


def load_colmap(root: Path, model_dir: Path, *, test_every: int,
                background: tuple[float, float, float]) -> Scene:
    """A ``Scene`` of a COLMAP model, frames sorted by image name, in COLMAP's world coordinates."""
    model = read_model(model_dir)
    images_file = model_files(model_dir)["images"]
    if not model.images:
        raise ReconError(f"{images_file}: the model has no registered images")
    images_dir = colmap_images_dir(model_dir, root)
    frames = []
    for image in sorted(model.images.values(), key=lambda im: im.name):
        if not np.all(np.isfinite(image.qvec)) or not np.all(np.isfinite(image.tvec)) \
                or np.linalg.norm(image.qvec) < 1e-12:
            raise ReconError(f"{images_file}: image {image.name} has a non-finite or zero pose")
        camera = camera_from_colmap(model.cameras[image.camera_id], image_world_to_camera(image))
        frames.append(Frame(name=image.name, image_path=images_dir / image.name, camera=camera))
    points = model.points.xyz
    if not np.all(np.isfinite(points)):
        raise ReconError(f"{model_files(model_dir)['points3D']}: non-finite point coordinates")
    train, test = split_indices(len(frames), test_every)
    return Scene(root=root, source_format="colmap", frames=frames, train_indices=train, test_indices=test,
                 points=points.astype(np.float32) if len(points) else None,
                 point_colors=model.points.rgb if len(points) else None, background=background)
