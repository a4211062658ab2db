"""absgrad: per Gaussian, the sum over pixels of |per-pixel gradient of its 2D mean|, on both backends.

Checked against a brute force that back-propagates each pixel's loss term on its own.
"""
import pytest
import torch

from conftest import KERNEL_DEVICE
from recon.kernels import rasterize

pytestmark = pytest.mark.kernels


def _scene(n: int, generator: torch.Generator):
    means = (torch.randn(n, 3, generator=generator) * 0.4 + torch.tensor([0.0, 0.0, 3.0])).requires_grad_()
    quats = torch.randn(n, 4, generator=generator)
    scales = torch.rand(n, 3, generator=generator) * 0.3 + 0.05
    opacities = torch.rand(n, generator=generator) * 0.8 + 0.1
    colors = torch.rand(n, 3, generator=generator)
    viewmats = torch.eye(4)[None]
    Ks = torch.tensor([[[12.0, 0.0, 5.5], [0.0, 12.0, 4.0], [0.0, 0.0, 1.0]]])
    return means, quats, scales, opacities, colors, viewmats, Ks


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_absgrad_matches_per_pixel_brute_force(backend, seed):
    generator = torch.Generator().manual_seed(seed)
    width, height = 11, 9  # not a multiple of the tile size
    scene = [t.to(KERNEL_DEVICE) for t in _scene(7, generator)]
    weights = torch.randn(1, height, width, 3, generator=generator).to(KERNEL_DEVICE)

    image, _, meta = rasterize(*scene, width, height, absgrad=True, tile_size=8, backend=backend)
    (image * weights).sum().backward()
    absgrad = meta["means2d"].absgrad

    brute = torch.zeros_like(absgrad)
    for y in range(height):
        for x in range(width):
            image, _, meta = rasterize(*scene, width, height, tile_size=8, backend="torch")
            (image[0, y, x] * weights[0, y, x]).sum().backward()
            brute += meta["means2d"].grad.abs()
    assert torch.isfinite(absgrad).all()
    assert brute.abs().max() > 0, f"seed {seed}: the scene has no gradient at all"
    torch.testing.assert_close(absgrad, brute, rtol=1e-4, atol=1e-6, msg=f"seed {seed}")
    # It bounds the ordinary gradient from above.
    assert (absgrad >= meta["means2d"].grad.abs() - 1e-6).all()


def test_absgrad_off_leaves_no_attribute(seed):
    generator = torch.Generator().manual_seed(seed)
    image, _, meta = rasterize(*_scene(3, generator), 11, 9)
    image.sum().backward()
    assert not hasattr(meta["means2d"], "absgrad")
