"""``marching_cubes``: iso-surface of a dense grid as an indexed, watertight triangle mesh.

The grid is processed in slabs of cells along axis 0; each slab reads two extra grid layers (one for
its last cells, one to classify the edges of the layer it shares with the next slab), so a 1024^3 grid
never needs more than one slab's buffers. Per slab: classify points (edge bits) and cells (case,
triangle count), exclusive-scan the counts, emit the vertices of the edges the slab's points own, then
emit faces through the triangle table. Vertex ids follow (point in C order, axis), face order follows
(cell in C order, table order), so the output is deterministic and the same for every backend.
"""
from __future__ import annotations

from typing import Sequence

import torch

from recon.kernels.backend import resolve_backend
from recon.kernels.isosurface import reference

# Cells per slab are chosen so a slab holds about this many grid points (~1 GiB of buffers).
SLAB_POINTS = 1 << 25


def _implementation(backend: str):
    if backend == "triton":
        from recon.kernels.isosurface import triton as impl

        return impl
    return reference


def _exclusive_scan(counts: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(exclusive prefix sum int64, total) of ``counts``."""
    inclusive = torch.cumsum(counts, 0)
    total = int(inclusive[-1]) if inclusive.numel() else 0
    return inclusive - counts, total


def _check_grid(grid: torch.Tensor, inside: str) -> None:
    if inside not in ("below", "above"):
        raise ValueError(f"marching_cubes: inside must be 'below' or 'above', not {inside!r}")
    if grid.dim() != 3 or min(grid.shape) < 2:
        raise ValueError(f"marching_cubes: the grid must be 3-D with every size >= 2, got shape {tuple(grid.shape)}")
    if not grid.is_floating_point():
        raise ValueError(f"marching_cubes: the grid must hold floats, got {grid.dtype}")


def marching_cubes(grid: torch.Tensor, level: float = 0.0, *, spacing: Sequence[float] | None = None,
                   origin: Sequence[float] | None = None, inside: str = "below", backend: str | None = None,
                   slab_cells: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Extract the ``level`` iso-surface of ``grid``.

    Args:
        grid: [X, Y, Z] float tensor of field values (cast to float32); NaN is refused.
        level: the iso value.
        spacing: grid step per axis (default 1); origin: position of ``grid[0, 0, 0]`` (default 0).
            Without both, vertices are in index units with axis 0 first, like scikit-image.
        inside: ``"below"`` (values < level are inside, e.g. an SDF) or ``"above"`` (values > level,
            e.g. occupancy or density). A value exactly equal to ``level`` always counts as outside.
        backend: ``"torch"`` | ``"triton"`` | None (see ``recon.kernels.backend``).
        slab_cells: cells per slab along axis 0 (default: about 2^25 points per slab).

    Returns:
        vertices [V, 3] float32 (one per crossed grid edge, shared by every triangle using it) and faces
        [F, 3] int64, wound so normals point out of the inside region. Closed surfaces are watertight.
    """
    _check_grid(grid, inside)
    if torch.isnan(grid).any():
        raise ValueError("marching_cubes: the grid contains NaN values")
    impl = _implementation(resolve_backend("marching_cubes", grid.device, backend))
    above = inside == "above"
    level = float(level)
    X, Y, Z = grid.shape
    slab_cells = max(1, slab_cells or SLAB_POINTS // (Y * Z))
    vertex_parts, face_parts, vertex_base = [], [], 0
    for x0 in range(0, X - 1, slab_cells):
        x1 = min(x0 + slab_cells, X - 1)  # cells x0 .. x1 - 1, points x0 .. x1
        values = grid[x0:min(x1 + 2, X)].to(torch.float32).contiguous()
        point_layers = x1 - x0 + 1
        bits, cases, ntri = impl.classify(values, level, above, point_layers)
        offsets, total = _exclusive_scan(reference.vertex_counts(bits))
        own_points = (point_layers if x1 == X - 1 else point_layers - 1) * Y * Z
        own_vertices = total if own_points == offsets.numel() else int(offsets[own_points])
        verts = impl.emit_vertices(values, level, bits, offsets, own_points, own_vertices, x0)
        face_offsets, n_faces = _exclusive_scan(ntri)
        faces = impl.emit_faces(bits, offsets, cases, ntri, face_offsets, n_faces, (point_layers, Y, Z))
        vertex_parts.append(verts)
        face_parts.append(faces + vertex_base)
        vertex_base += own_vertices
    vertices = torch.cat(vertex_parts)
    faces = torch.cat(face_parts)
    if spacing is not None:
        vertices = vertices * torch.as_tensor(spacing, dtype=torch.float32, device=vertices.device)
    if origin is not None:
        vertices = vertices + torch.as_tensor(origin, dtype=torch.float32, device=vertices.device)
    return vertices, faces
