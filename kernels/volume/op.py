"""``composite_rays``: the public, differentiable volume-compositing op, dispatched per backend."""
from __future__ import annotations

import torch

from recon.kernels.backend import resolve_backend
from recon.kernels.volume.reference import composite_rays_reference, ray_offsets


class _CompositeTriton(torch.autograd.Function):
    """Triton forward and backward over packed samples."""

    @staticmethod
    def forward(ctx, sigmas, rgbs, deltas, ts, offsets, early_stop):
        from recon.kernels.volume.triton import composite_forward

        samples = [x.detach().float().contiguous() for x in (sigmas, rgbs, deltas, ts)]
        outputs = composite_forward(*samples, offsets, early_stop)
        ctx.save_for_backward(*samples, offsets, *outputs)
        ctx.early_stop = early_stop
        ctx.dtypes = (sigmas.dtype, rgbs.dtype)
        return outputs

    @staticmethod
    def backward(ctx, g_rgb, g_depth, g_opacity):
        from recon.kernels.volume.triton import composite_backward

        sigmas, rgbs, deltas, ts, offsets, *outputs = ctx.saved_tensors
        grads = [g.float().contiguous() for g in (g_rgb, g_depth, g_opacity)]
        g_sigma, g_rgbs = composite_backward(sigmas, rgbs, deltas, ts, offsets, outputs, grads, ctx.early_stop)
        return g_sigma.to(ctx.dtypes[0]), g_rgbs.to(ctx.dtypes[1]), None, None, None, None


def composite_rays(sigmas: torch.Tensor,  # [S] densities (>= 0)
                   rgbs: torch.Tensor,  # [S, 3] colours
                   deltas: torch.Tensor,  # [S] sample lengths
                   ts: torch.Tensor,  # [S] sample distances (for depth)
                   ray_indices: torch.Tensor,  # [S] ray of each sample, non-decreasing
                   n_rays: int,
                   *, early_stop: float = 1e-4,
                   backend: str | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Volume-render packed samples into (rgb [R, 3], depth [R], opacity [R]); gradients to sigmas and rgbs.

    Depth is the expected distance ``sum w_i t_i`` (not divided by opacity). See
    ``recon.kernels.volume.reference`` for the exact formulas and the early-termination rule.
    """
    if not (sigmas.shape[0] == rgbs.shape[0] == deltas.shape[0] == ts.shape[0] == ray_indices.shape[0]):
        raise ValueError("sigmas, rgbs, deltas, ts and ray_indices must have the same number of samples")
    chosen = resolve_backend("composite_rays", sigmas.device, backend)
    if chosen == "triton":
        offsets = ray_offsets(ray_indices, n_rays)
        return _CompositeTriton.apply(sigmas, rgbs, deltas, ts, offsets, float(early_stop))
    return composite_rays_reference(sigmas, rgbs, deltas, ts, ray_indices, n_rays, early_stop)
