"""Linear blend skinning for SMPL-family body models, as batched differentiable torch functions.

The pipeline (Loper et al. 2015, "SMPL: A Skinned Multi-Person Linear Model"):

1. shape blend shapes   ``v_shaped = v_template + shapedirs . betas``
2. joint regression     ``J = J_regressor @ v_shaped``
3. pose blend shapes    ``v_posed = v_shaped + posedirs . (R(theta)[1:] - I)``
4. forward kinematics   world transforms of every joint along the kinematic tree
5. skinning             ``v = sum_k w_k G_k(theta, J) v_posed``

All functions take a leading batch dimension B and work in any float dtype.
"""
from __future__ import annotations

import torch


def wrap_axis_angle(rot_vecs: torch.Tensor) -> torch.Tensor:
    """The same rotations [..., 3] with angles in [0, pi]: an axis-angle vector near a full turn is a small
    rotation whose Jacobian in that form is nearly singular (the angle 2 pi is a singularity of the map)."""
    theta = rot_vecs.norm(dim=-1, keepdim=True)
    wrapped = torch.remainder(theta + torch.pi, 2 * torch.pi) - torch.pi  # in [-pi, pi)
    scale = torch.where(theta > torch.pi, wrapped / theta.clamp_min(torch.pi), torch.ones_like(theta))
    return rot_vecs * scale


