"""Triton marching cubes on one slab: classify/count, emit vertices, emit faces (scan: ``torch.cumsum``).

Same slab layout, signatures and output order as ``reference.py``; the results are equal bit for bit
(the division is round-to-nearest in both).
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from recon.kernels.isosurface.tables import EDGE_AXIS, EDGE_START_OFFSET, triangle_table

BLOCK = 256


@functools.lru_cache(maxsize=None)
def _device_tables(device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """(triangle table [256 * T * 3] int32, counts [256] int32, edge starts [12 * 3], axes [12], T)."""
    table, counts = triangle_table()
    as_i32 = lambda a: torch.as_tensor(a, dtype=torch.int32, device=device).reshape(-1).contiguous()
    return as_i32(table), as_i32(counts), as_i32(EDGE_START_OFFSET), as_i32(EDGE_AXIS), table.shape[1]


@triton.jit
def _is_inside(v, level, ABOVE: tl.constexpr):
    if ABOVE:
        result = v > level
    else:
        result = v < level
    return result.to(tl.int32)


@triton.jit
def _classify_kernel(values_ptr, bits_ptr, cases_ptr, ntri_ptr, counts_ptr, level, P, n_cells, L, Y, Z,
                     ABOVE: tl.constexpr, BLOCK: tl.constexpr):
    p = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = p < P
    YZ = Y * Z
    x = p // YZ
    y = (p // Z) % Y
    z = p % Z
    here = _is_inside(tl.load(values_ptr + p, mask=mask, other=0.0), level, ABOVE)
    has_x = mask & (x + 1 < L)
    has_y = mask & (y + 1 < Y)
    has_z = mask & (z + 1 < Z)
    in_x = _is_inside(tl.load(values_ptr + p + YZ, mask=has_x, other=0.0), level, ABOVE)
    in_y = _is_inside(tl.load(values_ptr + p + Z, mask=has_y, other=0.0), level, ABOVE)
    in_z = _is_inside(tl.load(values_ptr + p + 1, mask=has_z, other=0.0), level, ABOVE)
    bits = ((has_x & (in_x != here)).to(tl.int32) | ((has_y & (in_y != here)).to(tl.int32) << 1)
            | ((has_z & (in_z != here)).to(tl.int32) << 2))
    tl.store(bits_ptr + p, bits.to(tl.uint8), mask=mask)

    is_cell = p < n_cells
    valid = is_cell & (y + 1 < Y) & (z + 1 < Z)
    case = tl.zeros([BLOCK], dtype=tl.int32)
    for corner in tl.static_range(8):
        q = p + (corner & 1) * YZ + (corner >> 1 & 1) * Z + (corner >> 2 & 1)
        corner_in = _is_inside(tl.load(values_ptr + q, mask=valid, other=0.0), level, ABOVE)
        case = case | ((corner_in & valid.to(tl.int32)) << corner)
    ntri = tl.load(counts_ptr + case, mask=valid, other=0)
    tl.store(cases_ptr + p, case.to(tl.int64), mask=is_cell)
    tl.store(ntri_ptr + p, ntri.to(tl.int64), mask=is_cell)


@triton.jit
def _rank(bits, axis):
    below = bits & ((1 << axis) - 1)
    return (below & 1) + (below >> 1 & 1)


@triton.jit
def _emit_vertices_kernel(values_ptr, bits_ptr, offsets_ptr, out_ptr, level, n_points, x0, Y, Z,
                          BLOCK: tl.constexpr):
    p = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = p < n_points
    x = p // (Y * Z)
    y = (p // Z) % Y
    z = p % Z
    bits = tl.load(bits_ptr + p, mask=mask, other=0).to(tl.int32)
    offset = tl.load(offsets_ptr + p, mask=mask, other=0)
    v0 = tl.load(values_ptr + p, mask=mask, other=0.0)
    for axis in tl.static_range(3):
        active = mask & ((bits >> axis & 1) == 1)
        stride = Y * Z if axis == 0 else (Z if axis == 1 else 1)
        v1 = tl.load(values_ptr + p + stride, mask=active, other=1.0)
        t = tl.math.div_rn(level - v0, tl.where(active, v1 - v0, 1.0))
        idx = (offset + _rank(bits, axis)) * 3
        px = (x + x0).to(tl.float32)
        py = y.to(tl.float32)
        pz = z.to(tl.float32)
        if axis == 0:
            px = px + t
        elif axis == 1:
            py = py + t
        else:
            pz = pz + t
        tl.store(out_ptr + idx, px, mask=active)
        tl.store(out_ptr + idx + 1, py, mask=active)
        tl.store(out_ptr + idx + 2, pz, mask=active)


@triton.jit
def _emit_faces_kernel(bits_ptr, offsets_ptr, cases_ptr, ntri_ptr, face_offsets_ptr, table_ptr, starts_ptr,
                       axes_ptr, out_ptr, n_cells, Y, Z, MAX_TRIS: tl.constexpr, BLOCK: tl.constexpr):
    c = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = c < n_cells
    ntri = tl.load(ntri_ptr + c, mask=mask, other=0).to(tl.int32)
    case = tl.load(cases_ptr + c, mask=mask, other=0).to(tl.int32)
    first = tl.load(face_offsets_ptr + c, mask=mask, other=0)
    for t in tl.static_range(MAX_TRIS):
        active = mask & (t < ntri)
        for j in tl.static_range(3):
            edge = tl.load(table_ptr + case * (MAX_TRIS * 3) + t * 3 + j, mask=active, other=0)
            sx = tl.load(starts_ptr + edge * 3, mask=active, other=0)
            sy = tl.load(starts_ptr + edge * 3 + 1, mask=active, other=0)
            sz = tl.load(starts_ptr + edge * 3 + 2, mask=active, other=0)
            axis = tl.load(axes_ptr + edge, mask=active, other=0)
            q = c + sx * (Y * Z) + sy * Z + sz
            bits = tl.load(bits_ptr + q, mask=active, other=0).to(tl.int32)
            vertex = tl.load(offsets_ptr + q, mask=active, other=0) + _rank(bits, axis).to(tl.int64)
            tl.store(out_ptr + (first + t) * 3 + j, vertex, mask=active)


def classify(values: torch.Tensor, level: float, above: bool, point_layers: int
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """See ``reference.classify``."""
    L, Y, Z = values.shape
    n_points, n_cells = point_layers * Y * Z, (point_layers - 1) * Y * Z
    _, counts, _, _, _ = _device_tables(values.device)
    bits = torch.empty(n_points, dtype=torch.uint8, device=values.device)
    cases = torch.empty(n_cells, dtype=torch.int64, device=values.device)
    ntri = torch.empty(n_cells, dtype=torch.int64, device=values.device)
    _classify_kernel[(triton.cdiv(n_points, BLOCK),)](values, bits, cases, ntri, counts, level, n_points, n_cells,
                                                      L, Y, Z, ABOVE=above, BLOCK=BLOCK)
    return bits, cases, ntri


def emit_vertices(values: torch.Tensor, level: float, bits: torch.Tensor, offsets: torch.Tensor,
                  emit_points: int, count: int, x0: int) -> torch.Tensor:
    """See ``reference.emit_vertices``."""
    _, Y, Z = values.shape
    out = torch.empty((count, 3), dtype=torch.float32, device=values.device)
    if count:
        _emit_vertices_kernel[(triton.cdiv(emit_points, BLOCK),)](values, bits, offsets, out, level, emit_points,
                                                                  x0, Y, Z, BLOCK=BLOCK)
    return out


def emit_faces(bits: torch.Tensor, offsets: torch.Tensor, cases: torch.Tensor, ntri: torch.Tensor,
               face_offsets: torch.Tensor, count: int, shape: tuple[int, int, int]) -> torch.Tensor:
    """See ``reference.emit_faces``."""
    _, Y, Z = shape
    table, _, starts, axes, max_tris = _device_tables(bits.device)
    out = torch.empty((count, 3), dtype=torch.int64, device=bits.device)
    if count:
        _emit_faces_kernel[(triton.cdiv(cases.numel(), BLOCK),)](bits, offsets, cases, ntri, face_offsets, table,
                                                                 starts, axes, out, cases.numel(), Y, Z,
                                                                 MAX_TRIS=max_tris, BLOCK=BLOCK)
    return out
