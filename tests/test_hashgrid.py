"""Hash-grid encoding: Triton (interpreter on CPU) vs the torch reference, indexing vs a direct formula."""
from __future__ import annotations

import math

import pytest
import torch

from conftest import KERNEL_DEVICE
from recon.engine.models.encoding import HashGridEncoding, SphericalHarmonicsEncoding
from recon.kernels import hash_encode
from recon.kernels.hashgrid import level_resolutions, level_scales, per_level_scale_for
from recon.kernels.hashgrid.reference import _corner_rows, grid_index, hash_encode_reference

pytestmark = pytest.mark.kernels


def _points(n: int, scales: list[float], generator: torch.Generator) -> torch.Tensor:
    """Random points plus points on cell boundaries of level 0/1 and points outside the unit box."""
    pts = torch.rand(n, 3, generator=generator) * 1.4 - 0.2  # some outside [0, 1]
    k = min(n, 6)
    s = scales[min(1, len(scales) - 1)]
    vertex = torch.randint(0, max(1, int(s)), (k, 3), generator=generator).float()
    pts[:k] = ((vertex + 0.5) / s).clamp(0, 1)  # x * s + 0.5 lands on an integer (up to rounding)
    if n > k:
        pts[k] = torch.tensor([0.0, 1.0, 0.5])  # box faces
    return pts


