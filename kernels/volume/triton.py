"""Triton kernels of volume compositing over packed samples: forward and backward (instant-ngp style).

Each program marches ``BLOCK`` rays in lock-step, one sample per iteration, and stops contributing once
a ray's transmittance drops below ``early_stop``. The backward pass re-marches the rays and uses the
forward totals, so it needs no per-sample storage: for sample i,
``dL/dsigma_i = delta_i * (T_{i+1} * v_i - sum_{j>i} w_j v_j)`` with ``v_j = g_rgb . c_j + g_depth t_j + g_opacity``.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 64


@triton.jit
def _ray_block(offsets_ptr, n_rays, BLOCK: tl.constexpr):
    """This program's rays, their mask, first sample and sample count."""
    rays = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ray_mask = rays < n_rays
    start = tl.load(offsets_ptr + rays, mask=ray_mask, other=0)
    count = tl.load(offsets_ptr + rays + 1, mask=ray_mask, other=0) - start
    return rays, ray_mask, start, count


@triton.jit
def _sample(sigma_ptr, delta_ptr, start, count, k, optical, ray_mask, early_stop):
    """Sample ``k`` of each ray: whether it contributes, its index, delta, optical depth and weight."""
    transmittance = tl.exp(-optical)
    active = ray_mask & (k < count) & (transmittance >= early_stop)
    s = start + k
    delta = tl.load(delta_ptr + s, mask=active, other=0.0)
    tau = tl.load(sigma_ptr + s, mask=active, other=0.0) * delta
    w = tl.where(active, transmittance * (1.0 - tl.exp(-tau)), 0.0)
    return active, s, delta, tau, w


@triton.jit
def _composite_fwd_kernel(sigma_ptr, rgb_ptr, delta_ptr, t_ptr, offsets_ptr, out_rgb_ptr, out_depth_ptr,
                          out_opacity_ptr, n_rays, early_stop, MAX_SAMPLES: tl.constexpr, BLOCK: tl.constexpr):
    rays, ray_mask, start, count = _ray_block(offsets_ptr, n_rays, BLOCK)
    optical = tl.zeros([BLOCK], dtype=tl.float32)
    acc_r = tl.zeros([BLOCK], dtype=tl.float32)
    acc_g = tl.zeros([BLOCK], dtype=tl.float32)
    acc_b = tl.zeros([BLOCK], dtype=tl.float32)
    acc_d = tl.zeros([BLOCK], dtype=tl.float32)
    acc_o = tl.zeros([BLOCK], dtype=tl.float32)
    for k in range(0, MAX_SAMPLES):
        active, s, _, tau, w = _sample(sigma_ptr, delta_ptr, start, count, k, optical, ray_mask, early_stop)
        acc_r += w * tl.load(rgb_ptr + s * 3 + 0, mask=active, other=0.0)
        acc_g += w * tl.load(rgb_ptr + s * 3 + 1, mask=active, other=0.0)
        acc_b += w * tl.load(rgb_ptr + s * 3 + 2, mask=active, other=0.0)
        acc_d += w * tl.load(t_ptr + s, mask=active, other=0.0)
        acc_o += w
        optical += tau
    tl.store(out_rgb_ptr + rays * 3 + 0, acc_r, mask=ray_mask)
    tl.store(out_rgb_ptr + rays * 3 + 1, acc_g, mask=ray_mask)
    tl.store(out_rgb_ptr + rays * 3 + 2, acc_b, mask=ray_mask)
    tl.store(out_depth_ptr + rays, acc_d, mask=ray_mask)
    tl.store(out_opacity_ptr + rays, acc_o, mask=ray_mask)


