"""Edit operations on raw Gaussian parameters, as plain tensors.

Parameters are the raw (pre-activation) values ``GaussianModel`` stores: ``means`` [N, 3], ``quats`` [N, 4]
(wxyz), log ``scales`` [N, 3], logit ``opacities`` [N], SH ``sh0`` [N, 1, 3] and ``shN`` [N, K-1, 3].
Every op takes such a dict and a selection [N] (bool) and returns a new dict; the input is not modified.
"""
from __future__ import annotations

import math

import torch

from recon.engine.errors import ReconError
from recon.engine.models.gaussians import quat_to_rotmat, rgb_to_sh0

Splats = dict[str, torch.Tensor]


def keep_gaussians(params: Splats, keep: torch.Tensor) -> Splats:  # keep: [N] bool
    """The Gaussians where ``keep`` is True (every per-Gaussian tensor indexed alike)."""
    return {name: value.detach()[keep].clone() for name, value in params.items()}


def delete(params: Splats, selected: torch.Tensor) -> Splats:  # selected: [N] bool
    """Remove the selected Gaussians."""
    return keep_gaussians(params, ~selected)


def extract(params: Splats, selected: torch.Tensor) -> Splats:  # selected: [N] bool
    """Keep only the selected Gaussians."""
    if not bool(selected.any()):
        raise ReconError("the selection is empty: nothing to extract")
    return keep_gaussians(params, selected)


def hue_rotation(degrees: float) -> torch.Tensor:
    """The 3x3 matrix rotating RGB colours by ``degrees`` about the grey axis (hue shift keeping grey fixed)."""
    angle = math.radians(degrees)
    c, s = math.cos(angle), math.sin(angle)
    axis = torch.full((3,), 1.0 / math.sqrt(3.0), dtype=torch.float64)
    cross = torch.tensor([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]],
                         dtype=torch.float64)
    return (c * torch.eye(3, dtype=torch.float64) + s * cross + (1 - c) * torch.outer(axis, axis)).float()


def recolor(params: Splats, selected: torch.Tensor, *, color: tuple[float, float, float] | None = None,
            hue: float | None = None) -> Splats:
    """Give the selection a flat ``color`` (RGB in [0, 1]; view-dependent terms cleared) or rotate its hue.

    A hue rotation fixes the grey axis, so it maps ``SH_C0 * sh + 0.5`` exactly when applied to every SH
    coefficient: view-dependent colour rotates with the base colour.
    """
    if (color is None) == (hue is None):
        raise ReconError("recolor needs exactly one of --color R,G,B or --hue DEG")
    out = {name: value.detach().clone() for name, value in params.items()}
    if color is not None:
        rgb = torch.tensor(color, dtype=out["sh0"].dtype, device=out["sh0"].device)
        out["sh0"][selected] = rgb_to_sh0(rgb).expand_as(out["sh0"][selected])
        out["shN"][selected] = 0.0
    else:
        rot = hue_rotation(hue).to(out["sh0"])
        out["sh0"][selected] = out["sh0"][selected] @ rot.T
        out["shN"][selected] = out["shN"][selected] @ rot.T
    return out


def axis_angle_quat(rotation_deg: tuple[float, float, float]) -> torch.Tensor:
    """Unit quaternion [4] (wxyz) of the rotation vector ``rotation_deg`` (axis times angle, in degrees)."""
    vec = torch.tensor(rotation_deg, dtype=torch.float64) * (math.pi / 180.0)
    angle = float(vec.norm())
    if angle == 0.0:
        return torch.tensor([1.0, 0.0, 0.0, 0.0])
    axis = vec / angle
    return torch.cat([torch.tensor([math.cos(angle / 2)]), axis * math.sin(angle / 2)]).float()


def quat_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # [..., 4] wxyz each
    """Hamilton product a * b (apply b, then a). [..., 4]"""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([aw * bw - ax * bx - ay * by - az * bz,
                        aw * bx + ax * bw + ay * bz - az * by,
                        aw * by - ax * bz + ay * bw + az * bx,
                        aw * bz + ax * by - ay * bx + az * bw], dim=-1)


def selection_center(params: Splats, selected: torch.Tensor) -> torch.Tensor:
    """Mean position [3] of the selected Gaussians."""
    if not bool(selected.any()):
        raise ReconError("the selection is empty: nothing to transform")
    return params["means"].detach()[selected].mean(0)


def transform(params: Splats, selected: torch.Tensor, *, translate: tuple[float, float, float] = (0.0, 0.0, 0.0),
              rotate_deg: tuple[float, float, float] = (0.0, 0.0, 0.0), scale: float = 1.0,
              center: torch.Tensor | None = None) -> Splats:
    """Scale, rotate (rotation vector in degrees) and then translate the selection about ``center``.

    ``center`` defaults to the selection's mean. Positions map as x -> s R (x - c) + c + t; each Gaussian's
    orientation turns by R and its scales grow by s. View-dependent SH terms are left as they are.
    """
    if scale <= 0:
        raise ReconError(f"--scale must be positive, got {scale}")
    out = {name: value.detach().clone() for name, value in params.items()}
    c = selection_center(params, selected) if center is None else center.to(out["means"])
    q = axis_angle_quat(rotate_deg).to(out["quats"])
    rot = quat_to_rotmat(q[None])[0]
    moved = (out["means"][selected] - c) @ rot.T * scale + c
    out["means"][selected] = moved + torch.tensor(translate, dtype=moved.dtype, device=moved.device)
    out["quats"][selected] = quat_multiply(q.expand_as(out["quats"][selected]), out["quats"][selected])
    out["scales"][selected] = out["scales"][selected] + math.log(scale)
    return out