@pytest.mark.parametrize("n,levels,log2_t,features,base,scale", [
    (1, 2, 6, 2, 4, 2.0),
    (37, 4, 8, 2, 4, 2.0),     # dense level 0, hashed above
    (130, 3, 10, 1, 3, 3.1),   # odd size > one block, one feature
    (65, 2, 12, 4, 16, 1.5),   # dense levels only
])
def test_triton_matches_reference(seed, n, levels, log2_t, features, base, scale):
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(levels, 2**log2_t, features, generator=g)
    pos = _points(n, level_scales(levels, base, scale), g)
    grad_out = torch.randn(n, levels * features, generator=g)
    results = []
    for backend in ("torch", "triton"):
        p, t = pos.to(KERNEL_DEVICE).requires_grad_(), table.to(KERNEL_DEVICE).requires_grad_()
        out = hash_encode(p, t, base_resolution=base, per_level_scale=scale, backend=backend)
        (out * grad_out.to(KERNEL_DEVICE)).sum().backward()
        results.append((out.detach().cpu(), p.grad.cpu(), t.grad.cpu()))
    (ref, ref_gp, ref_gt), (tri, tri_gp, tri_gt) = results
    torch.testing.assert_close(tri, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(tri_gt, ref_gt, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(tri_gp, ref_gp, atol=1e-3, rtol=1e-4)
    outside = ((pos < 0) | (pos > 1))
    assert torch.all(tri_gp[outside] == 0) and torch.all(ref_gp[outside] == 0)


def test_triton_table_only_gradient(seed):
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(3, 2**7, 2, generator=g).to(KERNEL_DEVICE).requires_grad_()
    pos = torch.rand(50, 3, generator=g).to(KERNEL_DEVICE)
    hash_encode(pos, table, base_resolution=4, per_level_scale=2.0, backend="triton").sum().backward()
    ref = table.detach().clone().requires_grad_()
    hash_encode_reference(pos, ref, 4, 2.0).sum().backward()
    torch.testing.assert_close(table.grad, ref.grad, atol=1e-4, rtol=1e-4)


def test_grid_index_matches_direct_formula(seed):
    g = torch.Generator().manual_seed(seed)
    size = 2**10
    corners = torch.randint(0, 3000, (200, 3), generator=g)
    rows = grid_index(corners, resolution=3000, table_size=size)
    for (x, y, z), row in zip(corners.tolist(), rows.tolist()):
        expected = ((x * 1) ^ ((y * 2654435761) & 0xFFFFFFFF) ^ ((z * 805459861) & 0xFFFFFFFF)) % size
        assert row == expected
    dense = grid_index(torch.tensor([[1, 2, 3]]), resolution=10, table_size=size)
    assert dense.item() == 1 + 2 * 10 + 3 * 100


@pytest.mark.parametrize("resolution,log2_t", [(7, 9), (9, 9), (3000, 10), (2**20, 19)])
def test_corner_rows_match_grid_index(seed, resolution, log2_t):
    """The per-axis row construction of the reference equals ``grid_index`` on all 8 corners, in corner order
    c = x + 2y + 4z (dense levels: 7^3 fits 2^9; hashed: 9^3 does not; huge coordinates)."""
    g = torch.Generator().manual_seed(seed)
    lo = torch.randint(0, resolution - 1, (300, 3), generator=g)
    offsets = torch.tensor([[c & 1, (c >> 1) & 1, (c >> 2) & 1] for c in range(8)])
    expected = grid_index(lo[:, None, :] + offsets, resolution, 2**log2_t)
    assert torch.equal(_corner_rows(lo, resolution, 2**log2_t), expected)


def test_encoding_matches_trilinear_by_hand(seed):
    """One point, one hashed level: the trilinear blend of the 8 corner rows, written out directly."""
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(1, 2**6, 2, generator=g, dtype=torch.float64)
    p = torch.rand(1, 3, generator=g, dtype=torch.float64)
    scale = 9.0 - 1.0  # base 9, one level
    pos = p[0] * scale + 0.5
    lo = torch.floor(pos).long().tolist()
    frac = (pos - torch.floor(pos)).tolist()
    expected = torch.zeros(2, dtype=torch.float64)
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                x, y, z = lo[0] + dx, lo[1] + dy, lo[2] + dz
                row = (x ^ ((y * 2654435761) & 0xFFFFFFFF) ^ ((z * 805459861) & 0xFFFFFFFF)) % 64
                w = (frac[0] if dx else 1 - frac[0]) * (frac[1] if dy else 1 - frac[1]) * (frac[2] if dz else 1 - frac[2])
                expected += w * table[0, row]
    torch.testing.assert_close(hash_encode_reference(p, table, 9, 1.0)[0], expected)


def test_reference_gradcheck(seed):
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(2, 2**6, 2, generator=g, dtype=torch.float64, requires_grad=True)
    pos = (torch.rand(5, 3, generator=g, dtype=torch.float64) * 0.8 + 0.1).requires_grad_()
    assert torch.autograd.gradcheck(lambda p, t: hash_encode_reference(p, t, 4, 2.0), (pos, table))


def test_level_conventions():
    b = per_level_scale_for(16, 16, 2048)
    assert math.isclose(b, math.exp((math.log(2048) - math.log(16)) / 15))
    scales = level_scales(16, 16, b)
    assert math.isclose(scales[0], 15.0) and math.isclose(scales[-1], 2047.0, rel_tol=1e-9)
    assert level_resolutions([15.0, 15.2]) == [17, 18]


def test_bad_table_size():
    with pytest.raises(ValueError, match="power of two"):
        hash_encode(torch.rand(4, 3), torch.zeros(2, 100, 2), base_resolution=4, per_level_scale=2.0)


def test_modules_shapes_and_half_table(seed):
    enc = HashGridEncoding(n_levels=4, n_features=2, log2_table_size=10, base_resolution=4, max_resolution=64)
    pts = torch.rand(9, 3)
    out = enc(pts)
    assert out.shape == (9, 8) and out.dtype == torch.float32
    half = HashGridEncoding(n_levels=2, n_features=2, log2_table_size=8, dtype=torch.float16)
    out = half(pts)
    out.sum().backward()
    assert half.table.grad.dtype == torch.float16 and torch.isfinite(out).all()
    sh = SphericalHarmonicsEncoding(4)(torch.nn.functional.normalize(torch.randn(7, 3), dim=-1))
    assert sh.shape == (7, 16)
    # Orthonormality of the basis over the sphere (Monte Carlo, 20k directions).
    d = torch.nn.functional.normalize(torch.randn(20000, 3, dtype=torch.float64), dim=-1)
    basis = SphericalHarmonicsEncoding(4)(d)
    gram = basis.T @ basis * (4 * math.pi / len(d))
    torch.testing.assert_close(gram, torch.eye(16, dtype=torch.float64), atol=0.08, rtol=0)
