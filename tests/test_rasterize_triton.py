"""Triton rasterizer vs the torch reference (TRITON_INTERPRET=1 on CPU): forward and every gradient.

Tolerances: forward within 1e-5 abs (float32, same formulas); gradients within rtol 1e-3 and atol 1e-4 times
the largest reference magnitude (the backward recovers T by division and sums in another order). Radii and
the sorted intersections must match exactly. NaN never passes (assert_close rejects it).
"""
from __future__ import annotations

import pytest
import torch

from conftest import KERNEL_DEVICE
from recon.kernels import rasterize
from recon.kernels.splatting import gaussian_pixel_weights

pytestmark = pytest.mark.kernels

triton = pytest.importorskip("triton")


def _cameras(n_cams: int, width: int, height: int):
    viewmats = torch.eye(4)[None].repeat(n_cams, 1, 1)
    viewmats[:, 2, 3] = 3.0
    for c in range(1, n_cams):  # small rotations about y and shifts
        angle = torch.tensor(0.2 * c)
        viewmats[c, 0, 0] = viewmats[c, 2, 2] = torch.cos(angle)
        viewmats[c, 0, 2], viewmats[c, 2, 0] = torch.sin(angle), -torch.sin(angle)
        viewmats[c, 0, 3] = 0.1 * c
    Ks = torch.tensor([[1.2 * width, 0, width / 2], [0, 1.2 * width, height / 2], [0, 0, 1]])[None].repeat(n_cams, 1, 1)
    return viewmats, Ks


def _scene(n: int, channels: int, sh_degree: int | None, edge_cases: bool):
    means = torch.randn(n, 3) * 0.6
    quats = torch.randn(n, 4)
    scales = torch.rand(n, 3) * 0.12 + 0.005
    opacities = torch.rand(n)
    if sh_degree is None:
        colors = torch.rand(n, channels)
    else:
        colors = torch.randn(n, 16, 3) * 0.4
    if edge_cases and n >= 8:
        means[0, 2] = -3.5  # behind the camera
        means[1, 2] = -2.995  # straddling the near plane (z = 0.005 < near after the +3 shift)
        means[2, 2] = -2.98  # just in front of the near plane: huge on screen, Jacobian clamped
        scales[3] = 2.0  # huge: covers every tile
        opacities[4] = 0.0  # fully transparent
        opacities[5] = 1.0  # clamps at max_alpha
        means[7] = means[6]  # coincident depths (and positions)
        means[6, 0] += 0.05
    return means, quats, scales, opacities, colors


def _render_both(inputs, viewmats, Ks, width, height, **options):
    """Render, and backpropagate random output gradients, with both backends on KERNEL_DEVICE."""
    results = {}
    options = {k: v.to(KERNEL_DEVICE) if isinstance(v, torch.Tensor) else v for k, v in options.items()}
    for backend in ("torch", "triton"):
        leaves = [t.to(KERNEL_DEVICE).requires_grad_(True) for t in inputs]
        img, alpha, meta = rasterize(*leaves, viewmats.to(KERNEL_DEVICE), Ks.to(KERNEL_DEVICE), width, height,
                                     backend=backend, **options)
        gen = torch.Generator().manual_seed(7)
        v_img = torch.randn(img.shape, generator=gen).to(KERNEL_DEVICE)
        v_alpha = torch.randn(alpha.shape, generator=gen).to(KERNEL_DEVICE)
        ((img * v_img).sum() + (alpha * v_alpha).sum()).backward()
        assert meta["backend"] == backend
        results[backend] = (img, alpha, meta, [t.grad for t in leaves])
    return results["torch"], results["triton"]


def _assert_grad_close(ref: torch.Tensor | None, got: torch.Tensor | None, name: str):
    assert (ref is None) == (got is None), name
    if ref is None:
        return
    scale = max(1.0, ref.abs().max().item()) if ref.numel() else 1.0
    torch.testing.assert_close(got, ref, rtol=1e-3, atol=1e-4 * scale, msg=lambda m: f"{name}: {m}")


