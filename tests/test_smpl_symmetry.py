"""Left-right mirroring of body poses: the mirrored pose poses the body into the mirror image of its joints."""
from __future__ import annotations

import torch

from recon.engine.models.smpl import SMPL
from recon.engine.smpl.symmetry import LEG, mirror_pose, twin
from recon.engine.smpl.synthetic import make_test_model


def _reflect(joints: torch.Tensor, names: list[str]) -> torch.Tensor:
    """Joint positions [N, J, 3] reflected across x = 0, each moved to its twin's slot."""
    return (joints * joints.new_tensor([-1.0, 1.0, 1.0]))[:, [names.index(twin(n)) for n in names]]


def test_mirrored_pose_gives_the_mirror_image_of_the_joints(seed):
    model = SMPL(make_test_model()).double()
    names = list(model.joint_names)
    rest = model.j_template[None]
    torch.testing.assert_close(_reflect(rest, names), rest, atol=1e-12, rtol=0)  # the body itself is symmetric
    gen = torch.Generator().manual_seed(seed)
    pose = 0.5 * torch.randn(3, 69, generator=gen, dtype=torch.float64)
    zeros = torch.zeros(3, 3, dtype=torch.float64)
    betas = torch.zeros(3, model.num_betas, dtype=torch.float64)
    joints = model.joints(betas, zeros, pose)
    mirrored = model.joints(betas, zeros, mirror_pose(pose, names))
    torch.testing.assert_close(mirrored, _reflect(joints, names), atol=1e-10, rtol=0)
    torch.testing.assert_close(mirror_pose(mirror_pose(pose, names), names), pose, atol=0, rtol=0)


def test_mirroring_the_legs_swaps_them_and_leaves_the_rest(seed):
    """With the legs only mirrored, each leg's joints take the reflected places of the other's relative to the
    pelvis, and every other joint stays where it was."""
    model = SMPL(make_test_model()).double()
    names = list(model.joint_names)
    gen = torch.Generator().manual_seed(seed)
    pose = 0.5 * torch.randn(2, 69, generator=gen, dtype=torch.float64)
    zeros = torch.zeros(2, 3, dtype=torch.float64)
    betas = torch.zeros(2, model.num_betas, dtype=torch.float64)
    joints = model.joints(betas, zeros, pose)
    swapped = model.joints(betas, zeros, mirror_pose(pose, names, LEG))
    legs = [names.index(n) for j in LEG for n in (j, twin(j))]
    rest = [k for k in range(len(names)) if k not in legs]
    torch.testing.assert_close(swapped[:, rest], joints[:, rest], atol=0, rtol=0)
    torch.testing.assert_close(swapped[:, legs], _reflect(joints, names)[:, legs], atol=1e-10, rtol=0)
