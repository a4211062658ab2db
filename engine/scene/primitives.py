"""Analytic primitives: exact signed distance functions, watertight meshes and geometry.json I/O.

Four primitive types, each posed in the world by a centre and a rotation (local to world):

- ``sphere`` {radius}, ``capsule`` {half_length, radius} (axis = local y), ``rounded_box``
  {half_extents [3], radius} (the outer size is ``half_extents``): all three are an "inflated box",
  a box with half extents ``e`` grown by ``r``, whose exact SDF is ``|max(q, 0)| + min(max_i q_i, 0) - r``
  with ``q = |p| - e``.
- ``torus`` {major_radius, minor_radius} around the local y axis.

The SDFs are exact (the value is the Euclidean distance to the surface), so ``surface_distance`` tells
how far a point lies from the true surface and on which object's surface.
"""
from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recon.engine.errors import ReconError

GEOMETRY_FORMAT = "recon-demo-geometry"
PRIMITIVE_PARAMETERS = {
    "sphere": ("radius",),
    "capsule": ("half_length", "radius"),
    "rounded_box": ("half_extents", "radius"),
    "torus": ("major_radius", "minor_radius"),
}


@dataclass(frozen=True)
class SceneObject:
    """One posed primitive: ``world = rotation @ local + center``; ``texture`` is passed through as is."""

    name: str
    kind: str
    params: dict[str, Any]
    center: np.ndarray  # [3]
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))  # [3, 3] local to world
    texture: dict[str, Any] = field(default_factory=dict)

    def inflated_box(self) -> tuple[np.ndarray, float]:
        """(inner half extents [3], radius) of a sphere, capsule or rounded box."""
        p = self.params
        if self.kind == "sphere":
            return np.zeros(3), float(p["radius"])
        if self.kind == "capsule":
            return np.array([0.0, float(p["half_length"]), 0.0]), float(p["radius"])
        if self.kind == "rounded_box":
            radius = float(p["radius"])
            return np.asarray(p["half_extents"], dtype=np.float64) - radius, radius
        raise ValueError(f"{self.kind} is not an inflated box")

    @functools.cached_property
    def _pose(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.as_tensor(self.rotation, dtype=torch.float64), torch.as_tensor(self.center, dtype=torch.float64)

    def to_local(self, points: torch.Tensor) -> torch.Tensor:
        """World points [N, 3] into object coordinates [N, 3]."""
        rotation, center = (x.to(dtype=points.dtype, device=points.device) for x in self._pose)
        return (points - center) @ rotation

    def sdf(self, points: torch.Tensor) -> torch.Tensor:
        """Exact signed distance [N] of world points [N, 3] (negative inside)."""
        local = self.to_local(points)
        if self.kind == "torus":
            ring = torch.linalg.norm(local[:, [0, 2]], dim=1) - float(self.params["major_radius"])
            return torch.sqrt(ring * ring + local[:, 1] ** 2) - float(self.params["minor_radius"])
        inner, radius = self.inflated_box()
        q = local.abs() - torch.as_tensor(inner, dtype=local.dtype, device=local.device)
        outside = torch.linalg.norm(q.clamp(min=0.0), dim=1)
        inside = q.max(dim=1).values.clamp(max=0.0)
        return outside + inside - radius

    def support(self, direction: np.ndarray) -> float:
        """max over surface points x of ``direction . x`` for a unit world ``direction`` [3]."""
        local = self.rotation.T @ np.asarray(direction, dtype=np.float64)
        center_term = float(np.dot(direction, self.center))
        if self.kind == "torus":
            major, minor = float(self.params["major_radius"]), float(self.params["minor_radius"])
            return center_term + major * math.hypot(local[0], local[2]) + minor
        inner, radius = self.inflated_box()
        return center_term + float(np.abs(local) @ inner) + radius

    @property
    def bounds(self) -> np.ndarray:
        """Exact axis-aligned box [2, 3] (min, max) in world coordinates."""
        axes = np.eye(3)
        return np.stack([[-self.support(-a) for a in axes], [self.support(a) for a in axes]])

    @property
    def bounding_radius(self) -> float:
        """Radius of a sphere around ``center`` that holds the object."""
        if self.kind == "torus":
            return float(self.params["major_radius"]) + float(self.params["minor_radius"])
        inner, radius = self.inflated_box()
        return float(np.linalg.norm(inner)) + radius

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.kind, "parameters": self.params,
                "center": [float(c) for c in self.center], "rotation": np.asarray(self.rotation).tolist(),
                "texture": self.texture, "bounds": self.bounds.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SceneObject":
        kind = d["type"]
        if kind not in PRIMITIVE_PARAMETERS:
            raise ValueError(f"unknown primitive type {kind!r}")
        missing = [k for k in PRIMITIVE_PARAMETERS[kind] if k not in d["parameters"]]
        if missing:
            raise ValueError(f"{d['name']}: missing parameters {missing}")
        rotation = np.asarray(d["rotation"], dtype=np.float64)
        center = np.asarray(d["center"], dtype=np.float64)
        if rotation.shape != (3, 3) or center.shape != (3,):
            raise ValueError(f"{d['name']}: center must have 3 numbers and rotation 3x3")
        return cls(name=str(d["name"]), kind=kind, params=dict(d["parameters"]), center=center,
                   rotation=rotation, texture=dict(d.get("texture", {})))


@dataclass(frozen=True)
class Geometry:
    """The objects of a scene (their order defines object indices) and its fixed light."""

    objects: tuple[SceneObject, ...]
    light: dict[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [o.name for o in self.objects]

    @property
    def bounds(self) -> np.ndarray:
        """Axis-aligned box [2, 3] around every object."""
        boxes = np.stack([o.bounds for o in self.objects])
        return np.stack([boxes[:, 0].min(0), boxes[:, 1].max(0)])

    def to_dict(self, **extra: Any) -> dict[str, Any]:
        return {"format": GEOMETRY_FORMAT, "version": 1, **extra, "light": self.light,
                "bounds": self.bounds.tolist(), "objects": [o.to_dict() for o in self.objects]}


def load_geometry(path: str | os.PathLike) -> Geometry:
    """Read a geometry.json written by the demo scene; a ReconError names the file and the problem."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ReconError(f"{path}: cannot read geometry ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != GEOMETRY_FORMAT:
        raise ReconError(f"{path}: not a recon geometry file (format must be {GEOMETRY_FORMAT!r})")
    try:
        objects = tuple(SceneObject.from_dict(o) for o in data["objects"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ReconError(f"{path}: bad object description ({exc})") from None
    if not objects:
        raise ReconError(f"{path}: the geometry has no objects")
    return Geometry(objects=objects, light=dict(data.get("light", {})))


def scene_sdf(points: torch.Tensor, objects: "tuple[SceneObject, ...] | list[SceneObject]"
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Signed distance [N] of the union of ``objects`` at points [N, 3], and the nearest object's index [N]."""
    distances = torch.stack([o.sdf(points) for o in objects], dim=1)
    value, index = distances.min(dim=1)
    return value, index


def surface_distance(points: torch.Tensor, geometry: Geometry) -> tuple[torch.Tensor, torch.Tensor]:
    """Unsigned distance [N] from points [N, 3] to the nearest object surface, and that object's index [N]."""
    distances = torch.stack([o.sdf(points).abs() for o in geometry.objects], dim=1)
    value, index = distances.min(dim=1)
    return value, index


# ---------------------------------------------------------------------------------------------- meshes


def object_mesh(obj: SceneObject, edge_length: float = 0.03) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Watertight triangle mesh of ``obj`` with outward winding, vertices exactly on the surface.

    Returns world vertices [V, 3] float64, faces [F, 3] int64 (counter-clockwise seen from outside)
    and unit outward vertex normals [V, 3].
    """
    if obj.kind == "torus":
        local, normals, faces = _torus_mesh(float(obj.params["major_radius"]), float(obj.params["minor_radius"]),
                                            edge_length)
    else:
        local, normals, faces = _inflated_box_mesh(*obj.inflated_box(), edge_length)
    return local @ obj.rotation.T + obj.center, faces, normals @ obj.rotation.T


def _grid_faces(rows: int, cols: int, index) -> np.ndarray:
    """Two triangles per cell of a rows x cols grid; ``index(i, j)`` maps grid corners to vertex ids."""
    i, j = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    a, b, c, d = index(i, j), index(i + 1, j), index(i + 1, j + 1), index(i, j + 1)
    return np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])


def _torus_mesh(major: float, minor: float, edge_length: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Torus around the y axis: angle theta around the tube (rows), phi around the axis (columns)."""
    n_theta = max(8, math.ceil(2 * math.pi * minor / edge_length))
    n_phi = max(12, math.ceil(2 * math.pi * (major + minor) / edge_length))
    theta, phi = np.meshgrid(np.arange(n_theta) * 2 * math.pi / n_theta, np.arange(n_phi) * 2 * math.pi / n_phi,
                             indexing="ij")
    normals = np.stack([np.cos(theta) * np.cos(phi), np.sin(theta), np.cos(theta) * np.sin(phi)], -1).reshape(-1, 3)
    ring = np.stack([np.cos(phi), np.zeros_like(phi), np.sin(phi)], -1).reshape(-1, 3)
    vertices = major * ring + minor * normals
    faces = _grid_faces(n_theta, n_phi, lambda i, j: (i % n_theta) * n_phi + j % n_phi)
    return vertices, normals, faces


def _axis_samples(inner: float, radius: float, edge_length: float) -> np.ndarray:
    """Coordinates along one cube axis: uniform on the flat part, equal angles on the rounded band."""
    flat = np.linspace(-inner, inner, max(1, math.ceil(2 * inner / edge_length)) + 1) if inner > 0 else np.zeros(1)
    steps = max(2, math.ceil(0.25 * math.pi * radius / edge_length))
    band = inner + radius * np.tan(np.arange(1, steps + 1) * 0.25 * math.pi / steps)
    band[-1] = inner + radius  # exactly the cube face, so edges of neighbouring faces weld
    return np.concatenate([-band[::-1], flat, band])


def _inflated_box_mesh(inner: np.ndarray, radius: float, edge_length: float
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grid the surface of the box ``inner + radius`` and push each point onto the inflated surface.

    A cube-surface point p maps to q + radius * (p - q) / |p - q| with q = clamp(p, -inner, inner),
    its nearest point on the inner box, which lies on the surface with outward normal (p - q) / |p - q|.
    """
    samples = [_axis_samples(float(e), radius, edge_length) for e in inner]
    points, faces, offset = [], [], 0
    for axis in range(3):
        u_axis, v_axis = (axis + 1) % 3, (axis + 2) % 3
        u, v = np.meshgrid(samples[u_axis], samples[v_axis], indexing="ij")
        for sign in (1.0, -1.0):
            grid = np.empty(u.shape + (3,))
            grid[..., axis], grid[..., u_axis], grid[..., v_axis] = sign * samples[axis][-1], u, v
            cols = u.shape[1]
            cells = _grid_faces(u.shape[0] - 1, cols - 1, lambda i, j: offset + i * cols + j)
            faces.append(cells if sign > 0 else cells[:, ::-1])
            points.append(grid.reshape(-1, 3))
            offset += grid.shape[0] * grid.shape[1]
    unique, inverse = np.unique(np.concatenate(points), axis=0, return_inverse=True)
    faces = inverse.reshape(-1)[np.concatenate(faces)]
    nearest = np.clip(unique, -inner, inner)
    normals = unique - nearest
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    return nearest + radius * normals, normals, faces
