"""Hash-grid NeRF (instant-ngp style): density and colour MLPs over a hash encoding, volume-rendered.

The field lives in a unit cube [0, 1]^3: for object scenes the affine image of an axis-aligned box, for
unbounded scenes the mip-NeRF 360 contraction of space (radius-2 ball) scaled into the cube. Points are
in normalised scene coordinates. Density is ``exp`` of the first MLP output (clamped, "truncated
exponential" gradient); colour comes from a second MLP over geometry features and the view direction's
SH (degree 4) encoding.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from recon.engine.models.encoding import HashGridEncoding, SphericalHarmonicsEncoding
from recon.engine.models.rays import (box_sample_edges, camera_rays, ray_box_intersection,
                                      unbounded_sample_edges)
from recon.engine.scene.camera import Camera
from recon.engine.train.occupancy_grid import OccupancyGrid
from recon.kernels import composite_rays
from recon.kernels.volume import packed_transmittance

EARLY_STOP = 1e-4  # transmittance below which samples are dropped (composite_rays' rule)


class _TruncExp(torch.autograd.Function):
    """exp(x) whose gradient is computed with x clamped to 15 (stable density activation)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x.clamp(-15, 15))


def contract(points: torch.Tensor) -> torch.Tensor:  # [N, 3] -> [N, 3] in the radius-2 ball
    """mip-NeRF 360 contraction: identity inside the unit ball, ``(2 - 1/|x|) x/|x|`` outside."""
    norm = points.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    return torch.where(norm <= 1.0, points, (2.0 - 1.0 / norm) * points / norm)


@dataclass(frozen=True)
class NerfArchitecture:
    """Everything that fixes the shapes of a NeRF's parameters and its sampling."""

    bounded: bool = True
    box: tuple[tuple[float, float, float], tuple[float, float, float]] = ((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0))
    n_levels: int = 16
    n_features: int = 2
    log2_table_size: int = 19
    base_resolution: int = 16
    max_resolution: int = 2048
    hidden: int = 64
    geo_features: int = 15
    n_samples: int = 128
    near: float = 0.05
    far: float = 1000.0
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)


