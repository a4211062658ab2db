"""The torch reference rasterizer: a hand-computed pixel, float64 gradcheck, culling and sort determinism."""
from __future__ import annotations

import math

import pytest
import torch

from recon.kernels import rasterize
from recon.kernels.splatting import reference


def _camera(n_cams: int = 1, width: int = 40, height: int = 24, dtype=torch.float32):
    viewmats = torch.eye(4, dtype=dtype)[None].repeat(n_cams, 1, 1)
    viewmats[:, 2, 3] = 4.0
    Ks = torch.tensor([[60.0, 0, width / 2], [0, 60.0, height / 2], [0, 0, 1]], dtype=dtype)[None].repeat(n_cams, 1, 1)
    return viewmats, Ks


def test_one_gaussian_matches_hand_computation():
    # An isotropic Gaussian of scale s at depth z on the optical axis projects to a circle of variance
    # (f s / z)^2 (+ eps2d) centred at (cx, cy); the pixel (i, j) has centre (i + 0.5, j + 0.5).
    f, s, z, o, eps2d = 60.0, 0.05, 4.0, 0.8, 0.3
    viewmats, Ks = _camera()
    means = torch.zeros(1, 3)
    var = (f * s / z) ** 2 + eps2d
    img, alpha, meta = rasterize(
        means, torch.tensor([[1.0, 0, 0, 0]]), torch.full((1, 3), s), torch.tensor([o]), torch.tensor([[1.0, 0.5, 0.25]]),
        viewmats, Ks, 40, 24, eps2d=eps2d, mode="rgb+depth", background=torch.tensor([0.0, 0.0, 1.0]), backend="torch",
    )
    for i, j in [(20, 12), (19, 12), (22, 14), (17, 9)]:
        dx, dy = 20.0 - (i + 0.5), 12.0 - (j + 0.5)
        a = min(0.99, o * math.exp(-0.5 * (dx * dx + dy * dy) / var))
        a = a if a >= 1 / 255 else 0.0
        expected = torch.tensor([a, 0.5 * a, 0.25 * a + (1 - a), a * z])
        torch.testing.assert_close(img[0, j, i], expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(alpha[0, j, i, 0], torch.tensor(a), rtol=1e-5, atol=1e-6)
    extend = min(3.33, math.sqrt(2 * math.log(o * 255)))
    assert meta["radii"][0, 0].tolist() == [math.ceil(extend * math.sqrt(var))] * 2
    torch.testing.assert_close(meta["means2d"][0, 0], torch.tensor([20.0, 12.0]))


def test_two_gaussians_blend_front_to_back():
    viewmats, Ks = _camera()
    means = torch.tensor([[0.0, 0, 0], [0.0, 0, 1.0]])  # the second is behind the first
    img, alpha, _ = rasterize(
        means, torch.tensor([[1.0, 0, 0, 0]] * 2), torch.full((2, 3), 0.3), torch.tensor([0.5, 0.5]),
        torch.tensor([[1.0], [0.0]]), viewmats, Ks, 40, 24, max_alpha=0.5, backend="torch",
    )
    # At the centre pixel both alphas are clamped at max_alpha=0.5 (huge Gaussians, opacity 0.5).
    a1 = 0.5 * math.exp(-0.5 * 0.5 * (1 / ((60 * 0.3 / 4) ** 2 + 0.3)))  # offset 0.5 px in x and y
    a2 = 0.5 * math.exp(-0.5 * 0.5 * (1 / ((60 * 0.3 / 5) ** 2 + 0.3)))
    torch.testing.assert_close(img[0, 12, 20, 0], torch.tensor(a1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(alpha[0, 12, 20, 0], torch.tensor(a1 + (1 - a1) * a2), rtol=1e-5, atol=1e-6)


def test_transmittance_stop_rule():
    # 6 layers of alpha 0.95: T after 3 layers is 1.25e-4, the 4th would bring it to 6.25e-6 < 1e-4: stop.
    viewmats, Ks = _camera()
    n = 6
    means = torch.zeros(n, 3)
    means[:, 2] = torch.arange(n, dtype=torch.float32)
    img, alpha, _ = rasterize(
        means, torch.tensor([[1.0, 0, 0, 0]] * n), torch.full((n, 3), 5.0), torch.ones(n),
        torch.arange(n, dtype=torch.float32)[:, None] + 1, viewmats, Ks, 40, 24, max_alpha=0.95, backend="torch",
    )
    a = 0.95
    expected = 1 * a + 2 * a * (1 - a) + 3 * a * (1 - a) ** 2
    torch.testing.assert_close(img[0, 12, 20, 0], torch.tensor(expected), rtol=1e-4, atol=1e-5)


def test_gradcheck_float64(seed):
    n, width, height = 4, 9, 7
    gen = torch.Generator().manual_seed(seed)
    viewmats, Ks = _camera(2, width, height, torch.float64)
    Ks[:, 0, 0] = Ks[:, 1, 1] = 12.0
    viewmats[1, 0, 3] = 0.3
    means = (torch.rand(n, 3, generator=gen, dtype=torch.float64) - 0.5) * 1.5
    quats = torch.randn(n, 4, generator=gen, dtype=torch.float64)
    scales = torch.rand(n, 3, generator=gen, dtype=torch.float64) * 0.3 + 0.2
    opac = torch.rand(n, generator=gen, dtype=torch.float64) * 0.5 + 0.3
    sh = torch.randn(n, 4, 3, generator=gen, dtype=torch.float64) * 0.3

    def render(means, quats, scales, opac, sh):
        img, alpha, _ = rasterize(means, quats, scales, opac, sh, viewmats, Ks, width, height, sh_degree=1,
                                  mode="rgb+depth", antialiased=True, max_alpha=0.999, backend="torch")
        return img, alpha

    inputs = tuple(t.requires_grad_(True) for t in (means, quats, scales, opac, sh))
    assert torch.autograd.gradcheck(render, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, fast_mode=True)


def test_culling_behind_and_outside():
    viewmats, Ks = _camera()
    means = torch.tensor([[0.0, 0, -5.0], [0.0, 0, -4.0], [100.0, 0, 0], [0.0, 0, 0]], requires_grad=True)
    quats = torch.tensor([[1.0, 0, 0, 0]] * 4)
    scales = torch.full((4, 3), 0.1, requires_grad=True)
    img, alpha, meta = rasterize(means, quats, scales, torch.full((4,), 0.9), torch.ones(4, 3), viewmats, Ks, 40, 24,
                                 backend="torch")
    assert meta["radii"][0, :3].eq(0).all() and meta["radii"][0, 3].gt(0).all()
    (img.sum() + alpha.sum()).backward()
    assert torch.isfinite(means.grad).all() and torch.isfinite(scales.grad).all()
    assert means.grad[:3].eq(0).all()


def test_sort_is_deterministic_with_equal_depths():
    viewmats, Ks = _camera()
    n = 50
    means = torch.zeros(n, 3)
    means[:, :2] = torch.randn(n, 2) * 0.3
    proj = reference.project_gaussians(means, torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1), torch.full((n, 3), 0.05),
                                       torch.full((n,), 0.5), viewmats, Ks, 40, 24)
    first = reference.intersect_tiles(proj["means2d"], proj["radii"], proj["depths"], 40, 24, 16)
    again = reference.intersect_tiles(proj["means2d"], proj["radii"], proj["depths"], 40, 24, 16)
    assert torch.equal(first["flatten_ids"], again["flatten_ids"])
    keys = first["isect_ids"]
    assert torch.all(keys[1:] >= keys[:-1])
    tiles = keys >> 32
    same = tiles[1:] == tiles[:-1]
    assert torch.all(first["flatten_ids"][1:][same] > first["flatten_ids"][:-1][same])  # stable: index order


@pytest.mark.parametrize("n", [0, 1])
def test_empty_and_single(n):
    viewmats, Ks = _camera(2)
    img, alpha, meta = rasterize(torch.zeros(n, 3), torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1), torch.full((n, 3), 0.1),
                                 torch.full((n,), 0.9), torch.ones(n, 16), viewmats, Ks, 40, 24,
                                 background=torch.full((16,), 0.25), backend="torch")
    assert img.shape == (2, 24, 40, 16) and alpha.shape == (2, 24, 40, 1)
    if n == 0:
        assert torch.all(img == 0.25) and torch.all(alpha == 0)
    else:
        assert alpha.max() > 0.5


def test_reference_5000_gaussians_is_finite(seed):
    n = 5000
    viewmats, Ks = _camera(2, 65, 47)
    means = torch.randn(n, 3).requires_grad_(True)
    quats = torch.randn(n, 4)
    scales = (torch.rand(n, 3) * 0.1).requires_grad_(True)
    img, alpha, meta = rasterize(means, quats, scales, torch.rand(n), torch.rand(n, 3), viewmats, Ks, 65, 47,
                                 backend="torch")
    img.sum().backward()
    assert torch.isfinite(img).all() and torch.isfinite(means.grad).all() and torch.isfinite(scales.grad).all()
    assert meta["means2d"].grad is not None and meta["means2d"].grad.abs().sum() > 0


@pytest.mark.parametrize(
    "name,bad",
    [("means", {"means": torch.zeros(3, 2)}), ("colors", {"colors": torch.zeros(3, 65)}),
     ("colors", {"colors": torch.zeros(2, 3, 3)}), ("background", {"background": torch.zeros(4)}),
     ("sh_degree", {"sh_degree": 2})],
)
def test_bad_shapes_name_the_argument(name, bad):
    viewmats, Ks = _camera()
    args = {"means": torch.zeros(3, 3), "quats": torch.ones(3, 4), "scales": torch.ones(3, 3), "opacities": torch.ones(3),
            "colors": torch.ones(3, 3)}
    options = {k: bad.pop(k) for k in ("background", "sh_degree") if k in bad}
    args.update(bad)
    if "sh_degree" in options:
        args["colors"] = torch.zeros(3, 4, 3)  # degree 2 needs 9 coefficients
    with pytest.raises(ValueError, match=name):
        rasterize(*args.values(), viewmats, Ks, 40, 24, backend="torch", **options)


@pytest.mark.parametrize("tile_size", [12, 0, 64])
def test_unsupported_tile_size_is_refused(tile_size):
    viewmats, Ks = _camera()
    with pytest.raises(ValueError, match="tile_size"):
        rasterize(torch.zeros(3, 3), torch.ones(3, 4), torch.ones(3, 3), torch.ones(3), torch.ones(3, 3), viewmats, Ks,
                  40, 24, tile_size=tile_size, backend="torch")


def test_absgrad_with_too_many_channels_is_refused():
    viewmats, Ks = _camera()
    with pytest.raises(ValueError, match="absgrad"):
        rasterize(torch.zeros(3, 3), torch.ones(3, 4), torch.ones(3, 3), torch.ones(3), torch.ones(3, 16), viewmats, Ks,
                  40, 24, mode="rgb+depth", absgrad=True, backend="torch")
