"""Implicit shape fields: a signed distance (``sdf``) or an occupancy probability (``occupancy``).

A ``FieldModel`` maps normalised points in [-1, 1]^3 through an input encoding (a frequency positional
encoding, or the hash grid of ``engine/models/encoding.py``; a constructor choice) and a softplus MLP to
one value. For ``sdf`` the network starts as the SDF of a sphere (geometric initialisation of SAL/IGR:
the encoding's first-layer weights start at zero); for ``occupancy`` it outputs a logit. Mesh export
uses ``field(points)``, ``level`` and ``inside``; ``render(camera)`` ray-marches the surface.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn

from recon.engine.errors import ReconError
from recon.engine.models.rays import camera_rays, ray_box_intersection
from recon.engine.scene.camera import Camera
from recon.engine.scene.scene import Normalization

# The shape's bounding box is mapped to [-SHAPE_HALF_SIZE, SHAPE_HALF_SIZE]^3 inside the [-1, 1]^3 domain.
SHAPE_HALF_SIZE = 0.8
DOMAIN = ((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0))


@dataclass(frozen=True)
class FieldArchitecture:
    """Everything that fixes a field network's shape (saved in checkpoints)."""

    kind: Literal["sdf", "occupancy"] = "sdf"
    encoding: Literal["frequency", "hashgrid"] = "frequency"
    frequencies: int = 6  # frequency encoding: sin/cos(2^k pi x), k < frequencies
    n_levels: int = 16  # hash grid
    n_features: int = 2
    log2_table_size: int = 19
    base_resolution: int = 16
    max_resolution: int = 2048
    hidden: int = 128
    layers: int = 3  # hidden layers
    init_radius: float = 0.5  # sdf: radius of the initial sphere


class FrequencyEncoding(nn.Module):
    """NeRF positional encoding: points [N, 3] -> [sin, cos](2^k pi x) [N, 6 * frequencies]."""

    def __init__(self, frequencies: int):
        super().__init__()
        self.register_buffer("scales", math.pi * 2.0 ** torch.arange(frequencies, dtype=torch.float32))

    @property
    def output_dim(self) -> int:
        return 6 * len(self.scales)

    def forward(self, points: torch.Tensor) -> torch.Tensor:  # [N, 3] -> [N, 6F]
        angles = (points[:, :, None] * self.scales).reshape(len(points), -1)
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


class _UnitCubeHashGrid(nn.Module):
    """The hash-grid encoding applied to [-1, 1]^3 points (it expects [0, 1]^3)."""

    def __init__(self, arch: FieldArchitecture):
        super().__init__()
        from recon.engine.models.encoding import HashGridEncoding

        self.grid = HashGridEncoding(n_levels=arch.n_levels, n_features=arch.n_features,
                                     log2_table_size=arch.log2_table_size, base_resolution=arch.base_resolution,
                                     max_resolution=arch.max_resolution)

    @property
    def output_dim(self) -> int:
        return self.grid.output_dim

    def forward(self, points: torch.Tensor) -> torch.Tensor:  # [N, 3] -> [N, L*F]
        return self.grid((points + 1.0) * 0.5)


def make_encoding(arch: FieldArchitecture) -> nn.Module:
    """The input encoding named by ``arch.encoding``."""
    if arch.encoding == "frequency":
        return FrequencyEncoding(arch.frequencies)
    if arch.encoding == "hashgrid":
        return _UnitCubeHashGrid(arch)
    raise ReconError(f"unknown field encoding {arch.encoding!r}; choose frequency or hashgrid")