CASES = [
    # n, cameras, width, height, channels, sh_degree, edge cases, options
    (0, 1, 40, 24, 3, None, False, {}),
    (1, 2, 23, 17, 1, None, False, {}),
    (100, 2, 40, 24, 16, None, True, {"mode": "rgb+depth", "background": torch.rand(16)}),
    (150, 1, 37, 29, 3, None, True, {"antialiased": True, "max_alpha": 0.999}),
    (60, 2, 24, 24, 3, 0, False, {}),
    (60, 1, 30, 20, 3, 1, True, {"mode": "rgb+depth"}),
    (60, 1, 30, 20, 3, 2, False, {"background": torch.rand(1, 3)}),
    (60, 1, 30, 20, 3, 3, True, {"tile_size": 8}),
    # channels past one 16-channel blend program: chunks of 16 with a remainder, depth and background included
    (70, 1, 27, 21, 33, None, True, {"mode": "rgb+depth", "background": torch.rand(33)}),
    (50, 2, 19, 23, 64, None, False, {"tile_size": 8}),
    (90, 1, 45, 37, 3, None, True, {"tile_size": 32, "background": torch.rand(3)}),
]


@pytest.mark.parametrize("n,n_cams,width,height,channels,sh_degree,edge,options", CASES)
def test_triton_matches_reference(seed, n, n_cams, width, height, channels, sh_degree, edge, options):
    inputs = _scene(n, channels, sh_degree, edge)
    viewmats, Ks = _cameras(n_cams, width, height)
    if sh_degree is not None:
        options = {**options, "sh_degree": sh_degree}
    (img_r, alpha_r, meta_r, grads_r), (img_t, alpha_t, meta_t, grads_t) = _render_both(
        inputs, viewmats, Ks, width, height, **options
    )
    assert torch.isfinite(img_t).all() and torch.isfinite(alpha_t).all()
    torch.testing.assert_close(img_t, img_r, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(alpha_t, alpha_r, rtol=1e-4, atol=1e-5)
    assert torch.equal(meta_t["radii"], meta_r["radii"])
    assert torch.equal(meta_t["flatten_ids"], meta_r["flatten_ids"])
    for key in ("means2d", "conics", "depths", "opacities", "colors"):
        torch.testing.assert_close(meta_t[key], meta_r[key], rtol=1e-4, atol=1e-4, msg=lambda m: f"{key}: {m}")
    names = ("means", "quats", "scales", "opacities", "colors")
    for name, ref, got in zip(names, grads_r, grads_t):
        assert got is None or torch.isfinite(got).all(), name
        _assert_grad_close(ref, got, name)
    _assert_grad_close(meta_r["means2d"].grad, meta_t["means2d"].grad, "means2d")
    if n > 10:
        assert grads_r[0].abs().sum() > 0  # the comparison is not vacuous


def test_triton_forward_is_deterministic(seed):
    inputs = [t.to(KERNEL_DEVICE) for t in _scene(80, 3, None, True)]
    viewmats, Ks = (t.to(KERNEL_DEVICE) for t in _cameras(1, 33, 19))
    first = rasterize(*inputs, viewmats, Ks, 33, 19, backend="triton")
    second = rasterize(*inputs, viewmats, Ks, 33, 19, backend="triton")
    assert torch.equal(first[0], second[0]) and torch.equal(first[2]["isect_ids"], second[2]["isect_ids"])


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_gaussian_pixel_weights(seed, backend):
    means, quats, scales, opacities, _ = (t.to(KERNEL_DEVICE) for t in _scene(40, 3, None, False))
    viewmats, Ks = (t.to(KERNEL_DEVICE) for t in _cameras(2, 26, 18))
    ones = torch.ones(2, 18, 26, 1, device=KERNEL_DEVICE)
    weights = gaussian_pixel_weights(means, quats, scales, opacities, viewmats, Ks, 26, 18, ones, backend=backend)
    _, alpha, _ = rasterize(means, quats, scales, opacities, torch.ones(40, 1, device=KERNEL_DEVICE), viewmats, Ks, 26,
                            18, backend=backend)
    assert weights.shape == (40, 1)
    torch.testing.assert_close(weights.sum(), alpha.sum(), rtol=1e-4, atol=1e-3)  # sum_i w_i(p) = alpha(p)
    pixel_weights = torch.rand(2, 18, 26, 4, device=KERNEL_DEVICE)
    got = gaussian_pixel_weights(means, quats, scales, opacities, viewmats, Ks, 26, 18, pixel_weights, backend=backend)
    ref = gaussian_pixel_weights(means, quats, scales, opacities, viewmats, Ks, 26, 18, pixel_weights, backend="torch")
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    assert (got >= 0).all() and got.sum() > 0
