"""Vectorised PyTorch marching cubes on one slab (the reference and the CPU path).

A slab is ``values`` [L, Y, Z] holding grid layers ``x0 .. x0 + L - 1``. Points of its first ``Lp``
layers get their three owned edges classified (``bits``: bit ``a`` set when the edge from the point along
axis ``a`` crosses the surface); cells are indexed by their lowest corner, on the first ``Lp - 1`` layers,
in the same flattened [layer, y, z] layout (cells past the border have no triangles). A point's vertices
are numbered in axis order, so edge ``(p, a)`` has id ``offset[p] + popcount(bits[p] & ((1 << a) - 1))``.
"""
from __future__ import annotations

import torch

from recon.kernels.isosurface.tables import CORNER_OFFSETS, EDGE_AXIS, EDGE_START_OFFSET, triangle_table


def inside_mask(values: torch.Tensor, level: float, above: bool) -> torch.Tensor:
    """Inside test; a value exactly at ``level`` is outside either way."""
    return values > level if above else values < level


def classify(values: torch.Tensor, level: float, above: bool, point_layers: int
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Edge bits of points and cases of cells of a slab.

    Args:
        values: [L, Y, Z] float32 slab, ``L >= point_layers``.
        point_layers: how many leading layers hold the points to classify (``Lp``).

    Returns:
        bits [Lp * Y * Z] uint8, cases [(Lp - 1) * Y * Z] int64 and triangle counts [(Lp - 1) * Y * Z]
        int64 (0 for cells past the border).
    """
    L, Y, Z = values.shape
    inside = inside_mask(values, level, above)
    pts = inside[:point_layers]
    bits = torch.zeros(pts.shape, dtype=torch.uint8, device=values.device)
    bits[: min(point_layers, L - 1)] |= (pts[: L - 1] != inside[1:point_layers + 1]).to(torch.uint8)
    bits[:, :-1] |= (pts[:, :-1] != pts[:, 1:]).to(torch.uint8) << 1
    bits[:, :, :-1] |= (pts[:, :, :-1] != pts[:, :, 1:]).to(torch.uint8) << 2

    cases = torch.zeros((point_layers - 1, Y, Z), dtype=torch.int64, device=values.device)
    cells = cases[:, :-1, :-1]
    for corner, (dx, dy, dz) in enumerate(CORNER_OFFSETS.tolist()):
        corner_inside = pts[dx:point_layers - 1 + dx, dy:Y - 1 + dy, dz:Z - 1 + dz]
        cells |= corner_inside.to(torch.int64) << corner
    _, counts = triangle_table()
    ntri = torch.as_tensor(counts, device=values.device)[cases]
    ntri[:, -1, :] = 0
    ntri[:, :, -1] = 0
    return bits.reshape(-1), cases.reshape(-1), ntri.reshape(-1)


def vertex_counts(bits: torch.Tensor) -> torch.Tensor:
    """Number of crossed edges [P] int64 owned by each point, from its edge ``bits`` [P] uint8."""
    b = bits.to(torch.int64)
    return (b & 1) + (b >> 1 & 1) + (b >> 2 & 1)


def _rank(bits: torch.Tensor, axis: torch.Tensor) -> torch.Tensor:
    """How many of a point's active edges come before ``axis`` (its vertex's index among the point's)."""
    below = bits.to(torch.int64) & ((1 << axis) - 1)
    return (below & 1) + (below >> 1 & 1)


def emit_vertices(values: torch.Tensor, level: float, bits: torch.Tensor, offsets: torch.Tensor,
                  emit_points: int, count: int, x0: int) -> torch.Tensor:
    """Vertices [count, 3] float32 of the first ``emit_points`` points' edges, in grid index units.

    ``offsets`` [Lp * Y * Z] int64 is the exclusive scan of the points' vertex counts; ``x0`` is the
    slab's first layer.
    """
    L, Y, Z = values.shape
    flat = values.reshape(-1)
    out = torch.empty((count, 3), dtype=torch.float32, device=values.device)
    strides = (Y * Z, Z, 1)
    point_bits = bits[:emit_points]
    for axis in range(3):
        p = torch.nonzero(point_bits >> axis & 1).squeeze(1)
        v0, v1 = flat[p], flat[p + strides[axis]]
        t = (level - v0) / (v1 - v0)
        pos = torch.stack([p // (Y * Z) + x0, p // Z % Y, p % Z], dim=1).to(torch.float32)
        pos[:, axis] += t
        out[offsets[p] + _rank(point_bits[p], torch.full_like(p, axis))] = pos
    return out


def emit_faces(bits: torch.Tensor, offsets: torch.Tensor, cases: torch.Tensor, ntri: torch.Tensor,
               face_offsets: torch.Tensor, count: int, shape: tuple[int, int, int]) -> torch.Tensor:
    """Faces [count, 3] int64 (slab-local vertex ids) of every cell, in cell order then table order.

    ``shape`` is (Lp, Y, Z); ``cases``/``ntri`` [(Lp - 1) * Y * Z] come from ``classify``. Masked
    gathers keep cell order here, so ``face_offsets`` (the scan of ``ntri``, which the Triton kernel
    writes through) only checks the count.
    """
    _, Y, Z = shape
    device = bits.device
    table, _ = triangle_table()
    cell = torch.nonzero(ntri).squeeze(1)
    edges = torch.as_tensor(table, device=device)[cases[cell]]  # [C, T, 3]
    valid = torch.arange(table.shape[1], device=device)[None, :] < ntri[cell][:, None]
    edges, cell = edges[valid], cell[:, None].expand(-1, table.shape[1])[valid]  # [F, 3], [F]
    start = torch.as_tensor(EDGE_START_OFFSET, device=device)[edges]  # [F, 3, 3]
    axis = torch.as_tensor(EDGE_AXIS, device=device)[edges]
    point = cell[:, None] + start[..., 0] * (Y * Z) + start[..., 1] * Z + start[..., 2]
    faces = offsets[point] + _rank(bits[point], axis)
    assert faces.shape[0] == count and (count == 0 or int(face_offsets[-1] + ntri[-1]) == count)
    return faces
