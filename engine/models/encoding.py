"""Input encodings for neural fields: the multiresolution hash grid and real spherical harmonics."""
from __future__ import annotations

import torch
from torch import nn

from recon.kernels import hash_encode
from recon.kernels.hashgrid import per_level_scale_for


class HashGridEncoding(nn.Module):
    """instant-ngp hash-grid encoding: points in [0, 1]^3 [N, 3] -> features [N, n_levels * n_features].

    Points outside the unit box are clamped to it (zero gradient there). The table is a float32 (or
    float16) parameter [n_levels, 2**log2_table_size, n_features] initialised uniformly in +-1e-4.
    """

    def __init__(self, n_levels: int = 16, n_features: int = 2, log2_table_size: int = 19,
                 base_resolution: int = 16, max_resolution: int = 2048, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.n_levels, self.n_features = n_levels, n_features
        self.log2_table_size = log2_table_size
        self.base_resolution, self.max_resolution = base_resolution, max_resolution
        self.per_level_scale = per_level_scale_for(n_levels, base_resolution, max_resolution)
        table = torch.empty(n_levels, 2**log2_table_size, n_features, dtype=dtype).uniform_(-1e-4, 1e-4)
        self.table = nn.Parameter(table)

    @property
    def output_dim(self) -> int:
        return self.n_levels * self.n_features

    def forward(self, points: torch.Tensor) -> torch.Tensor:  # [N, 3] -> [N, L*F]
        return hash_encode(points, self.table, base_resolution=self.base_resolution,
                           per_level_scale=self.per_level_scale)


def spherical_harmonics(directions: torch.Tensor, degree: int = 4) -> torch.Tensor:
    """Real spherical-harmonic basis of unit ``directions`` [N, 3] -> [N, degree**2] (degree 1..4)."""
    if not 1 <= degree <= 4:
        raise ValueError(f"spherical harmonics degree must be 1..4, got {degree}")
    x, y, z = directions.unbind(-1)
    out = [torch.full_like(x, 0.28209479177387814)]
    if degree > 1:
        out += [-0.48860251190291987 * y, 0.48860251190291987 * z, -0.48860251190291987 * x]
    if degree > 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [1.0925484305920792 * x * y, -1.0925484305920792 * y * z,
                0.94617469575755997 * zz - 0.31539156525252005,
                -1.0925484305920792 * x * z, 0.54627421529603959 * (xx - yy)]
    if degree > 3:
        out += [0.59004358992664352 * y * (-3.0 * xx + yy), 2.8906114426405538 * x * y * z,
                0.45704579946446572 * y * (1.0 - 5.0 * zz), 0.3731763325901154 * z * (5.0 * zz - 3.0),
                0.45704579946446572 * x * (1.0 - 5.0 * zz), 1.4453057213202769 * z * (xx - yy),
                0.59004358992664352 * x * (-xx + 3.0 * yy)]
    return torch.stack(out, dim=-1)


class SphericalHarmonicsEncoding(nn.Module):
    """View-direction encoding: unit directions [N, 3] -> SH basis [N, degree**2] (no parameters)."""

    def __init__(self, degree: int = 4):
        super().__init__()
        self.degree = degree

    @property
    def output_dim(self) -> int:
        return self.degree**2

    def forward(self, directions: torch.Tensor) -> torch.Tensor:
        return spherical_harmonics(directions, self.degree)
