"""Meshes from fitted runs (``recon export RUN --mesh out.ply``), in the data's original coordinates.

* ``sdf`` / ``occupancy``: the field's ``level`` iso-surface (``FieldModel.field``, ``level``, ``inside``);
* ``nerf``: the density iso-surface at ``NerfModel.mesh_level`` inside ``mesh_bounds``;
* ``gaussians``: depth renders of the training cameras fused in a ``resolution``^3 TSDF volume over
  [-1, 1]^3 (open3d, the ``mesh`` extra); pixels with alpha < 0.5 carry no depth.

Fields are evaluated slice by slice over a ``resolution``^3 grid and meshed with the marching-cubes
kernel; vertices are mapped back through the checkpoint's ``Normalization``. Connected components whose
area is below ``min_component_fraction`` (default ``MIN_COMPONENT_FRACTION`` = 1%) of the largest's are
dropped (floating fragments; 0 keeps every component), and the export reports components before and
after, watertightness and self-intersections (``engine/mesh_topology.py``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from recon.engine.errors import ReconError
from recon.engine.io.mesh import MESH_SUFFIXES, write_mesh
from recon.engine.mesh_topology import MeshReport, face_components, keep_components, mesh_report
from recon.engine.scene.scene import Normalization
from recon.kernels import marching_cubes

MIN_COMPONENT_FRACTION = 0.01  # components below 1% of the largest's area are fragments
FieldFn = Callable[[torch.Tensor], torch.Tensor]  # normalised points [N, 3] -> values [N]


def sample_grid(fn: FieldFn, bounds: torch.Tensor, resolution: int, device: torch.device | str) -> torch.Tensor:
    """Values [R, R, R] float32 of ``fn`` on the grid spanning ``bounds`` [2, 3], one axis-0 slice at a time."""
    bounds = torch.as_tensor(bounds, dtype=torch.float32)
    axes = [torch.linspace(float(bounds[0, a]), float(bounds[1, a]), resolution, device=device) for a in range(3)]
    yz = torch.stack(torch.meshgrid(axes[1], axes[2], indexing="ij"), dim=-1).reshape(-1, 2)
    grid = torch.empty((resolution,) * 3, dtype=torch.float32, device=device)
    for i, x in enumerate(axes[0]):
        points = torch.cat([x.expand(len(yz), 1), yz], dim=1)
        grid[i] = fn(points).reshape(resolution, resolution).to(device, torch.float32)
    return grid


def extract_field_mesh(fn: FieldFn, bounds: torch.Tensor, resolution: int, level: float, inside: str,
                       device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(vertices [V, 3], faces [F, 3]) of ``fn``'s ``level`` iso-surface, in ``fn``'s coordinates."""
    if resolution < 2:
        raise ReconError(f"--resolution must be at least 2, got {resolution}")
    bounds = torch.as_tensor(bounds, dtype=torch.float32)
    grid = sample_grid(fn, bounds, resolution, device)
    grid = torch.nan_to_num(grid, nan=0.0, posinf=torch.finfo(torch.float32).max)
    spacing = ((bounds[1] - bounds[0]) / (resolution - 1)).tolist()
    return marching_cubes(grid, level, spacing=spacing, origin=bounds[0].tolist(), inside=inside)


def tsdf_mesh(model, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Fuse depth renders of ``model``'s training cameras in a TSDF (open3d); normalised coordinates."""
    try:
        import open3d as o3d
    except ImportError:
        raise ReconError("meshing a gaussians run needs open3d: pip install 'recon[mesh]'") from None
    cameras = model.cameras.get("train") or model.cameras.get("test") or []
    if not cameras:
        raise ReconError("the gaussians run stores no cameras to fuse depth from")
    # Normalised scenes keep their cameras in the unit sphere: fuse over the [-1, 1]^3 cube (open3d's
    # scalable volume returned empty meshes in tests with open3d 0.20, the uniform one does not).
    volume = o3d.pipelines.integration.UniformTSDFVolume(
        length=2.0, resolution=resolution, sdf_trunc=8.0 / resolution,
        color_type=o3d.pipelines.integration.TSDFVolumeColorType.RGB8, origin=np.full((3, 1), -1.0))
    for camera in cameras:
        out = model.render(camera)
        depth = torch.where(out["alpha"] > 0.5, out["depth"], torch.zeros_like(out["depth"]))[..., 0]
        color = (out["rgb"].clamp(0, 1) * 255).round().to(torch.uint8)
        rgbd = o3d.geometry.RGBDImage.create_from_color_and_depth(
            o3d.geometry.Image(np.ascontiguousarray(color.cpu().numpy())),
            o3d.geometry.Image(np.ascontiguousarray(depth.cpu().numpy().astype(np.float32))),
            depth_scale=1.0, depth_trunc=1e6, convert_rgb_to_intensity=False)
        intrinsic = o3d.camera.PinholeCameraIntrinsic(camera.width, camera.height, camera.fx, camera.fy,
                                                      camera.cx, camera.cy)
        volume.integrate(rgbd, intrinsic, np.asarray(camera.world_to_camera, dtype=np.float64))
    mesh = volume.extract_triangle_mesh()
    return np.asarray(mesh.vertices, dtype=np.float32), np.asarray(mesh.triangles, dtype=np.int64)


def run_mesh(model, kind: str, resolution: int, device: torch.device | str) -> tuple[np.ndarray, np.ndarray]:
    """(vertices, faces) of a loaded model in normalised coordinates."""
    if kind in ("sdf", "occupancy"):
        v, f = extract_field_mesh(model.field, model.mesh_bounds, resolution, model.level, model.inside, device)
    elif kind == "nerf":
        bounds = torch.as_tensor(model.mesh_bounds, dtype=torch.float32)
        v, f = extract_field_mesh(model.density, bounds, resolution, model.mesh_level, "above", device)
    elif kind == "gaussians":
        return tsdf_mesh(model, resolution)
    else:
        raise ReconError(f"cannot mesh a {kind} run")
    return v.cpu().numpy(), f.cpu().numpy()


def export_run_mesh(run_dir: str | Path, out_path: str | Path, *, resolution: int = 512,
                    device: torch.device | str = "cpu", min_component_fraction: float = MIN_COMPONENT_FRACTION
                    ) -> tuple[int, MeshReport]:
    """Mesh the run's newest checkpoint into ``out_path`` (.ply or .obj), dropping components below
    ``min_component_fraction`` of the largest's area; returns (components before the filter, report of
    the written mesh)."""
    from recon.engine.models.registry import load_run

    out_path = Path(out_path)
    if out_path.suffix.lower() not in MESH_SUFFIXES:
        raise ReconError(f"{out_path}: unsupported mesh format (use {' or '.join(MESH_SUFFIXES)})")
    if not 0.0 <= min_component_fraction <= 1.0:
        raise ReconError(f"--keep-components must be 'all' or a fraction in [0, 1], got {min_component_fraction}")
    model, state = load_run(run_dir, device)
    vertices, faces = run_mesh(model, state["kind"], resolution, device)
    if len(faces) == 0:
        raise ReconError(f"{run_dir}: the {state['kind']} run has no surface to mesh at this resolution")
    before = face_components(faces, len(vertices))[1]
    if min_component_fraction > 0:
        vertices, faces = keep_components(vertices, faces, min_component_fraction)
    normalization = Normalization.from_dict(state["normalization"])
    write_mesh(out_path, normalization.to_original(vertices.astype(np.float64)), faces)
    return before, mesh_report(vertices, faces)
