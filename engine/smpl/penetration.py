"""Self-penetration of limbs, with every limb bone approximated by a capsule (a segment with a radius).

Each bone of an arm or a leg, and the two halves of the spine, is the segment between its posed joints; its
radius is a low quantile of the distances from the bone to the rest-pose vertices skinned mostly to it, so
touching skin is allowed and only limbs passing into each other are penalised. The residual of two capsules
is their overlap ``relu(r_a + r_b - d)`` (``d`` the distance between the two segments). Penalised pairs: the
two legs, the two arms, each arm with each leg, each arm with the spine.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

LIMBS = {
    "left_leg": (("left_hip", "left_knee"), ("left_knee", "left_ankle")),
    "right_leg": (("right_hip", "right_knee"), ("right_knee", "right_ankle")),
    "left_arm": (("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist")),
    "right_arm": (("right_shoulder", "right_elbow"), ("right_elbow", "right_wrist")),
    "spine": (("pelvis", "spine2"), ("spine2", "neck")),
}
PAIRS = (("left_leg", "right_leg"), ("left_arm", "right_arm"), ("left_arm", "left_leg"), ("left_arm", "right_leg"),
         ("right_arm", "left_leg"), ("right_arm", "right_leg"), ("left_arm", "spine"), ("right_arm", "spine"))
SPINE = ("pelvis", "spine1", "spine2", "spine3", "neck")
RADIUS_QUANTILE = 0.25


@dataclass
class LimbCapsules:
    """Capsules on the bones of a body model: capsule k runs from joint ``start_k`` to joint ``end_k`` with radius
    ``radius_k`` (metres); ``pairs`` [P, 2] index the capsule pairs that must not overlap."""

    start: torch.Tensor  # [C] long
    end: torch.Tensor  # [C] long
    radius: torch.Tensor  # [C]
    pairs: torch.Tensor  # [P, 2] long
    names: tuple[str, ...]  # "start-end" joint names of each capsule

    def overlaps(self, joints: torch.Tensor) -> torch.Tensor:
        """Overlap [B, P] (metres, 0 where apart) of every penalised capsule pair for posed ``joints`` [B, J, 3]."""
        a, b = self.pairs[:, 0], self.pairs[:, 1]
        gap = segment_distance(joints[:, self.start[a]], joints[:, self.end[a]],
                               joints[:, self.start[b]], joints[:, self.end[b]])
        return torch.relu(self.radius[a] + self.radius[b] - gap)

    def to(self, device: torch.device, dtype: torch.dtype) -> "LimbCapsules":
        return LimbCapsules(self.start.to(device), self.end.to(device), self.radius.to(device, dtype),
                            self.pairs.to(device), self.names)


def segment_distance(p0: torch.Tensor, p1: torch.Tensor, q0: torch.Tensor, q1: torch.Tensor) -> torch.Tensor:
    """Distances [...] between segments p0-p1 and q0-q1 (points [..., 3]): the closest points' parameters are
    clamped to [0, 1] in turn (Ericson, Real-Time Collision Detection, 5.1.9); parallel segments take s = 0."""
    d1, d2, r = p1 - p0, q1 - q0, p0 - q0
    a, e = (d1 * d1).sum(-1).clamp_min(1e-12), (d2 * d2).sum(-1).clamp_min(1e-12)
    b, c, f = (d1 * d2).sum(-1), (d1 * r).sum(-1), (d2 * r).sum(-1)
    denom = a * e - b * b
    s = torch.where(denom > 1e-10 * a * e, ((b * f - c * e) / denom.clamp_min(1e-20)).clamp(0, 1), torch.zeros_like(a))
    t = (b * s + f) / e
    s = torch.where(t < 0, (-c / a).clamp(0, 1), torch.where(t > 1, ((b - c) / a).clamp(0, 1), s))
    t = t.clamp(0, 1)
    return (p0 + s[..., None] * d1 - q0 - t[..., None] * d2).norm(dim=-1)


def limb_capsules(v_template: np.ndarray, weights: np.ndarray, rest_joints: np.ndarray,
                  joint_names: list[str] | tuple[str, ...]) -> LimbCapsules | None:
    """Capsules for a body model's rest mesh (``v_template`` [V, 3], skinning ``weights`` [V, J], ``rest_joints``
    [J, 3]); None when the model lacks the SMPL limb joints."""
    index = {n: j for j, n in enumerate(joint_names)}
    if any(n not in index for bones in LIMBS.values() for bone in bones for n in bone):
        return None
    owner = weights.argmax(1)
    start, end, radius, group_of, names = [], [], [], [], []
    for group, bones in LIMBS.items():
        for a, b in bones:
            ja, jb = index[a], index[b]
            members = [index[n] for n in SPINE[SPINE.index(a):SPINE.index(b)] if n in index] if group == "spine" else [ja]
            skinned = v_template[np.isin(owner, members)]
            length = float(np.linalg.norm(rest_joints[jb] - rest_joints[ja]))
            radius.append(_bone_radius(skinned, rest_joints[ja], rest_joints[jb]) if len(skinned) else 0.2 * length)
            start.append(ja), end.append(jb), group_of.append(group), names.append(f"{a}-{b}")
    group_of = np.asarray(group_of)
    pairs = [np.stack(np.meshgrid(np.nonzero(group_of == g)[0], np.nonzero(group_of == h)[0], indexing="ij"),
                      -1).reshape(-1, 2) for g, h in PAIRS]
    return LimbCapsules(torch.as_tensor(start), torch.as_tensor(end), torch.as_tensor(radius, dtype=torch.float32),
                        torch.as_tensor(np.concatenate(pairs)), tuple(names))


def _bone_radius(points: np.ndarray, p: np.ndarray, q: np.ndarray) -> float:
    """``RADIUS_QUANTILE`` of the distances of ``points`` [N, 3] to the segment p-q."""
    d = q - p
    t = np.clip((points - p) @ d / max(d @ d, 1e-12), 0.0, 1.0)
    dist = np.linalg.norm(points - (p + t[:, None] * d), axis=-1)
    return float(np.quantile(dist, RADIUS_QUANTILE))


def model_capsules(model) -> LimbCapsules | None:
    """``limb_capsules`` of an ``SMPL`` module at its template shape, on the module's device and dtype."""
    capsules = limb_capsules(model.v_template.cpu().numpy(), model.weights.cpu().numpy(),
                             model.j_template.cpu().numpy(), model.joint_names)
    return None if capsules is None else capsules.to(model.v_template.device, model.v_template.dtype)