@triton.jit
def _composite_bwd_kernel(sigma_ptr, rgb_ptr, delta_ptr, t_ptr, offsets_ptr, out_rgb_ptr, out_depth_ptr,
                          out_opacity_ptr, g_rgb_ptr, g_depth_ptr, g_opacity_ptr, g_sigma_ptr, g_rgbs_ptr,
                          n_rays, early_stop, MAX_SAMPLES: tl.constexpr, BLOCK: tl.constexpr):
    rays, ray_mask, start, count = _ray_block(offsets_ptr, n_rays, BLOCK)
    gr = tl.load(g_rgb_ptr + rays * 3 + 0, mask=ray_mask, other=0.0)
    gg = tl.load(g_rgb_ptr + rays * 3 + 1, mask=ray_mask, other=0.0)
    gb = tl.load(g_rgb_ptr + rays * 3 + 2, mask=ray_mask, other=0.0)
    gd = tl.load(g_depth_ptr + rays, mask=ray_mask, other=0.0)
    go = tl.load(g_opacity_ptr + rays, mask=ray_mask, other=0.0)
    total = (gr * tl.load(out_rgb_ptr + rays * 3 + 0, mask=ray_mask, other=0.0)
             + gg * tl.load(out_rgb_ptr + rays * 3 + 1, mask=ray_mask, other=0.0)
             + gb * tl.load(out_rgb_ptr + rays * 3 + 2, mask=ray_mask, other=0.0)
             + gd * tl.load(out_depth_ptr + rays, mask=ray_mask, other=0.0)
             + go * tl.load(out_opacity_ptr + rays, mask=ray_mask, other=0.0))
    optical = tl.zeros([BLOCK], dtype=tl.float32)
    prefix = tl.zeros([BLOCK], dtype=tl.float32)
    for k in range(0, MAX_SAMPLES):
        active, s, delta, tau, w = _sample(sigma_ptr, delta_ptr, start, count, k, optical, ray_mask, early_stop)
        r = tl.load(rgb_ptr + s * 3 + 0, mask=active, other=0.0)
        g = tl.load(rgb_ptr + s * 3 + 1, mask=active, other=0.0)
        b = tl.load(rgb_ptr + s * 3 + 2, mask=active, other=0.0)
        v = gr * r + gg * g + gb * b + gd * tl.load(t_ptr + s, mask=active, other=0.0) + go
        prefix += w * v
        optical += tau
        grad_sigma = delta * (tl.exp(-optical) * v - (total - prefix))
        tl.store(g_sigma_ptr + s, grad_sigma, mask=active)
        tl.store(g_rgbs_ptr + s * 3 + 0, w * gr, mask=active)
        tl.store(g_rgbs_ptr + s * 3 + 1, w * gg, mask=active)
        tl.store(g_rgbs_ptr + s * 3 + 2, w * gb, mask=active)


def _max_samples(offsets: torch.Tensor) -> int:
    """Loop bound: the longest ray's sample count rounded up to a power of two (few recompilations)."""
    longest = int((offsets[1:] - offsets[:-1]).max().item()) if offsets.numel() > 1 else 0
    return triton.next_power_of_2(max(longest, 1))


def composite_forward(sigmas, rgbs, deltas, ts, offsets, early_stop: float):
    """(rgb [R, 3], depth [R], opacity [R]) in float32 from contiguous float32 samples and offsets [R + 1]."""
    n_rays = offsets.numel() - 1
    out_rgb = torch.zeros(n_rays, 3, dtype=torch.float32, device=sigmas.device)
    out_depth = torch.zeros(n_rays, dtype=torch.float32, device=sigmas.device)
    out_opacity = torch.zeros(n_rays, dtype=torch.float32, device=sigmas.device)
    if n_rays and sigmas.numel():
        _composite_fwd_kernel[(triton.cdiv(n_rays, BLOCK),)](
            sigmas, rgbs, deltas, ts, offsets, out_rgb, out_depth, out_opacity, n_rays, early_stop,
            MAX_SAMPLES=_max_samples(offsets), BLOCK=BLOCK)
    return out_rgb, out_depth, out_opacity


def composite_backward(sigmas, rgbs, deltas, ts, offsets, outputs, grads, early_stop: float):
    """Gradients (to sigmas [S], to rgbs [S, 3]); samples after early termination get zero."""
    n_rays = offsets.numel() - 1
    g_sigma = torch.zeros_like(sigmas)
    g_rgbs = torch.zeros_like(rgbs)
    if n_rays and sigmas.numel():
        _composite_bwd_kernel[(triton.cdiv(n_rays, BLOCK),)](
            sigmas, rgbs, deltas, ts, offsets, *outputs, *grads, g_sigma, g_rgbs, n_rays, early_stop,
            MAX_SAMPLES=_max_samples(offsets), BLOCK=BLOCK)
    return g_sigma, g_rgbs
