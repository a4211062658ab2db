"""Triangle meshes and point clouds on disk: PLY (plyfile) and OBJ meshes, PLY and XYZ point clouds.

Arrays are numpy: vertices/points float32 [N, 3], faces int64 [F, 3], normals float32 [N, 3] or None.
Polygons with more than three corners are fan-triangulated on reading. Writes are atomic.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recon.engine.errors import ReconError
from recon.engine.io.atomic import atomic_path

MESH_SUFFIXES = (".ply", ".obj")
SHAPE_SUFFIXES = (".ply", ".obj", ".xyz")


@dataclass(frozen=True)
class Shape:
    """What a shape file holds: points (mesh vertices), faces for a mesh, normals when given."""

    points: np.ndarray  # [N, 3] float32
    faces: np.ndarray | None = None  # [F, 3] int64
    normals: np.ndarray | None = None  # [N, 3] float32

    @property
    def is_mesh(self) -> bool:
        return self.faces is not None and len(self.faces) > 0


def _fan(polygons: list[list[int]]) -> np.ndarray:
    tris = [(p[0], p[i], p[i + 1]) for p in polygons for i in range(1, len(p) - 1)]
    return np.asarray(tris, dtype=np.int64).reshape(-1, 3)


def _read_obj(path: Path) -> Shape:
    vertices, normals, polygons = [], [], []
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        raise ReconError(f"{path}: cannot read ({exc.strerror})") from None
    for number, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        try:
            if parts[0] == "v":
                vertices.append([float(x) for x in parts[1:4]])
            elif parts[0] == "vn":
                normals.append([float(x) for x in parts[1:4]])
            elif parts[0] == "f":
                idx = [int(tok.split("/")[0]) for tok in parts[1:]]
                polygons.append([i - 1 if i > 0 else len(vertices) + i for i in idx])
        except ValueError:
            raise ReconError(f"{path}: line {number}: malformed {parts[0]!r} record") from None
    points = np.asarray(vertices, dtype=np.float32).reshape(-1, 3)
    faces = _fan(polygons)
    if len(faces) and (faces.min() < 0 or faces.max() >= len(points)):
        raise ReconError(f"{path}: a face refers to a vertex that does not exist")
    vertex_normals = np.asarray(normals, dtype=np.float32) if len(normals) == len(points) and normals else None
    return Shape(points, faces if len(faces) else None, vertex_normals)


def _read_ply(path: Path) -> Shape:
    from plyfile import PlyData, PlyParseError

    try:
        ply = PlyData.read(str(path))
        vertex = ply["vertex"]
    except (OSError, ValueError, KeyError, IndexError, PlyParseError) as exc:
        raise ReconError(f"{path}: not a readable PLY with vertices ({exc})") from None
    names = vertex.data.dtype.names
    points = np.stack([vertex[c] for c in "xyz"], axis=1).astype(np.float32)
    normals = (np.stack([vertex[c] for c in ("nx", "ny", "nz")], axis=1).astype(np.float32)
               if all(c in names for c in ("nx", "ny", "nz")) else None)
    faces = None
    if "face" in ply:
        face = ply["face"]
        key = "vertex_indices" if "vertex_indices" in face.data.dtype.names else "vertex_index"
        faces = _fan([list(f) for f in face[key]])
        if len(faces) and (faces.min() < 0 or faces.max() >= len(points)):
            raise ReconError(f"{path}: a face refers to a vertex that does not exist")
    return Shape(points, faces if faces is not None and len(faces) else None, normals)


def _read_xyz(path: Path) -> Shape:
    try:
        data = np.loadtxt(path, dtype=np.float64, ndmin=2, comments="#")
    except (OSError, ValueError) as exc:
        raise ReconError(f"{path}: not a readable XYZ point list ({exc})") from None
    if data.shape[1] not in (3, 6):
        raise ReconError(f"{path}: expected 3 (x y z) or 6 (x y z nx ny nz) columns, found {data.shape[1]}")
    normals = data[:, 3:6].astype(np.float32) if data.shape[1] == 6 else None
    return Shape(data[:, :3].astype(np.float32), None, normals)


def read_shape(path: str | Path) -> Shape:
    """Read a mesh (.ply/.obj) or point cloud (.ply/.xyz, optional normals); a ReconError when unusable."""
    path = Path(path)
    if path.suffix.lower() not in SHAPE_SUFFIXES:
        raise ReconError(f"{path}: unsupported shape format (use {', '.join(SHAPE_SUFFIXES)})")
    if not path.is_file():
        raise ReconError(f"{path}: no such file")
    reader = {".ply": _read_ply, ".obj": _read_obj, ".xyz": _read_xyz}[path.suffix.lower()]
    shape = reader(path)
    if len(shape.points) == 0:
        raise ReconError(f"{path}: the file holds no points")
    if not np.isfinite(shape.points).all():
        raise ReconError(f"{path}: the file holds non-finite coordinates")
    return shape


def read_mesh(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(vertices [V, 3] float32, faces [F, 3] int64) of a .ply/.obj triangle mesh."""
    shape = read_shape(path)
    if not shape.is_mesh:
        raise ReconError(f"{path}: the file holds no faces (a point cloud, not a mesh)")
    return shape.points, shape.faces


def write_mesh(path: str | Path, vertices: np.ndarray, faces: np.ndarray, normals: np.ndarray | None = None) -> None:
    """Write a triangle mesh as binary PLY or OBJ, chosen by the suffix; atomically.

    Args:
        vertices: [V, 3]; faces: [F, 3] vertex indices; normals: optional per-vertex normals [V, 3].
    """
    from plyfile import PlyData, PlyElement

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in MESH_SUFFIXES:
        raise ReconError(f"{path}: unsupported mesh format (use {' or '.join(MESH_SUFFIXES)})")
    vertices = np.asarray(vertices, dtype=np.float32).reshape(-1, 3)
    faces = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    columns = {"x": vertices[:, 0], "y": vertices[:, 1], "z": vertices[:, 2]}
    if normals is not None:
        normals = np.asarray(normals, dtype=np.float32).reshape(-1, 3)
        columns.update(nx=normals[:, 0], ny=normals[:, 1], nz=normals[:, 2])
    with atomic_path(path) as tmp:
        if suffix == ".ply":
            vert = np.empty(len(vertices), dtype=[(name, "f4") for name in columns])
            for name, column in columns.items():
                vert[name] = column
            face = np.empty(len(faces), dtype=[("vertex_indices", "i4", (3,))])
            face["vertex_indices"] = faces
            PlyData([PlyElement.describe(vert, "vertex"), PlyElement.describe(face, "face")]).write(str(tmp))
        else:
            with open(tmp, "w", encoding="ascii") as fh:
                np.savetxt(fh, vertices, fmt="v %.7g %.7g %.7g")
                if normals is not None:
                    np.savetxt(fh, normals, fmt="vn %.7g %.7g %.7g")
                    np.savetxt(fh, np.repeat(faces + 1, 2, axis=1), fmt="f %d//%d %d//%d %d//%d")
                else:
                    np.savetxt(fh, faces + 1, fmt="f %d %d %d")
