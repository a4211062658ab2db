"""Image metrics and the photometric loss: PSNR, SSIM, L1 + D-SSIM.

Images are float tensors [..., H, W, C] in [0, 1] (channels last, like the renderers' output).
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F


def psnr(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB for signals in [0, 1] [..., H, W, C], over every value, or over the
    pixels of ``mask`` [..., H, W] (weights; e.g. an undistorted image's valid pixels) when given."""
    if mask is None:
        mse = torch.mean((pred - target) ** 2)
    else:
        weights = mask[..., None].to(pred.dtype)
        mse = ((pred - target) ** 2 * weights).sum() / (weights.sum() * pred.shape[-1]).clamp_min(1e-12)
    return -10.0 * torch.log10(mse.clamp_min(1e-12))


@functools.lru_cache(maxsize=8)
def _gaussian_window(size: int, sigma: float, channels: int, device: str, dtype: torch.dtype) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = (g / g.sum()).to(dtype)
    window = torch.outer(g, g).to(device)
    return window.expand(channels, 1, size, size).contiguous()


def ssim(pred: torch.Tensor, target: torch.Tensor, window_size: int = 11, sigma: float = 1.5,
         mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean structural similarity with an 11x11 Gaussian window (sigma 1.5), as in the 3DGS code.

    Args:
        pred, target: [..., H, W, C] in [0, 1]; leading dimensions are flattened into a batch.
        mask: optional [..., H, W] 0/1 mask of the pixels that count: the local statistics then take only
            those pixels (window weights renormalised), and the mean runs over them, so the values elsewhere
            do not matter at all.
    """
    C = pred.shape[-1]
    x = pred.reshape(-1, *pred.shape[-3:]).permute(0, 3, 1, 2)
    y = target.reshape(-1, *target.shape[-3:]).permute(0, 3, 1, 2)
    w = _gaussian_window(window_size, sigma, C, str(pred.device), pred.dtype)
    pad = window_size // 2

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, w, padding=pad, groups=C)

    if mask is None:
        weight = None
        average = blur
    else:
        m = mask.reshape(-1, 1, *mask.shape[-2:]).to(x.dtype).expand_as(x)
        weight = blur(m)
        x, y = x * m, y * m  # values outside the mask never enter a window

        def average(t: torch.Tensor) -> torch.Tensor:
            return blur(t * m) / weight.clamp_min(1e-6)

    mu_x, mu_y = average(x), average(y)
    sxx = average(x * x) - mu_x**2
    syy = average(y * y) - mu_y**2
    sxy = average(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    if weight is None:
        return ssim_map.mean()
    counted = m * (weight > 1e-6)
    return (ssim_map * counted).sum() / counted.sum().clamp_min(1e-12)


def photometric_loss(pred: torch.Tensor, target: torch.Tensor, ssim_weight: float = 0.2) -> torch.Tensor:
    """The 3DGS loss: (1 - w) * L1 + w * (1 - SSIM), w = 0.2 by default."""
    l1 = torch.abs(pred - target).mean()
    if ssim_weight == 0.0:
        return l1
    return (1.0 - ssim_weight) * l1 + ssim_weight * (1.0 - ssim(pred, target))