def axis_angle_to_matrix(rot_vecs: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula: axis-angle vectors [..., 3] to rotation matrices [..., 3, 3].

    Uses the Taylor series of sin(t)/t and (1 - cos t)/t^2 near zero, so values and gradients are
    exact at the zero rotation (the usual starting pose of a fit).
    """
    theta2 = (rot_vecs * rot_vecs).sum(-1, keepdim=True)[..., None]  # [..., 1, 1]
    small = theta2 < 1e-8
    theta = torch.sqrt(torch.where(small, torch.ones_like(theta2), theta2))
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / (theta * theta))
    x, y, z = rot_vecs.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*rot_vecs.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=rot_vecs.dtype, device=rot_vecs.device)
    return eye + a * k + b * (k @ k)


def matrix_to_axis_angle(rot_mats: torch.Tensor) -> torch.Tensor:
    """Rotation matrices [..., 3, 3] to axis-angle vectors [..., 3] with angles in [0, pi], through the
    quaternion (Shepperd's choice of the largest component, stable at every angle including pi)."""
    m = rot_mats
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    candidates = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    s = torch.sqrt(candidates.clamp_min(1e-12))  # 2 |q_k| for each choice k of the largest component
    d = {(a, b): m[..., a, b] for a in range(3) for b in range(3)}
    # quaternions (w, x, y, z) computed from each choice; the one with the largest denominator is exact
    quats = torch.stack([
        torch.stack([s[..., 0] ** 2, d[2, 1] - d[1, 2], d[0, 2] - d[2, 0], d[1, 0] - d[0, 1]], -1) / (2 * s[..., 0:1]),
        torch.stack([d[2, 1] - d[1, 2], s[..., 1] ** 2, d[0, 1] + d[1, 0], d[0, 2] + d[2, 0]], -1) / (2 * s[..., 1:2]),
        torch.stack([d[0, 2] - d[2, 0], d[0, 1] + d[1, 0], s[..., 2] ** 2, d[1, 2] + d[2, 1]], -1) / (2 * s[..., 2:3]),
        torch.stack([d[1, 0] - d[0, 1], d[0, 2] + d[2, 0], d[1, 2] + d[2, 1], s[..., 3] ** 2], -1) / (2 * s[..., 3:4]),
    ], -2)  # [..., 4 choices, 4]
    best = candidates.argmax(-1)
    q = torch.gather(quats, -2, best[..., None, None].expand(*best.shape, 1, 4))[..., 0, :]
    q = q * torch.where(q[..., :1] < 0, -1.0, 1.0)
    q = q / q.norm(dim=-1, keepdim=True)
    sin_half = q[..., 1:].norm(dim=-1, keepdim=True)
    angle = 2 * torch.atan2(sin_half, q[..., :1])
    scale = torch.where(sin_half > 1e-8, angle / sin_half.clamp_min(1e-8), 2.0 + 0.0 * angle)
    return q[..., 1:] * scale


def blend_shapes(betas: torch.Tensor, shape_disps: torch.Tensor) -> torch.Tensor:
    """Per-vertex displacements [B, V, 3] from coefficients ``betas`` [B, L] and ``shape_disps`` [V, 3, L]."""
    return torch.einsum("bl,mkl->bmk", betas, shape_disps)


def vertices2joints(j_regressor: torch.Tensor, vertices: torch.Tensor) -> torch.Tensor:
    """Joint locations [B, J, 3] regressed from ``vertices`` [B, V, 3] with ``j_regressor`` [J, V]."""
    return torch.einsum("bik,ji->bjk", vertices, j_regressor)


def batch_rigid_transform(rot_mats: torch.Tensor, joints: torch.Tensor,
                          parents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward kinematics along the tree ``parents`` [J] (parents[0] = -1, parents[j] < j).

    ``rot_mats`` [B, J, 3, 3] are local rotations about each rest joint ``joints`` [B, J, 3].
    Returns the posed joints [B, J, 3] and the skinning transforms [B, J, 4, 4] that map a rest-pose
    point to its posed position when rigidly attached to each joint.
    """
    batch, n_joints = joints.shape[:2]
    rel_joints = joints.clone()
    rel_joints[:, 1:] = joints[:, 1:] - joints[:, parents[1:]]
    local = torch.cat([rot_mats, rel_joints[..., None]], dim=-1)  # [B, J, 3, 4]
    bottom = torch.zeros(batch, n_joints, 1, 4, dtype=joints.dtype, device=joints.device)
    bottom[..., 3] = 1.0
    local = torch.cat([local, bottom], dim=-2)  # [B, J, 4, 4]
    chain = [local[:, 0]]
    for j in range(1, n_joints):
        chain.append(chain[int(parents[j])] @ local[:, j])
    world = torch.stack(chain, dim=1)  # [B, J, 4, 4]
    posed_joints = world[:, :, :3, 3]
    # Remove the rest joint location so the transform applies to rest-pose coordinates.
    rest_offset = world[:, :, :3, :3] @ joints[..., None]  # [B, J, 3, 1]
    skinning = world.clone()
    skinning[:, :, :3, 3] = world[:, :, :3, 3] - rest_offset[..., 0]
    return posed_joints, skinning


def pose_features(rot_mats: torch.Tensor) -> torch.Tensor:
    """SMPL pose-corrective features [B, 9 * (J - 1)]: (R_j - I) of every non-root joint, flattened."""
    eye = torch.eye(3, dtype=rot_mats.dtype, device=rot_mats.device)
    return (rot_mats[:, 1:] - eye).reshape(rot_mats.shape[0], -1)


def lbs(betas: torch.Tensor, full_pose: torch.Tensor, v_template: torch.Tensor, shapedirs: torch.Tensor,
        posedirs: torch.Tensor, j_regressor: torch.Tensor, parents: torch.Tensor,
        weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Posed vertices [B, V, 3] and joints [B, J, 3] of a skinned body model (no global translation).

    Args:
        betas: [B, L] shape coefficients.
        full_pose: [B, J * 3] axis-angle rotations, root first.
        v_template: [V, 3] rest template.
        shapedirs: [V, 3, L] shape blend shapes.
        posedirs: [9 * (J - 1), V * 3] pose blend shapes (the smplx layout).
        j_regressor: [J, V] joint regressor.
        parents: [J] kinematic tree (parents[0] = -1).
        weights: [V, J] skinning weights.
    """
    batch = betas.shape[0]
    v_shaped = v_template[None] + blend_shapes(betas, shapedirs)
    joints = vertices2joints(j_regressor, v_shaped)
    rot_mats = axis_angle_to_matrix(full_pose.reshape(batch, -1, 3))
    pose_offsets = (pose_features(rot_mats) @ posedirs).reshape(batch, -1, 3)
    v_posed = v_shaped + pose_offsets
    posed_joints, transforms = batch_rigid_transform(rot_mats, joints, parents)
    per_vertex = (weights @ transforms.reshape(batch, -1, 16)).reshape(batch, -1, 4, 4)  # [B, V, 4, 4]
    vertices = (per_vertex[..., :3, :3] @ v_posed[..., None])[..., 0] + per_vertex[..., :3, 3]
    return vertices, posed_joints
