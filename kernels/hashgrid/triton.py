"""Triton kernels of the hash encoding: forward, and backward to the table (atomic adds) and positions.

One program encodes ``BLOCK`` points at one level; the conventions are those of ``reference.py``.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from recon.kernels.hashgrid.reference import check_table, level_resolutions, level_scales

BLOCK = 128


@triton.jit
def _block_setup(pos_ptr, scales_ptr, res_ptr, n_points, BLOCK: tl.constexpr):
    """This program's level, points, their mask, the level's scale and resolution, the clamped positions,
    each point's cell (lower vertex, int64) and fractional offsets per axis."""
    level = tl.program_id(1)
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n_points
    scale = tl.load(scales_ptr + level)
    res = tl.load(res_ptr + level).to(tl.int64)
    px = tl.load(pos_ptr + offs * 3 + 0, mask=mask, other=0.0).to(tl.float32)
    py = tl.load(pos_ptr + offs * 3 + 1, mask=mask, other=0.0).to(tl.float32)
    pz = tl.load(pos_ptr + offs * 3 + 2, mask=mask, other=0.0).to(tl.float32)
    gx = tl.minimum(tl.maximum(px, 0.0), 1.0) * scale + 0.5
    gy = tl.minimum(tl.maximum(py, 0.0), 1.0) * scale + 0.5
    gz = tl.minimum(tl.maximum(pz, 0.0), 1.0) * scale + 0.5
    bx = tl.floor(gx)
    by = tl.floor(gy)
    bz = tl.floor(gz)
    return (level, offs, mask, scale, res, px, py, pz, bx.to(tl.int64), by.to(tl.int64), bz.to(tl.int64),
            gx - bx, gy - by, gz - bz)


@triton.jit
def _row(vx, vy, vz, res, table_size):
    """Table row of vertex (vx, vy, vz): dense index when the level fits the table, else the hash."""
    dense = vx + vy * res + vz * res * res
    hashed = (vx ^ (vy * 2654435761) ^ (vz * 805459861)) & (table_size - 1)
    return tl.where(res * res * res <= table_size, dense, hashed)


@triton.jit
def _hash_fwd_kernel(pos_ptr, table_ptr, scales_ptr, res_ptr, out_ptr, n_points, table_size, n_levels,
                     F: tl.constexpr, BLOCK: tl.constexpr):
    level, offs, mask, _, res, _, _, _, ix, iy, iz, fx, fy, fz = _block_setup(pos_ptr, scales_ptr, res_ptr,
                                                                              n_points, BLOCK)
    feat_offs = tl.arange(0, F)
    level_base = table_ptr + level.to(tl.int64) * table_size * F
    acc = tl.zeros([BLOCK, F], dtype=tl.float32)
    for c in tl.static_range(8):
        cx = c & 1  # c is a constexpr of static_range, so these are too (an annotation would re-declare them)
        cy = (c >> 1) & 1
        cz = (c >> 2) & 1
        w = (fx * cx + (1.0 - fx) * (1 - cx)) * (fy * cy + (1.0 - fy) * (1 - cy)) * (fz * cz + (1.0 - fz) * (1 - cz))
        row = _row(ix + cx, iy + cy, iz + cz, res, table_size)
        feat = tl.load(level_base + row[:, None] * F + feat_offs[None, :], mask=mask[:, None], other=0.0)
        acc += w[:, None] * feat.to(tl.float32)
    out_offs = offs[:, None].to(tl.int64) * (n_levels * F) + level * F + feat_offs[None, :]
    tl.store(out_ptr + out_offs, acc, mask=mask[:, None])


