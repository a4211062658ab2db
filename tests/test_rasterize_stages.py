"""``project`` + ``rasterize_projected`` (the two public halves of ``rasterize``): same image and gradients as
``rasterize``, also when only the visible rows of each camera reach the blend (what distributed training sends)."""
from __future__ import annotations

import pytest
import torch

from random_splats import random_cameras, random_gaussians
from recon.kernels.splatting import project, rasterize, rasterize_projected


def _activated(raw: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    colors = torch.cat([raw["sh0"], raw["shN"]], dim=1)
    return raw["means"], raw["quats"], torch.exp(raw["scales"]), torch.sigmoid(raw["opacities"]), colors


def _grads(raw: dict[str, torch.Tensor], loss: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, list(raw.values())))


@pytest.mark.parametrize("n, width, height, mode", [(150, 37, 29, "rgb"), (61, 20, 33, "rgb+depth")])
def test_halves_compose_to_rasterize(seed, n, width, height, mode):
    g = torch.Generator().manual_seed(seed)
    raw = {k: v.requires_grad_() for k, v in random_gaussians(n, g).items()}
    viewmats, Ks = random_cameras(3, width, height, g)
    background = torch.rand(3, generator=g)
    weights = torch.rand(3, height, width, 4 if mode == "rgb+depth" else 3, generator=g)

    image, alpha, meta = rasterize(*_activated(raw), viewmats, Ks, width, height, sh_degree=1, mode=mode,
                                   background=background, backend="torch")
    expected = _grads(raw, (image * weights).sum() + alpha.sum())

    projected = project(*_activated(raw), viewmats, Ks, width, height, sh_degree=1, backend="torch")
    image2, alpha2, meta2 = rasterize_projected(projected, width, height, mode=mode, background=background)
    assert torch.equal(image, image2) and torch.equal(alpha, alpha2)
    assert torch.equal(meta["radii"], meta2["radii"]) and torch.equal(meta["flatten_ids"], meta2["flatten_ids"])
    for got, want in zip(_grads(raw, (image2 * weights).sum() + alpha2.sum()), expected):
        assert torch.equal(got, want)


def test_visible_rows_only_render_the_same(seed):
    """Dropping each camera's culled Gaussians (keeping order, padding with culled rows) changes nothing."""
    g = torch.Generator().manual_seed(seed)
    raw = {k: v.requires_grad_() for k, v in random_gaussians(200, g).items()}
    viewmats, Ks = random_cameras(2, 31, 26, g)
    weights = torch.rand(2, 26, 31, 3, generator=g)
    image, _, meta = rasterize(*_activated(raw), viewmats, Ks, 31, 26, sh_degree=1, backend="torch")
    expected = _grads(raw, (image * weights).sum())

    projected = project(*_activated(raw), viewmats, Ks, 31, 26, sh_degree=1, backend="torch")
    visible = (projected["radii"] > 0).any(-1)  # [C, N]
    assert 0 < int(visible.sum()) < visible.numel()  # some culled, some not: the test means something
    width = int(visible.sum(1).max())
    rows = {}
    for key in ("means2d", "conics", "colors", "opacities", "depths", "radii"):
        value = projected[key]
        per_camera = [value[c][visible[c]] for c in range(2)]
        padded = [torch.cat([v, v.new_zeros(width - v.shape[0], *v.shape[1:])]) for v in per_camera]
        rows[key] = torch.stack(padded)
    image2, _, _ = rasterize_projected(rows, 31, 26)
    torch.testing.assert_close(image2, image, rtol=0, atol=1e-6)
    for got, want in zip(_grads(raw, (image2 * weights).sum()), expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
