"""Random Gaussian scenes for rasterizer tests: Gaussians around the origin, cameras looking at it."""
from __future__ import annotations

import torch


def random_gaussians(n: int, generator: torch.Generator, sh_degree: int = 1) -> dict[str, torch.Tensor]:
    """``n`` raw Gaussians (the trainer's parametrisation: log scales, logit opacities, SH) in [-1, 1]^3."""
    k = (sh_degree + 1) ** 2
    return {
        "means": torch.rand(n, 3, generator=generator) * 2 - 1,
        "quats": torch.randn(n, 4, generator=generator),
        "scales": torch.log(torch.rand(n, 3, generator=generator) * 0.15 + 0.02),
        "opacities": torch.randn(n, generator=generator),
        "sh0": torch.randn(n, 1, 3, generator=generator) * 0.5,
        "shN": torch.randn(n, k - 1, 3, generator=generator) * 0.1,
    }


def random_cameras(count: int, width: int, height: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` world-to-camera matrices [C, 4, 4] at distance 3.5 looking at the origin, and intrinsics [C, 3, 3]."""
    q, _ = torch.linalg.qr(torch.randn(count, 3, 3, generator=generator))
    rot = q * torch.linalg.det(q)[:, None, None]  # proper rotations
    viewmats = torch.eye(4).repeat(count, 1, 1)
    viewmats[:, :3, :3] = rot
    viewmats[:, 2, 3] = 3.5
    focal = 2.5 * max(width, height)  # sees about [-0.7, 0.7]^2 at the origin: some Gaussians fall outside
    Ks = torch.tensor([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]]).repeat(count, 1, 1)
    return viewmats, Ks
