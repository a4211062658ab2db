"""Pure-PyTorch multiresolution hash encoding (instant-ngp): the reference and the CPU path.

Conventions (those of tiny-cuda-nn, with one documented difference):

* level ``l`` has scale ``s_l = base_resolution * per_level_scale**l - 1`` and a point ``x`` in [0, 1]
  lands at grid position ``x * s_l + 0.5`` (the +0.5 offset of tiny-cuda-nn);
* positions outside [0, 1] are clamped to the box (their gradient is zero);
* a level is *dense* when its ``R = ceil(s_l) + 2`` vertices per axis fit the table (``R**3 <= T``): the
  index of vertex (x, y, z) is ``x + y*R + z*R*R``. tiny-cuda-nn uses ``ceil(s_l) + 1`` and lets the last
  corner alias into the next row; the extra vertex here removes that aliasing;
* otherwise the index is the spatial hash ``(x * 1) ^ (y * 2654435761) ^ (z * 805459861) mod T``
  (uint32 arithmetic; ``T`` is a power of two, so the low bits of 64-bit products give the same value);
* features are trilinearly interpolated between the 8 corners of the cell.
"""
from __future__ import annotations

import math

import torch

PRIMES = (1, 2654435761, 805459861)


def level_scales(n_levels: int, base_resolution: float, per_level_scale: float) -> list[float]:
    """Grid scale ``s_l`` of every level (positions map to ``x * s_l + 0.5``)."""
    return [base_resolution * per_level_scale**level - 1.0 for level in range(n_levels)]


def level_resolutions(scales: list[float]) -> list[int]:
    """Vertices per axis of each level's grid: ``ceil(s_l) + 2`` (every cell corner of [0, 1])."""
    return [int(math.ceil(s)) + 2 for s in scales]


def per_level_scale_for(n_levels: int, base_resolution: float, max_resolution: float) -> float:
    """instant-ngp's growth factor ``b = exp((ln N_max - ln N_min) / (L - 1))``."""
    if n_levels <= 1:
        return 1.0
    return math.exp((math.log(max_resolution) - math.log(base_resolution)) / (n_levels - 1))


def check_table(table: torch.Tensor) -> int:
    """The table size ``T`` of a [L, T, F] table; ``T`` must be a power of two."""
    if table.dim() != 3:
        raise ValueError(f"hash table must be [L, T, F], got shape {tuple(table.shape)}")
    size = table.shape[1]
    if size & (size - 1):
        raise ValueError(f"hash table size {size} is not a power of two")
    return size


def grid_index(corner: torch.Tensor, resolution: int, table_size: int) -> torch.Tensor:
    """Table row of integer grid vertices ``corner`` [..., 3] (int64) at one level."""
    x, y, z = corner.unbind(-1)
    if resolution**3 <= table_size:
        return x + y * resolution + z * (resolution * resolution)
    return ((x * PRIMES[0]) ^ (y * PRIMES[1]) ^ (z * PRIMES[2])) & (table_size - 1)


def _corner_rows(lo: torch.Tensor, resolution: int, table_size: int) -> torch.Tensor:
    """Table rows [N, 8] of the 8 corners of the cells whose lowest vertices are ``lo`` [N, 3] (int64).

    Corner ``c`` is vertex ``lo + (c & 1, c >> 1 & 1, c >> 2 & 1)``. The row is a sum (dense) or an XOR
    (hashed) of one term per axis, so the two terms of each axis are computed once and combined by
    broadcasting: the same rows as ``grid_index`` without the [N, 8, 3] vertex tensor.
    """
    axis = torch.stack([lo, lo + 1], dim=1)  # [N, 2, 3]: the two vertex coordinates of each axis
    if resolution**3 <= table_size:
        t = axis * torch.tensor([1, resolution, resolution * resolution], device=lo.device)
        rows = t[:, :, None, None, 2] + t[:, None, :, None, 1] + t[:, None, None, :, 0]
    else:
        t = (axis * torch.tensor(PRIMES, device=lo.device)) & (table_size - 1)
        rows = t[:, :, None, None, 2] ^ t[:, None, :, None, 1] ^ t[:, None, None, :, 0]
    return rows.reshape(-1, 8)


def hash_encode_reference(positions: torch.Tensor,  # [N, 3]
                          table: torch.Tensor,  # [L, T, F]
                          base_resolution: float,
                          per_level_scale: float) -> torch.Tensor:
    """Encode points into [N, L*F] features (dtype of ``positions``); differentiable w.r.t. both inputs.

    Written for the CPU as much as for reading: per level the 8 corner rows and trilinear weights are
    [N, 8] tensors built from per-axis terms, and each level's rows are gathered from its own slice of
    the table (``unbind``), so the table gradient is one [L, T, F] buffer rather than one per level.
    """
    table_size = check_table(table)
    n_levels, _, n_features = table.shape
    x = positions.clamp(0.0, 1.0)
    scales = level_scales(n_levels, base_resolution, per_level_scale)
    outputs = []
    for level_table, scale, resolution in zip(table.unbind(0), scales, level_resolutions(scales)):
        pos = x * scale + 0.5  # [N, 3]
        base = torch.floor(pos.detach())
        frac = pos - base  # [N, 3]; gradient flows through pos
        rows = _corner_rows(base.long(), resolution, table_size)  # [N, 8]
        w = torch.stack([1.0 - frac, frac], dim=1)  # [N, 2, 3]: weight of the low and high vertex per axis
        weights = (w[:, :, None, None, 2] * w[:, None, :, None, 1] * w[:, None, None, :, 0]).reshape(-1, 8)
        feats = level_table.index_select(0, rows.reshape(-1)).reshape(-1, 8, n_features)  # [N, 8, F]
        outputs.append(torch.bmm(weights[:, None, :], feats.to(weights.dtype))[:, 0])
    return torch.cat(outputs, dim=-1)