@triton.jit
def _hash_bwd_kernel(pos_ptr, table_ptr, scales_ptr, res_ptr, grad_out_ptr, grad_table_ptr, grad_pos_ptr,
                     n_points, table_size, n_levels,
                     F: tl.constexpr, BLOCK: tl.constexpr, POS_GRAD: tl.constexpr):
    level, offs, mask, scale, res, px, py, pz, ix, iy, iz, fx, fy, fz = _block_setup(pos_ptr, scales_ptr, res_ptr,
                                                                                     n_points, BLOCK)
    feat_offs = tl.arange(0, F)
    grad = tl.load(grad_out_ptr + offs[:, None].to(tl.int64) * (n_levels * F) + level * F + feat_offs[None, :],
                   mask=mask[:, None], other=0.0).to(tl.float32)
    level_offset = level.to(tl.int64) * table_size * F
    dx = tl.zeros([BLOCK], dtype=tl.float32)
    dy = tl.zeros([BLOCK], dtype=tl.float32)
    dz = tl.zeros([BLOCK], dtype=tl.float32)
    for c in tl.static_range(8):
        cx = c & 1  # c is a constexpr of static_range, so these are too (an annotation would re-declare them)
        cy = (c >> 1) & 1
        cz = (c >> 2) & 1
        wx = fx * cx + (1.0 - fx) * (1 - cx)
        wy = fy * cy + (1.0 - fy) * (1 - cy)
        wz = fz * cz + (1.0 - fz) * (1 - cz)
        row = _row(ix + cx, iy + cy, iz + cz, res, table_size)
        feat_ptrs = row[:, None] * F + feat_offs[None, :] + level_offset
        tl.atomic_add(grad_table_ptr + feat_ptrs, (wx * wy * wz)[:, None] * grad, mask=mask[:, None])
        if POS_GRAD:
            feat = tl.load(table_ptr + feat_ptrs, mask=mask[:, None], other=0.0).to(tl.float32)
            dot = tl.sum(feat * grad, axis=1)
            dx += dot * (2 * cx - 1) * wy * wz
            dy += dot * (2 * cy - 1) * wx * wz
            dz += dot * (2 * cz - 1) * wx * wy
    if POS_GRAD:
        # Clamped coordinates carry no gradient (torch.clamp passes it on the closed interval [0, 1]).
        dx = tl.where((px >= 0.0) & (px <= 1.0), dx * scale, 0.0)
        dy = tl.where((py >= 0.0) & (py <= 1.0), dy * scale, 0.0)
        dz = tl.where((pz >= 0.0) & (pz <= 1.0), dz * scale, 0.0)
        out = grad_pos_ptr + (level.to(tl.int64) * n_points + offs) * 3
        tl.store(out + 0, dx, mask=mask)
        tl.store(out + 1, dy, mask=mask)
        tl.store(out + 2, dz, mask=mask)


def _level_tensors(n_levels: int, base_resolution: float, per_level_scale: float, device) -> tuple:
    scales = level_scales(n_levels, base_resolution, per_level_scale)
    return (torch.tensor(scales, dtype=torch.float32, device=device),
            torch.tensor(level_resolutions(scales), dtype=torch.int64, device=device))


def _check_features(n_features: int) -> None:
    if n_features & (n_features - 1):
        raise ValueError(f"the Triton hash encoding needs a power-of-two feature count, got {n_features}")


def hash_encode_forward(positions: torch.Tensor,  # [N, 3] contiguous
                        table: torch.Tensor,  # [L, T, F] contiguous
                        base_resolution: float, per_level_scale: float) -> torch.Tensor:
    """Encoded features [N, L*F] (float32)."""
    table_size = check_table(table)
    n_levels, _, n_features = table.shape
    _check_features(n_features)
    n = positions.shape[0]
    scales, resolutions = _level_tensors(n_levels, base_resolution, per_level_scale, positions.device)
    out = torch.empty(n, n_levels * n_features, dtype=torch.float32, device=positions.device)
    if n and n_levels:
        grid = (triton.cdiv(n, BLOCK), n_levels)
        _hash_fwd_kernel[grid](positions, table, scales, resolutions, out, n, table_size, n_levels,
                               F=n_features, BLOCK=BLOCK)
    return out


def hash_encode_backward(positions: torch.Tensor,  # [N, 3]
                         table: torch.Tensor,  # [L, T, F]
                         grad_out: torch.Tensor,  # [N, L*F]
                         base_resolution: float, per_level_scale: float,
                         positions_grad: bool) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Gradients (to positions [N, 3] or None, to the table [L, T, F] in float32)."""
    table_size = check_table(table)
    n_levels, _, n_features = table.shape
    n = positions.shape[0]
    scales, resolutions = _level_tensors(n_levels, base_resolution, per_level_scale, positions.device)
    grad_table = torch.zeros(table.shape, dtype=torch.float32, device=table.device)
    per_level = torch.zeros(n_levels, n, 3, dtype=torch.float32, device=positions.device) if positions_grad else None
    if n and n_levels:
        grid = (triton.cdiv(n, BLOCK), n_levels)
        _hash_bwd_kernel[grid](positions, table, scales, resolutions, grad_out.contiguous(), grad_table,
                               per_level if positions_grad else grad_table, n, table_size, n_levels,
                               F=n_features, BLOCK=BLOCK, POS_GRAD=positions_grad)
    return (per_level.sum(0) if positions_grad else None), grad_table
