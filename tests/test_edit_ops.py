"""Edit operations on plain parameter tensors: delete, extract, recolor, transform."""
from __future__ import annotations

import math

import pytest
import torch

from recon.engine.edit.ops import delete, extract, hue_rotation, recolor, transform
from recon.engine.models.gaussians import SH_C0
from recon.engine.errors import ReconError
from recon.kernels.splatting.reference import quat_to_rotmat


def random_splats(n: int, sh_rest: int = 3) -> dict[str, torch.Tensor]:
    return {"means": torch.randn(n, 3), "quats": torch.nn.functional.normalize(torch.randn(n, 4), dim=-1),
            "scales": torch.randn(n, 3) - 3, "opacities": torch.randn(n), "sh0": torch.randn(n, 1, 3),
            "shN": torch.randn(n, sh_rest, 3)}


@pytest.mark.parametrize("n", [1, 7, 50])
def test_delete_and_extract_partition_the_gaussians(seed, n):
    params = random_splats(n)
    selected = torch.rand(n) < 0.5
    selected[0] = True
    kept, only = delete(params, selected), extract(params, selected)
    for name, value in params.items():
        assert torch.equal(kept[name], value[~selected])
        assert torch.equal(only[name], value[selected])
    with pytest.raises(ReconError, match="empty"):
        extract(params, torch.zeros(n, dtype=torch.bool))


def test_recolor_color_sets_flat_rgb_and_leaves_the_rest(seed):
    params = random_splats(20)
    selected = torch.arange(20) % 3 == 0
    out = recolor(params, selected, color=(0.9, 0.1, 0.2))
    rgb = SH_C0 * out["sh0"][selected, 0] + 0.5
    assert torch.allclose(rgb, torch.tensor([0.9, 0.1, 0.2]).expand_as(rgb), atol=1e-6)
    assert torch.equal(out["shN"][selected], torch.zeros_like(out["shN"][selected]))
    for name in params:
        assert torch.equal(out[name][~selected], params[name][~selected])
    assert torch.equal(params["sh0"], params["sh0"].clone())  # input untouched (no in-place edit)


def test_hue_rotation_keeps_grey_and_cycles(seed):
    rot = hue_rotation(120.0)
    grey = torch.tensor([0.3, 0.3, 0.3])
    assert torch.allclose(rot @ grey, grey, atol=1e-6)
    assert torch.allclose(rot @ torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)
    assert torch.allclose(hue_rotation(37.0) @ hue_rotation(-37.0), torch.eye(3), atol=1e-6)
    params = random_splats(10)
    sel = torch.ones(10, dtype=torch.bool)
    out = recolor(params, sel, hue=90.0)
    before = SH_C0 * params["sh0"] + 0.5
    after = SH_C0 * out["sh0"] + 0.5
    assert torch.allclose(after, before @ hue_rotation(90.0).T, atol=1e-5)  # exact on the base colour
    with pytest.raises(ReconError):
        recolor(params, sel)


def test_transform_about_the_selection_centre(seed):
    params = random_splats(30)
    selected = torch.arange(30) < 12
    center = params["means"][selected].mean(0)
    out = transform(params, selected, translate=(0.5, -1.0, 2.0), rotate_deg=(0.0, 0.0, 90.0), scale=2.0)
    rz = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    expected = (params["means"][selected] - center) @ rz.T * 2.0 + center + torch.tensor([0.5, -1.0, 2.0])
    assert torch.allclose(out["means"][selected], expected, atol=1e-5)
    # Covariances turn with the rotation and grow by the scale: R_new S_new = rz R (2 S).
    cov = lambda q, s: quat_to_rotmat(q) @ torch.diag_embed(torch.exp(2 * s)) @ quat_to_rotmat(q).transpose(-1, -2)
    assert torch.allclose(cov(out["quats"][selected], out["scales"][selected]),
                          4 * rz @ cov(params["quats"][selected], params["scales"][selected]) @ rz.T, atol=1e-4)
    for name in params:
        assert torch.equal(out[name][~selected], params[name][~selected])
    assert torch.allclose(out["means"][selected].mean(0), center + torch.tensor([0.5, -1.0, 2.0]), atol=1e-5)
    with pytest.raises(ReconError):
        transform(params, selected, scale=-1.0)
    assert math.isclose(float((out["scales"][selected] - params["scales"][selected]).mean()), math.log(2.0),
                        rel_tol=1e-5)
