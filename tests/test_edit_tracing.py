"""Semantic tracing on synthetic Gaussians: the weight formula, unseen Gaussians, selection of a known group."""
from __future__ import annotations

import math

import torch

from recon.engine.edit.tracing import Selection, load_selection, save_selection, select, trace_weights
from recon.kernels import rasterize

W, H = 24, 20


def cameras(count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cameras on a circle of radius 4 in the xz-plane, looking at the origin (OpenCV axes)."""
    mats = []
    for i in range(count):
        a = 2 * math.pi * i / count + 0.3
        eye = torch.tensor([4 * math.sin(a), 0.3, -4 * math.cos(a)])
        fwd = -eye / eye.norm()
        right = torch.linalg.cross(fwd, torch.tensor([0.0, -1.0, 0.0]))
        right = right / right.norm()
        down = torch.linalg.cross(fwd, right)
        rot = torch.stack([right, down, fwd])
        m = torch.eye(4)
        m[:3, :3], m[:3, 3] = rot, -rot @ eye
        mats.append(m)
    K = torch.tensor([[20.0, 0.0, W / 2], [0.0, 20.0, H / 2], [0.0, 0.0, 1.0]])
    return torch.stack(mats), K.expand(count, 3, 3).clone()


def two_blobs(n: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Gaussians in two separate blobs (x = -0.8 and x = +0.8); returns (activated params, in_first [N])."""
    first = torch.arange(n) < n // 2
    means = torch.randn(n, 3) * 0.15 + torch.where(first[:, None], torch.tensor([-0.8, 0.0, 0.0]),
                                                   torch.tensor([0.8, 0.0, 0.0]))
    params = {"means": means, "quats": torch.nn.functional.normalize(torch.randn(n, 4), dim=-1),
              "scales": torch.full((n, 3), 0.08), "opacities": torch.full((n,), 0.8)}
    return params, first


def test_weights_follow_the_formula_and_complement(seed):
    params, _ = two_blobs(40)
    viewmats, Ks = cameras(3)
    masks = (torch.rand(3, H, W, 1) > 0.5).float()
    weights, seen = trace_weights(**params, viewmats=viewmats, Ks=Ks, width=W, height=H,
                                  masks=torch.cat([masks, 1 - masks, torch.ones_like(masks)], -1), views_per_batch=2)
    assert seen.any()
    assert torch.allclose(weights[seen, 0] + weights[seen, 1], torch.ones(int(seen.sum())), atol=1e-5)
    assert torch.allclose(weights[seen, 2], torch.ones(int(seen.sum())), atol=1e-5)
    assert (weights[~seen] == 0).all()
    # A Gaussian far behind every camera's view is never seen, hence never selected.
    far = {k: torch.cat([v, v[:1]]) for k, v in params.items()}
    far["means"][-1] = torch.tensor([0.0, 50.0, 0.0])
    weights, seen = trace_weights(**far, viewmats=viewmats, Ks=Ks, width=W, height=H, masks=torch.ones(3, H, W, 1))
    assert not seen[-1] and not select(weights, seen, 0, 0.0)[-1]


def test_tracing_selects_the_masked_blob(seed, tmp_path):
    params, first = two_blobs(60)
    viewmats, Ks = cameras(4)
    # True masks: where the first blob covers more than half of a pixel's rendered opacity.
    image, alpha, _ = rasterize(**params, colors=first.float()[:, None], viewmats=viewmats, Ks=Ks, width=W, height=H)
    masks = (image > 0.5 * alpha).float() * (alpha > 0.05).float()
    weights, seen = trace_weights(**params, viewmats=viewmats, Ks=Ks, width=W, height=H, masks=masks)
    selected = select(weights, seen, 0, 0.5)
    precision = (selected & first).sum() / selected.sum().clamp_min(1)
    recall = (selected & first).sum() / (first & seen).sum().clamp_min(1)
    assert precision >= 0.95 and recall >= 0.9, (float(precision), float(recall))
    sel = Selection(["blob"], weights, seen, selected, "blob", 0.5)
    save_selection(tmp_path, sel)
    back = load_selection(tmp_path, 60)
    assert torch.equal(back.selected, selected) and back.labels == ["blob"] and back.threshold == 0.5