class NerfModel(nn.Module):
    """A hash-grid radiance field with an occupancy grid; ``render(camera)`` gives rgb, depth and alpha."""

    def __init__(self, arch: NerfArchitecture, grid: OccupancyGrid | None = None):
        super().__init__()
        self.arch = arch
        self.encoding = HashGridEncoding(arch.n_levels, arch.n_features, arch.log2_table_size,
                                         arch.base_resolution, arch.max_resolution)
        self.direction_encoding = SphericalHarmonicsEncoding(4)
        self.density_mlp = nn.Sequential(nn.Linear(self.encoding.output_dim, arch.hidden), nn.ReLU(),
                                         nn.Linear(arch.hidden, 1 + arch.geo_features))
        self.color_mlp = nn.Sequential(
            nn.Linear(self.direction_encoding.output_dim + arch.geo_features, arch.hidden), nn.ReLU(),
            nn.Linear(arch.hidden, arch.hidden), nn.ReLU(), nn.Linear(arch.hidden, 3))
        self.register_buffer("box", torch.tensor(arch.box, dtype=torch.float32))
        self.grid = grid or OccupancyGrid(1)

    # ----- the field -------------------------------------------------------------------------------
    def to_unit(self, points: torch.Tensor) -> torch.Tensor:  # [N, 3] -> [N, 3]
        """Normalised scene points to the field's unit cube (outside [0, 1] means outside the box)."""
        if self.arch.bounded:
            return (points - self.box[0]) / (self.box[1] - self.box[0])
        return contract(points) / 4.0 + 0.5

    def _field(self, unit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Densities [N] and geometry features [N, G] at unit-cube points."""
        out = self.density_mlp(self.encoding(unit))
        return _TruncExp.apply(out[:, 0].clamp_max(20.0)), out[:, 1:]

    def unit_density(self, unit: torch.Tensor) -> torch.Tensor:  # [N, 3] -> [N]
        """Density at unit-cube points (what the occupancy grid samples)."""
        return self._field(unit)[0]

    @torch.no_grad()
    def density(self, points: torch.Tensor) -> torch.Tensor:  # [N, 3] -> [N]
        """Density at normalised scene points; zero outside an object scene's box."""
        unit = self.to_unit(points.to(self.box.device, torch.float32))
        inside = ((unit >= 0) & (unit <= 1)).all(-1)
        sigma = torch.cat([self.unit_density(chunk) for chunk in unit.split(2**18)]) if len(unit) else unit[:, 0]
        return torch.where(inside, sigma, torch.zeros_like(sigma))

    @property
    def device(self) -> torch.device:
        return self.box.device

    @property
    def nominal_step(self) -> float:
        """Typical sample spacing: box diagonal / samples (object scenes), 2 / samples (contracted)."""
        size = float((self.box[1] - self.box[0]).norm()) if self.arch.bounded else 2.0
        return size / self.arch.n_samples

    @property
    def mesh_level(self) -> float:
        """Density iso-level for meshes: half the light is absorbed over 1% of the box size."""
        size = float((self.box[1] - self.box[0]).max()) if self.arch.bounded else 2.0
        return math.log(2.0) / (0.01 * size)

    @property
    def mesh_bounds(self) -> np.ndarray:
        """Box [2, 3] (normalised coordinates) that holds the surface: the object box, or [-1, 1]^3."""
        return self.box.cpu().numpy().astype(np.float64) if self.arch.bounded else np.array([[-1.0] * 3, [1.0] * 3])

    def _colors(self, geo: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.color_mlp(torch.cat([self.direction_encoding(directions), geo], dim=-1)))

    # ----- rendering ---------------------------------------------------------------------------------
    def _sample_edges(self, origins: torch.Tensor, directions: torch.Tensor, jitter: torch.Tensor | None):
        """Interval edges [R, n + 1] and which intervals lie on the ray's valid range [R, n]."""
        n = self.arch.n_samples
        if self.arch.bounded:
            t_near, t_far = ray_box_intersection(origins, directions, self.box, self.arch.near)
            step = float((self.box[1] - self.box[0]).norm()) / n
            edges = box_sample_edges(t_near, t_far, step, n, jitter)
            valid = (edges[:, 1:] <= t_far[:, None]) & (t_far > t_near)[:, None]
            return edges, valid
        edges = unbounded_sample_edges(len(origins), n, self.arch.near, self.arch.far, jitter, origins.device)
        return edges, torch.ones(len(origins), n, dtype=torch.bool, device=origins.device)

    def render_rays(self, origins: torch.Tensor,  # [R, 3]
                    directions: torch.Tensor,  # [R, 3] unit
                    background: torch.Tensor,  # [R, 3] or [3]
                    jitter: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Volume-render rays: rgb [R, 3] (over ``background``), depth [R], opacity [R], samples used."""
        edges, valid = self._sample_edges(origins, directions, jitter)
        mids = 0.5 * (edges[:, 1:] + edges[:, :-1])  # [R, n]
        points = origins[:, None, :] + directions[:, None, :] * mids[..., None]  # [R, n, 3]
        unit = self.to_unit(points)
        keep = valid & self.grid.is_occupied(unit.reshape(-1, 3)).reshape(valid.shape)
        ray_idx, sample_idx = keep.nonzero(as_tuple=True)
        deltas = (edges[:, 1:] - edges[:, :-1])[ray_idx, sample_idx]
        if torch.is_grad_enabled():  # train only the samples that can receive a gradient
            ray_idx, sample_idx, deltas = self._visible(unit, ray_idx, sample_idx, deltas, len(origins))
        sigma, geo = self._field(unit[ray_idx, sample_idx])
        rgbs = self._colors(geo, directions[ray_idx])
        rgb, depth, opacity = composite_rays(sigma, rgbs, deltas, mids[ray_idx, sample_idx], ray_idx, len(origins),
                                             early_stop=EARLY_STOP)
        rgb = rgb + (1.0 - opacity[:, None]) * background
        return {"rgb": rgb, "depth": depth, "opacity": opacity, "samples": len(ray_idx)}

    @torch.no_grad()
    def _visible(self, unit: torch.Tensor, ray_idx: torch.Tensor, sample_idx: torch.Tensor, deltas: torch.Tensor,
                 n_rays: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The packed samples whose transmittance is at least ``EARLY_STOP`` (nerfacc's two-pass sampling).

        ``composite_rays`` gives the others weight 0, so they add nothing to the image or the gradient;
        one density-only pass without autograd finds them, and the differentiable pass skips them.
        """
        chunks = zip(ray_idx.split(2**16), sample_idx.split(2**16))
        sigma = torch.cat([self.unit_density(unit[r, s]) for r, s in chunks])
        alive = packed_transmittance(sigma * deltas, ray_idx, n_rays) >= EARLY_STOP
        return ray_idx[alive], sample_idx[alive], deltas[alive]

    @torch.no_grad()
    def render(self, camera: Camera, *, background=None, chunk: int = 4096) -> dict[str, torch.Tensor]:
        """Render one view: rgb [H, W, 3], depth [H, W, 1] (expected camera z of the visible surface, like
        the Gaussian renderer's), alpha [H, W, 1]."""
        device = self.box.device
        bg = torch.as_tensor(self.arch.background if background is None else background,
                             dtype=torch.float32, device=device).reshape(3)
        origins, directions = camera_rays(camera, device)
        parts = [self.render_rays(o, d, bg) for o, d in zip(origins.split(chunk), directions.split(chunk))]
        rgb = torch.cat([p["rgb"] for p in parts]).clamp(0, 1)
        opacity = torch.cat([p["opacity"] for p in parts])
        forward = torch.as_tensor(camera.camera_to_world[:3, 2], dtype=torch.float32, device=device)
        depth = torch.cat([p["depth"] for p in parts]) / opacity.clamp_min(1e-6) * (directions @ forward)
        h, w = camera.height, camera.width
        return {"rgb": rgb.reshape(h, w, 3), "depth": depth.reshape(h, w, 1), "alpha": opacity.reshape(h, w, 1)}

    # ----- checkpoints -------------------------------------------------------------------------------
    def checkpoint_state(self) -> dict:
        """What ``from_checkpoint`` needs (the trainer adds optimiser, step and RNG state)."""
        return {"architecture": asdict(self.arch), "model": self.state_dict(), "occupancy": self.grid.state_dict()}

    @classmethod
    def from_checkpoint(cls, state: dict, device: torch.device | str = "cpu") -> "NerfModel":
        """Rebuild a model (and its occupancy grid) from a saved checkpoint."""
        arch = state["architecture"]
        arch = NerfArchitecture(**{**arch, "box": tuple(tuple(v) for v in arch["box"]),
                                   "background": tuple(arch["background"])})
        model = cls(arch, OccupancyGrid.from_state_dict(state["occupancy"], device))
        model.load_state_dict(state["model"])
        return model.to(device)
