"""``hash_encode``: the public, differentiable hash-grid encoding op, dispatched per backend."""
from __future__ import annotations

import torch

from recon.kernels.backend import resolve_backend
from recon.kernels.hashgrid.reference import hash_encode_reference


class _HashEncodeTriton(torch.autograd.Function):
    """Triton forward and backward (atomic adds into the table gradient)."""

    @staticmethod
    def forward(ctx, positions: torch.Tensor, table: torch.Tensor, base_resolution: float,
                per_level_scale: float) -> torch.Tensor:
        from recon.kernels.hashgrid.triton import hash_encode_forward

        positions, table = positions.contiguous(), table.contiguous()
        ctx.save_for_backward(positions, table)
        ctx.levels = (base_resolution, per_level_scale)
        return hash_encode_forward(positions, table, base_resolution, per_level_scale).to(positions.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        from recon.kernels.hashgrid.triton import hash_encode_backward

        positions, table = ctx.saved_tensors
        grad_pos, grad_table = hash_encode_backward(positions, table, grad_out.float(), *ctx.levels,
                                                    positions_grad=ctx.needs_input_grad[0])
        if grad_pos is not None:
            grad_pos = grad_pos.to(positions.dtype)
        return grad_pos, grad_table.to(table.dtype), None, None


def hash_encode(positions: torch.Tensor,  # [N, 3] in [0, 1] (clamped)
                table: torch.Tensor,  # [L, T, F], T a power of two
                *, base_resolution: float, per_level_scale: float,
                backend: str | None = None) -> torch.Tensor:
    """Multiresolution hash encoding of points: features [N, L*F], differentiable w.r.t. table and positions.

    See ``recon.kernels.hashgrid.reference`` for the exact level, indexing and clamping conventions.
    """
    if positions.dim() != 2 or positions.shape[-1] != 3:
        raise ValueError(f"positions must be [N, 3], got shape {tuple(positions.shape)}")
    chosen = resolve_backend("hash_encode", positions.device, backend)
    if chosen == "triton":
        return _HashEncodeTriton.apply(positions, table, float(base_resolution), float(per_level_scale))
    return hash_encode_reference(positions, table, base_resolution, per_level_scale)
