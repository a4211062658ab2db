"""Anchor-loss fine-tuning on a synthetic two-blob scene: frozen Gaussians bit-identical, generations, drift."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from recon.engine.edit.anchor import FinetuneConfig, anchor_loss, finetune_selection, generation_weights, new_rows
from recon.engine.edit.ops import recolor
from recon.engine.models.gaussians import GaussianModel
from recon.engine.scene.camera import Camera

sys.path.insert(0, str(Path(__file__).parent))
from test_edit_tracing import H, W, cameras, two_blobs  # noqa: E402


def test_generation_weights_hold_older_generations_more_firmly():
    config = FinetuneConfig()
    w = generation_weights(torch.tensor([0, 1, 2, 3]), 3, config)
    assert torch.allclose(w, torch.tensor([0.05 * 1.3 ** 3, 0.1 * 1.3 ** 2, 0.1 * 1.3, 0.1]))
    assert (w[1:-1] > w[2:]).all()


def test_anchor_loss_value(seed):
    params = {"means": torch.randn(5, 3), "sh0": torch.randn(5, 1, 3)}
    anchor = {k: v + 0.1 for k, v in params.items()}
    loss = anchor_loss(params, anchor, torch.full((5,), 2.0), {"means": 3.0, "sh0": 0.0})
    assert torch.isclose(loss, torch.tensor(3.0 * 2.0 * 3 * 0.01))


def test_new_rows_finds_clones_and_split_children():
    before = torch.tensor([[0.0, 0, 0], [1, 1, 1], [2, 2, 2]])
    # row 0 kept, row 1 cloned (exact copy appended), row 2 split into two moved children
    means = torch.tensor([[0.0, 0, 0], [1, 1, 1], [1, 1, 1], [2.1, 2, 2], [1.9, 2, 2]])
    rows = torch.tensor([0, 1, 1, 2, 2], dtype=torch.float64)
    assert new_rows(means, rows, before).tolist() == [False, False, True, True, True]


def blob_scene(n: int = 60):
    """A GaussianModel of two blobs, the first selected, with target views of it recoloured red."""
    params, first = two_blobs(n)
    raw = {"means": params["means"], "quats": params["quats"], "scales": params["scales"].log(),
           "opacities": torch.logit(params["opacities"]), "sh0": torch.zeros(n, 1, 3), "shN": torch.zeros(n, 0, 3)}
    model = GaussianModel(raw, sh_degree=0, background=(0.0, 0.0, 0.0))
    viewmats, Ks = cameras(4)
    cams = [Camera(W, H, float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]), vm.double().numpy())
            for vm, K in zip(viewmats, Ks)]
    edited = GaussianModel(recolor(raw, first, color=(1.0, 0.1, 0.1)), sh_degree=0, background=(0.0, 0.0, 0.0))
    return model, raw, first, [(c, edited.render(c)["rgb"]) for c in cams]


def image_error(params, views) -> float:
    model = GaussianModel(params, sh_degree=0, background=(0.0, 0.0, 0.0))
    return sum(float((model.render(c)["rgb"] - t).abs().mean()) for c, t in views) / len(views)


def test_finetune_trains_only_the_selection(seed):
    model, raw, first, views = blob_scene()
    config = FinetuneConfig(steps=20, densify_start=5, densify_stop=15, densify_every=10,
                            densify_grad_threshold=1e-6, lr_sh0=0.05)
    result = finetune_selection(model, first, views, config, extent=1.0)
    n_frozen = int((~first).sum())
    for name, value in raw.items():  # unselected Gaussians: bit-identical, in their original order
        assert torch.equal(result.params[name][:n_frozen], value[~first]), name
    assert torch.equal(model.params["means"].detach(), raw["means"])  # the input model is unchanged
    assert result.selected.sum() == result.params["means"].shape[0] - n_frozen
    assert result.generation.max() >= 1  # densification happened and started new generations
    assert result.origin.shape[0] == result.selected.sum() and result.origin.max() < first.sum()
    start, end = image_error(raw, views), image_error(result.params, views)
    print(f"finetune: mean abs error to targets {start:.4f} -> {end:.4f}")
    assert end < 0.7 * start, (start, end)


def test_anchor_loss_bounds_the_drift(seed):
    model, raw, first, views = blob_scene()
    drifts = []
    for weight in (0.0, 1e4):
        config = FinetuneConfig(steps=15, densify_start=100, densify_stop=100, lr_means=0.02, lr_sh0=0.05,
                                anchor_position=weight)
        result = finetune_selection(model, first, views, config)
        drifts.append(float((result.params["means"][result.selected] - raw["means"][first]).norm(dim=-1).mean()))
    print(f"mean position drift without / with the anchor loss: {drifts[0]:.4f} / {drifts[1]:.4f}")
    assert drifts[1] < 0.5 * drifts[0], drifts
