"""Pure-PyTorch volume rendering over packed ray samples: the reference and the CPU path.

Samples of one ray are contiguous and in front-to-back order; ``ray_indices`` [S] names each sample's
ray (non-decreasing). For sample i of a ray: ``alpha_i = 1 - exp(-sigma_i * delta_i)``, transmittance
``T_i = exp(-sum_{k<i} sigma_k delta_k)``, weight ``w_i = T_i * alpha_i``; colour ``sum w_i c_i``, depth
``sum w_i t_i`` and opacity ``sum w_i``. Early termination: samples with ``T_i < early_stop`` get weight 0
(they would add less than ``early_stop`` in total). Gradients flow to sigmas and rgbs (not to deltas/ts).
"""
from __future__ import annotations

import torch


def ray_offsets(ray_indices: torch.Tensor, n_rays: int) -> torch.Tensor:
    """Start of each ray's samples [n_rays + 1] (int64) from sorted ``ray_indices`` [S]."""
    counts = torch.bincount(ray_indices.long(), minlength=n_rays)[:n_rays]
    offsets = torch.zeros(n_rays + 1, dtype=torch.int64, device=ray_indices.device)
    torch.cumsum(counts, 0, out=offsets[1:])
    return offsets


def packed_transmittance(tau: torch.Tensor,  # [S] optical depth sigma * delta of each sample
                         ray_indices: torch.Tensor,  # [S] sorted (int64)
                         n_rays: int) -> torch.Tensor:
    """Transmittance ``T_i = exp(-sum_{k<i} tau_k)`` [S] (dtype of ``tau``) before each sample, within its ray."""
    inclusive = torch.cumsum(tau.double(), 0)  # float64: long packed sums lose no precision
    starts = ray_offsets(ray_indices, n_rays)[ray_indices]  # [S] first sample of each sample's ray
    before_ray = torch.where(starts > 0, inclusive[(starts - 1).clamp_min(0)], torch.zeros_like(inclusive))
    exclusive = inclusive - tau.double() - before_ray  # sum over earlier samples of the same ray
    return torch.exp(-exclusive).to(tau.dtype)


def composite_rays_reference(sigmas: torch.Tensor,  # [S]
                             rgbs: torch.Tensor,  # [S, 3]
                             deltas: torch.Tensor,  # [S]
                             ts: torch.Tensor,  # [S]
                             ray_indices: torch.Tensor,  # [S] sorted
                             n_rays: int,
                             early_stop: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(rgb [R, 3], depth [R], opacity [R]) of packed samples; differentiable w.r.t. sigmas and rgbs."""
    ray_indices = ray_indices.long()
    tau = sigmas * deltas.detach()  # [S] optical depth of each sample
    transmittance = packed_transmittance(tau, ray_indices, n_rays)
    alive = (transmittance.detach() >= early_stop).to(sigmas.dtype)
    weights = transmittance * (1.0 - torch.exp(-tau)) * alive  # [S]
    rgb = sigmas.new_zeros(n_rays, 3).index_add(0, ray_indices, weights[:, None] * rgbs)
    depth = sigmas.new_zeros(n_rays).index_add(0, ray_indices, weights * ts.detach())
    opacity = sigmas.new_zeros(n_rays).index_add(0, ray_indices, weights)
    return rgb, depth, opacity
