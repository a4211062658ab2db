"""Volume compositing: Triton (interpreter on CPU) vs the torch reference, and closed-form cases."""
from __future__ import annotations

import math

import pytest
import torch

from conftest import KERNEL_DEVICE
from recon.kernels import composite_rays

pytestmark = pytest.mark.kernels


def _packed(counts: list[int], g: torch.Generator, sigma_scale: float = 5.0):
    ray_indices = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts, dtype=torch.long))
    s = int(sum(counts))
    sigmas = torch.rand(s, generator=g) * sigma_scale
    sigmas[torch.rand(s, generator=g) < 0.2] = 0.0  # empty space
    rgbs = torch.rand(s, 3, generator=g)
    deltas = torch.rand(s, generator=g) * 0.2 + 0.01
    ts = torch.cumsum(deltas, 0)
    return sigmas, rgbs, deltas, ts, ray_indices


@pytest.mark.parametrize("counts,sigma_scale", [
    ([1], 5.0),
    ([0, 3, 0, 7, 1], 5.0),             # empty rays
    ([17] * 5 + [0, 2, 33], 5.0),
    ([40] * 70 + [3], 200.0),          # dense: early termination, more rays than one block
])
def test_triton_matches_reference(seed, counts, sigma_scale):
    g = torch.Generator().manual_seed(seed)
    sigmas, rgbs, deltas, ts, ray_indices = _packed(counts, g, sigma_scale)
    n = len(counts)
    grads = (torch.randn(n, 3, generator=g), torch.randn(n, generator=g), torch.randn(n, generator=g))
    results = []
    deltas, ts, ray_indices = (x.to(KERNEL_DEVICE) for x in (deltas, ts, ray_indices))
    for backend in ("torch", "triton"):
        s, c = sigmas.to(KERNEL_DEVICE).requires_grad_(), rgbs.to(KERNEL_DEVICE).requires_grad_()
        out = composite_rays(s, c, deltas, ts, ray_indices, n, backend=backend)
        sum((o * go.to(KERNEL_DEVICE)).sum() for o, go in zip(out, grads)).backward()
        results.append((*[o.detach() for o in out], s.grad, c.grad))
    for ref, tri in zip(*results):
        torch.testing.assert_close(tri, ref, atol=2e-5, rtol=1e-4)


def test_reference_gradcheck(seed):
    g = torch.Generator().manual_seed(seed)
    sigmas, rgbs, deltas, ts, ray_indices = [x.double() if x.is_floating_point() else x
                                             for x in _packed([4, 0, 6], g, 3.0)]
    sigmas = sigmas.clamp_min(0.05).requires_grad_()
    rgbs = rgbs.requires_grad_()
    f = lambda s, c: composite_rays(s, c, deltas, ts, ray_indices, 3, backend="torch")  # noqa: E731
    assert torch.autograd.gradcheck(f, (sigmas, rgbs))


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_closed_form_constant_medium(backend):
    """A uniform medium: opacity 1 - exp(-sigma * length) and colour = opacity * c."""
    n_samples, sigma, length = 50, 0.7, 2.0
    deltas = torch.full((n_samples,), length / n_samples)
    ts = (torch.arange(n_samples) + 0.5) * length / n_samples
    rgb, depth, opacity = composite_rays(torch.full((n_samples,), sigma), torch.tensor([[0.2, 0.5, 0.9]]).expand(n_samples, 3),
                                         deltas, ts, torch.zeros(n_samples, dtype=torch.long), 1, backend=backend)
    expected = 1 - math.exp(-sigma * length)
    assert opacity.item() == pytest.approx(expected, rel=1e-5)
    torch.testing.assert_close(rgb[0], torch.tensor([0.2, 0.5, 0.9]) * expected)
    assert 0 < depth.item() < length * expected


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_early_termination(backend):
    """After an opaque sample the rest of the ray contributes nothing and gets no gradient."""
    sigmas = torch.tensor([100.0, 5.0, 5.0], requires_grad=True)
    rgbs = torch.rand(3, 3, requires_grad=True)
    out = composite_rays(sigmas, rgbs, torch.ones(3), torch.arange(3.0), torch.zeros(3, dtype=torch.long), 1,
                         backend=backend)
    sum(o.sum() for o in out).backward()
    assert out[2].item() == pytest.approx(1.0, abs=1e-6)
    assert torch.all(sigmas.grad[1:] == 0) and torch.all(rgbs.grad[1:] == 0)