class FieldModel(nn.Module):
    """Encoding + MLP on normalised points; ``normalization`` maps the shape's original coordinates."""

    def __init__(self, arch: FieldArchitecture, normalization: Normalization | None = None):
        super().__init__()
        if arch.kind not in ("sdf", "occupancy"):
            raise ReconError(f"unknown field kind {arch.kind!r}; choose sdf or occupancy")
        self.arch = arch
        self.normalization = normalization or Normalization()
        self.encoding = make_encoding(arch)
        widths = [3 + self.encoding.output_dim] + [arch.hidden] * arch.layers + [1]
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.activation = nn.Softplus(beta=100)
        if arch.kind == "sdf":
            self._geometric_init()

    def _geometric_init(self) -> None:
        """Start as ``|x| - init_radius`` (Atzmon & Lipman, SAL), ignoring the encoding at first."""
        with torch.no_grad():
            for layer in self.linears[:-1]:
                nn.init.normal_(layer.weight, 0.0, math.sqrt(2.0) / math.sqrt(layer.out_features))
                nn.init.zeros_(layer.bias)
            self.linears[0].weight[:, 3:].zero_()
            last = self.linears[-1]
            nn.init.normal_(last.weight, math.sqrt(math.pi) / math.sqrt(last.in_features), 1e-4)
            last.bias.fill_(-self.arch.init_radius)

    @property
    def kind(self) -> str:
        return self.arch.kind

    @property
    def level(self) -> float:
        """Iso level of the surface: 0 for an SDF, 0.5 for an occupancy probability."""
        return 0.0 if self.kind == "sdf" else 0.5

    @property
    def inside(self) -> str:
        """Which side of ``level`` is inside (marching cubes' ``inside``)."""
        return "below" if self.kind == "sdf" else "above"

    @property
    def mesh_bounds(self) -> torch.Tensor:
        """The box [2, 3] of normalised coordinates the field is defined on."""
        return torch.tensor(DOMAIN)

    @property
    def device(self) -> torch.device:
        return self.linears[0].weight.device

    def forward(self, points: torch.Tensor) -> torch.Tensor:  # [N, 3] -> [N]
        """Raw output: the signed distance (sdf) or the occupancy logit (occupancy)."""
        h = torch.cat([points, self.encoding(points)], dim=-1)
        for layer in self.linears[:-1]:
            h = self.activation(layer(h))
        return self.linears[-1](h).squeeze(-1)

    def with_gradient(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(raw values [N], spatial gradient [N, 3]), differentiable w.r.t. the parameters.

        Analytic (double backward) for the frequency encoding; central differences over one finest
        hash cell for the hash grid, whose kernel has no second derivatives (as in instant-nsr-pl).
        """
        if self.arch.encoding != "hashgrid":
            points = points.detach().requires_grad_(True)
            values = self(points)
            (grad,) = torch.autograd.grad(values.sum(), points, create_graph=True)
            return values, grad
        h = max(2.0 / self.arch.max_resolution, 1e-3)
        offsets = torch.eye(3, device=points.device, dtype=points.dtype) * h  # [3, 3]
        shifted = torch.cat([points, (points[:, None] + offsets).reshape(-1, 3),
                             (points[:, None] - offsets).reshape(-1, 3)])
        values = self(shifted)
        n = len(points)
        grad = (values[n:4 * n] - values[4 * n:]).reshape(n, 3) / (2.0 * h)
        return values[:n], grad

    @torch.no_grad()
    def field(self, points: torch.Tensor, chunk: int = 1 << 18) -> torch.Tensor:  # [N, 3] -> [N]
        """Signed distance or occupancy probability at normalised points, evaluated in chunks."""
        points = points.to(self.device, torch.float32)
        raw = torch.cat([self(c) for c in points.split(chunk)]) if len(points) else points[:, 0]
        return raw if self.kind == "sdf" else torch.sigmoid(raw)

    @torch.no_grad()
    def render(self, camera: Camera, *, background=None, samples: int = 256, chunk: int = 8192
               ) -> dict[str, torch.Tensor]:
        """Ray-march the surface seen by ``camera`` (normalised coordinates): headlight-shaded grey.

        Each ray takes ``samples`` even steps through the domain box; the first step that lands inside
        is refined by linear interpolation of the field. Returns ``rgb`` [H, W, 3], ``depth`` [H, W, 1]
        (camera z) and ``alpha`` [H, W, 1] (1 on hits).
        """
        origins, directions = camera_rays(camera, self.device)
        t_near, t_far = ray_box_intersection(origins, directions, self.mesh_bounds.to(self.device))
        t_near, t_far = t_near.clamp_min(0.0), torch.maximum(t_far, t_near.clamp_min(0.0))
        frac = torch.linspace(0.0, 1.0, samples, device=self.device)
        hit_t = torch.full_like(t_near, float("inf"))
        for start in range(0, len(origins), chunk):
            sl = slice(start, start + chunk)
            t = t_near[sl, None] + (t_far - t_near)[sl, None] * frac  # [r, S]
            values = self.field((origins[sl, None] + t[..., None] * directions[sl, None]).reshape(-1, 3))
            values = values.reshape(t.shape) - self.level
            inside = values < 0 if self.inside == "below" else values > 0
            first = torch.where(inside.any(1), inside.float().argmax(1), torch.full_like(t[:, 0], -1).long())
            prev = (first - 1).clamp_min(0)
            rows = torch.arange(len(t), device=self.device)
            v0, v1 = values[rows, prev], values[rows, first.clamp_min(0)]
            w = torch.where(first > 0, v0 / (v0 - v1).where((v0 - v1).abs() > 1e-12, torch.ones_like(v0)), 0.0)
            t_hit = t[rows, prev] + w.clamp(0, 1) * (t[rows, first.clamp_min(0)] - t[rows, prev])
            hit_t[sl] = torch.where(first >= 0, t_hit, hit_t[sl])
        hit = torch.isfinite(hit_t)
        points = origins + hit_t.where(hit, torch.zeros_like(hit_t))[:, None] * directions
        with torch.enable_grad():
            normals = torch.cat([self.with_gradient(p)[1].detach() for p in points.split(chunk)])
        normals = torch.nn.functional.normalize(normals, dim=-1)
        shade = (0.2 + 0.8 * (normals * directions).sum(-1).abs())[:, None].expand(-1, 3)
        bg = torch.as_tensor((1.0, 1.0, 1.0) if background is None else background, dtype=torch.float32,
                             device=self.device)
        rgb = torch.where(hit[:, None], shade, bg)
        forward = torch.as_tensor(camera.camera_to_world[:3, 2], dtype=torch.float32, device=self.device)
        depth = torch.where(hit, hit_t * (directions @ forward), torch.zeros_like(hit_t))
        shape = (camera.height, camera.width)
        return {"rgb": rgb.reshape(*shape, 3), "depth": depth.reshape(*shape, 1),
                "alpha": hit.float().reshape(*shape, 1)}

    def checkpoint_state(self) -> dict:
        """The checkpoint's ``model`` entry."""
        return {"arch": asdict(self.arch), "weights": self.state_dict()}

    @classmethod
    def from_checkpoint(cls, state: dict, device: torch.device | str = "cpu") -> "FieldModel":
        """Rebuild from a checkpoint dict (``model`` and ``normalization``)."""
        model = cls(FieldArchitecture(**state["model"]["arch"]), Normalization.from_dict(state["normalization"]))
        model.load_state_dict(state["model"]["weights"])
        return model.to(device).eval()
