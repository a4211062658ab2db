"""Pure-PyTorch reference of the Gaussian splat rasterizer, one function per stage.

This is both the ground truth the Triton kernels are tested against and the CPU execution path, so every
function is vectorised and differentiable by autograd. Conventions follow gsplat: OpenCV cameras, pixel
centres at ``+0.5``, EWA projection with the Jacobian clamped to 1.3x the field of view, ``eps2d`` dilation,
opacity-aware per-axis radii, alpha clamped at ``max_alpha`` and skipped under 1/255, and a pixel stops as soon
as its transmittance would fall under 1e-4 (``T * (1 - alpha) < 1e-4``: that Gaussian is not added).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

ALPHA_THRESHOLD = 1.0 / 255.0
TRANSMITTANCE_MIN = 1e-4
MAX_EXTEND = 3.33
FOV_CLAMP = 1.3

SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)


def quat_to_rotmat(quats: torch.Tensor) -> torch.Tensor:
    """Rotation matrices [N, 3, 3] from quaternions [N, 4] (wxyz, normalised here)."""
    w, x, y, z = F.normalize(quats, dim=-1).unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]
    return torch.stack(rows, dim=-1).reshape(quats.shape[:-1] + (3, 3))


def covariance_3d(quats: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """World-space covariances [N, 3, 3] = R S S^T R^T from quats [N, 4] and linear scales [N, 3]."""
    m = quat_to_rotmat(quats) * scales[..., None, :]
    return m @ m.transpose(-1, -2)


def project_gaussians(
    means: torch.Tensor,  # [N, 3]
    quats: torch.Tensor,  # [N, 4]
    scales: torch.Tensor,  # [N, 3]
    opacities: torch.Tensor,  # [N]
    viewmats: torch.Tensor,  # [C, 4, 4]
    Ks: torch.Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    near: float = 0.01,
    far: float = 1e10,
    eps2d: float = 0.3,
    antialiased: bool = False,
) -> dict[str, torch.Tensor]:
    """Stage 1: EWA projection of every Gaussian into every camera.

    Returns a dict of ``means2d`` [C, N, 2], ``conics`` [C, N, 3] (inverse 2D covariance as a, b, c of
    [[a, b], [b, c]]), ``depths`` [C, N] (camera z), ``radii`` [C, N, 2] int32 (0 where culled),
    ``opacities`` [C, N] (times the antialiasing compensation when ``antialiased``) and ``compensations`` [C, N].
    Culled Gaussians have zero means2d/conics and never produce NaN gradients.
    """
    R = viewmats[:, None, :3, :3]  # [C, 1, 3, 3]
    t = viewmats[:, None, :3, 3]  # [C, 1, 3]
    means_c = (R @ means[None, :, :, None]).squeeze(-1) + t  # [C, N, 3]
    x, y, z = means_c.unbind(-1)
    in_depth = (z >= near) & (z <= far)
    z_safe = torch.where(in_depth, z, torch.ones_like(z))

    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]  # [C, 1]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    lim_x_pos = (width - cx) / fx + (FOV_CLAMP - 1.0) * tan_fovx
    lim_x_neg = cx / fx + (FOV_CLAMP - 1.0) * tan_fovx
    lim_y_pos = (height - cy) / fy + (FOV_CLAMP - 1.0) * tan_fovy
    lim_y_neg = cy / fy + (FOV_CLAMP - 1.0) * tan_fovy
    tx = z_safe * torch.minimum(lim_x_pos, torch.maximum(-lim_x_neg, x / z_safe))
    ty = z_safe * torch.minimum(lim_y_pos, torch.maximum(-lim_y_neg, y / z_safe))
    zero = torch.zeros_like(z_safe)
    J = torch.stack(
        [fx / z_safe, zero, -fx * tx / (z_safe * z_safe), zero, fy / z_safe, -fy * ty / (z_safe * z_safe)], dim=-1
    ).reshape(z.shape + (2, 3))  # [C, N, 2, 3]

    cov_c = R @ covariance_3d(quats, scales)[None] @ R.transpose(-1, -2)  # [C, N, 3, 3]
    cov2d = J @ cov_c @ J.transpose(-1, -2)  # [C, N, 2, 2]
    a, b, c = cov2d[..., 0, 0], cov2d[..., 0, 1], cov2d[..., 1, 1]
    det_orig = a * c - b * b
    a, c = a + eps2d, c + eps2d
    det = a * c - b * b
    valid = in_depth & (det > 0)
    det_safe = torch.where(valid, det, torch.ones_like(det))
    ratio = torch.where(valid, det_orig / det_safe, torch.ones_like(det)).clamp(min=0.0)
    compensations = torch.where(valid, torch.sqrt(ratio), zero)
    conics = torch.stack([c / det_safe, -b / det_safe, a / det_safe], dim=-1)

    opac = opacities[None].expand_as(z)
    if antialiased:
        opac = opac * compensations
    opac_safe = torch.clamp(opac.detach(), min=ALPHA_THRESHOLD)
    extend = torch.clamp(torch.sqrt(2.0 * torch.log(opac_safe / ALPHA_THRESHOLD)), max=MAX_EXTEND)
    valid = valid & (opac.detach() >= ALPHA_THRESHOLD)
    radius_x = torch.ceil(extend * torch.sqrt(torch.clamp(a.detach(), min=0.0)))
    radius_y = torch.ceil(extend * torch.sqrt(torch.clamp(c.detach(), min=0.0)))
    valid = valid & ((radius_x > 0) | (radius_y > 0))

    means2d = torch.stack([fx * x / z_safe + cx, fy * y / z_safe + cy], dim=-1)
    mx, my = means2d.detach().unbind(-1)
    inside = (mx + radius_x > 0) & (mx - radius_x < width) & (my + radius_y > 0) & (my - radius_y < height)
    valid = valid & inside

    radii = torch.stack([radius_x, radius_y], dim=-1) * valid[..., None]
    keep = valid[..., None]
    return {
        "means2d": torch.where(keep, means2d, torch.zeros_like(means2d)),
        "conics": torch.where(keep, conics, torch.zeros_like(conics)),
        "depths": z,
        "radii": radii.to(torch.int32),
        "opacities": opac,
        "compensations": compensations,
    }


def camera_centers(viewmats: torch.Tensor) -> torch.Tensor:
    """World-space camera centres [C, 3] = -R^T t of world-to-camera matrices [C, 4, 4]."""
    R, t = viewmats[:, :3, :3], viewmats[:, :3, 3]
    return -(R.transpose(-1, -2) @ t[..., None]).squeeze(-1)


def sh_basis(dirs: torch.Tensor, degree: int) -> torch.Tensor:
    """Real spherical-harmonic basis [..., (degree+1)^2] of unit directions [..., 3] (3DGS constants)."""
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, SH_C0)]
    if degree > 0:
        out += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree > 1:
        xx, yy, zz = x * x, y * y, z * z
        out += [
            SH_C2[0] * x * y,
            SH_C2[1] * y * z,
            SH_C2[2] * (2 * zz - xx - yy),
            SH_C2[3] * x * z,
            SH_C2[4] * (xx - yy),
        ]
    if degree > 2:
        out += [
            SH_C3[0] * y * (3 * xx - yy),
            SH_C3[1] * x * y * z,
            SH_C3[2] * y * (4 * zz - xx - yy),
            SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy),
            SH_C3[4] * x * (4 * zz - xx - yy),
            SH_C3[5] * z * (xx - yy),
            SH_C3[6] * x * (xx - 3 * yy),
        ]
    return torch.stack(out, dim=-1)


def sh_to_color(
    sh: torch.Tensor,  # [N, K, 3]
    means: torch.Tensor,  # [N, 3]
    viewmats: torch.Tensor,  # [C, 4, 4]
    degree: int,
) -> torch.Tensor:
    """Stage 2: view-dependent colours [C, N, 3] from SH coefficients, ``+0.5`` and clamped at 0 like 3DGS.

    The view direction is the normalised ``mean - camera centre``; only the first (degree+1)^2 of K
    coefficients are used.
    """
    n_coeffs = (degree + 1) ** 2
    dirs = F.normalize(means[None] - camera_centers(viewmats)[:, None], dim=-1)  # [C, N, 3]
    basis = sh_basis(dirs, degree)  # [C, N, n_coeffs]
    colors = torch.einsum("cnk,nkd->cnd", basis, sh[:, :n_coeffs])
    return torch.clamp_min(colors + 0.5, 0.0)


def tile_grid(width: int, height: int, tile_size: int) -> tuple[int, int]:
    """Number of tiles (across, down) covering a width x height image."""
    return math.ceil(width / tile_size), math.ceil(height / tile_size)


def tile_bounds(
    means2d: torch.Tensor, radii: torch.Tensor, width: int, height: int, tile_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-Gaussian tile rectangle [x0, x1) x [y0, y1) of its per-axis radius box, each [C, N] int64."""
    tiles_x, tiles_y = tile_grid(width, height, tile_size)
    m = means2d.detach()
    r = radii.to(m.dtype)
    x0 = torch.floor((m[..., 0] - r[..., 0]) / tile_size).clamp(0, tiles_x).long()
    x1 = torch.ceil((m[..., 0] + r[..., 0]) / tile_size).clamp(0, tiles_x).long()
    y0 = torch.floor((m[..., 1] - r[..., 1]) / tile_size).clamp(0, tiles_y).long()
    y1 = torch.ceil((m[..., 1] + r[..., 1]) / tile_size).clamp(0, tiles_y).long()
    return x0, x1, y0, y1


def intersect_tiles(
    means2d: torch.Tensor,  # [C, N, 2]
    radii: torch.Tensor,  # [C, N, 2]
    depths: torch.Tensor,  # [C, N]
    width: int,
    height: int,
    tile_size: int,
) -> dict[str, torch.Tensor]:
    """Stage 3: every (Gaussian, tile) overlap, sorted by camera, tile, then depth.

    Returns ``tiles_per_gauss`` [C, N] int32, ``isect_ids`` [M] int64 sorted keys
    ``(camera * n_tiles + tile) << 32 | float_bits(depth)``, ``flatten_ids`` [M] int64 indices into the
    flattened C*N Gaussians, and ``tile_offsets`` [C, tiles_y, tiles_x] int32 (start of each tile's range).
    The sort is stable, so equal depths keep Gaussian order and the result is deterministic.
    """
    n_cams, n = depths.shape
    tiles_x, tiles_y = tile_grid(width, height, tile_size)
    visible = (radii > 0).any(-1)
    x0, x1, y0, y1 = tile_bounds(means2d, radii, width, height, tile_size)
    counts = ((x1 - x0) * (y1 - y0) * visible).flatten()  # [C*N]
    device = depths.device
    flat = torch.repeat_interleave(torch.arange(n_cams * n, device=device), counts)
    local = torch.arange(flat.numel(), device=device) - (torch.cumsum(counts, 0) - counts)[flat]
    span = (x1 - x0).flatten()[flat].clamp(min=1)
    tile_x = x0.flatten()[flat] + local % span
    tile_y = y0.flatten()[flat] + local // span
    return _sort_intersections(flat, tile_x, tile_y, depths, counts.view(n_cams, n), tiles_x, tiles_y)


def _sort_intersections(
    flat: torch.Tensor,
    tile_x: torch.Tensor,
    tile_y: torch.Tensor,
    depths: torch.Tensor,
    counts: torch.Tensor,
    tiles_x: int,
    tiles_y: int,
) -> dict[str, torch.Tensor]:
    """Build the 64-bit keys of the intersections, sort them stably and find each tile's range."""
    n_cams, n = depths.shape
    n_tiles = tiles_x * tiles_y
    cam = flat // max(n, 1)
    tile_key = cam * n_tiles + tile_y * tiles_x + tile_x
    depth_bits = depths.detach().float().flatten().view(torch.int32)[flat].long() & 0xFFFFFFFF
    keys = (tile_key << 32) | depth_bits
    keys, order = torch.sort(keys, stable=True)
    flatten_ids = flat[order]
    all_tiles = torch.arange(n_cams * n_tiles, device=depths.device)
    tile_offsets = torch.searchsorted(keys >> 32, all_tiles).to(torch.int32)
    return {
        "tiles_per_gauss": counts.to(torch.int32),
        "isect_ids": keys,
        "flatten_ids": flatten_ids,
        "tile_offsets": tile_offsets.view(n_cams, tiles_y, tiles_x),
    }


def tile_ranges(tile_offsets: torch.Tensor, n_isects: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Start and end [C * tiles] (int64) of each tile's slice of the sorted intersections."""
    starts = tile_offsets.flatten().long()
    ends = torch.cat([starts[1:], starts.new_tensor([n_isects])])
    return starts, ends


class BlendBuffers(NamedTuple):
    """What a compiled blend kernel reads and writes (Triton and CUDA alike): float32 contiguous inputs,
    each tile's range of sorted intersections, and the outputs to fill."""

    inputs: list[torch.Tensor]  # means2d, conics, colors, opacities
    background: torch.Tensor | None  # [C, D] float32 or None
    ids: torch.Tensor  # [I] int64, sorted Gaussian ids
    starts: torch.Tensor  # [C * tiles]
    ends: torch.Tensor  # [C * tiles]
    out: torch.Tensor  # [C, H, W, D]
    trans: torch.Tensor  # [C, H, W] final transmittance
    last: torch.Tensor  # [C, H, W] int32 index of the last contributing intersection


def blend_buffers(means2d: torch.Tensor, conics: torch.Tensor, colors: torch.Tensor, opacities: torch.Tensor,
                  background: torch.Tensor | None, flatten_ids: torch.Tensor, tile_offsets: torch.Tensor,
                  width: int, height: int) -> BlendBuffers:
    """Inputs made kernel-ready and outputs allocated for a forward blend kernel."""
    inputs = [t.detach().float().contiguous() for t in (means2d, conics, colors, opacities)]
    starts, ends = tile_ranges(tile_offsets, flatten_ids.numel())
    shape = (tile_offsets.shape[0], height, width)
    dev = means2d.device
    return BlendBuffers(
        inputs, background.detach().float().contiguous() if background is not None else None,
        flatten_ids.long().contiguous(), starts, ends,
        torch.empty(*shape, colors.shape[-1], device=dev, dtype=torch.float32),
        torch.empty(shape, device=dev, dtype=torch.float32), torch.empty(shape, device=dev, dtype=torch.int32))


def blend_output_grads(v_out: torch.Tensor | None, v_alpha: torch.Tensor | None, trans: torch.Tensor,
                       depth: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The incoming gradients of a blend's (image, alpha) as contiguous float32 [C, H, W, D] and [C, H, W]
    (zeros where autograd passes None)."""
    v_out = v_out.float().contiguous() if v_out is not None else trans.new_zeros(*trans.shape, depth)
    v_alpha = v_alpha[..., 0].float().contiguous() if v_alpha is not None else torch.zeros_like(trans)
    return v_out, v_alpha


def blend_tiles(
    means2d: torch.Tensor,  # [C, N, 2]
    conics: torch.Tensor,  # [C, N, 3]
    colors: torch.Tensor,  # [C, N, D]
    opacities: torch.Tensor,  # [C, N]
    flatten_ids: torch.Tensor,  # [M]
    tile_offsets: torch.Tensor,  # [C, tiles_y, tiles_x]
    width: int,
    height: int,
    tile_size: int,
    max_alpha: float = 0.99,
    background: torch.Tensor | None = None,  # [C, D]
    absgrad: torch.Tensor | None = None,  # [C * N, 2] zeros, filled during backward
    chunk_elements: int = 1 << 23,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 4: front-to-back alpha blending per tile; returns colours [C, H, W, D] and alpha [C, H, W, 1].

    Tiles are grouped by how many Gaussians they hold; each group is padded to its largest count and
    evaluated as one [tiles, K, pixels] block (alphas, stop rule, transmittance by cumprod), so autograd
    gives the backward pass. With ``absgrad`` the backward also adds, per Gaussian, the sum over pixels of
    the absolute per-pixel gradient of its 2D mean (AbsGS / gsplat's ``absgrad``) into that buffer.
    """
    n_cams, tiles_y, tiles_x = tile_offsets.shape
    n_tiles = n_cams * tiles_y * tiles_x
    depth = colors.shape[-1]
    pixels = tile_size * tile_size
    starts, ends = tile_ranges(tile_offsets, flatten_ids.numel())
    counts = ends - starts
    order = torch.argsort(counts, descending=True)
    flat_means = means2d.reshape(-1, 2)
    flat_conics = conics.reshape(-1, 3)
    flat_colors = colors.reshape(-1, depth)
    flat_opac = opacities.reshape(-1)
    local = torch.arange(pixels, device=means2d.device)
    offset_x = (local % tile_size).to(means2d.dtype) + 0.5
    offset_y = (local // tile_size).to(means2d.dtype) + 0.5

    color_chunks = [flat_colors.new_zeros(0, pixels, depth)]
    trans_chunks = [flat_colors.new_zeros(0, pixels)]
    if flatten_ids.numel() == 0:  # nothing visible: every pixel keeps T = 1 (zero-gradient link to the inputs)
        link = 0.0 * (flat_means.sum() + flat_conics.sum() + flat_colors.sum() + flat_opac.sum())
        color_chunks.append(flat_colors.new_zeros(n_tiles, pixels, depth) + link)
        trans_chunks.append(flat_colors.new_ones(n_tiles, pixels))
    begin = 0 if flatten_ids.numel() else n_tiles
    while begin < n_tiles:
        k = max(int(counts[order[begin]]), 1)  # the largest count of this group (sorted descending)
        tiles = order[begin : begin + max(1, chunk_elements // (k * pixels))]
        slot = torch.arange(k, device=means2d.device)
        present = slot[None] < counts[tiles, None]  # [T, K]
        gid = flatten_ids[(starts[tiles, None] + slot[None]).clamp(max=flatten_ids.numel() - 1)]
        tile_xy = tiles % (tiles_y * tiles_x)
        px = (tile_xy % tiles_x * tile_size).to(means2d.dtype)[:, None] + offset_x  # [T, P]
        py = (tile_xy // tiles_x * tile_size).to(means2d.dtype)[:, None] + offset_y
        mean = flat_means[gid]  # [T, K, 2]
        conic = flat_conics[gid]
        dx = mean[..., 0, None] - px[:, None]  # [T, K, P]
        dy = mean[..., 1, None] - py[:, None]
        if absgrad is not None and dx.requires_grad:  # d(dx)/d(mean) = 1: dx's gradient is the per-pixel one
            for column, offset in ((0, dx), (1, dy)):
                offset.register_hook(_abs_accumulator(absgrad[:, column], gid[present], present))
        sigma = 0.5 * (conic[..., 0, None] * dx * dx + conic[..., 2, None] * dy * dy) + conic[..., 1, None] * dx * dy
        alpha = torch.clamp_max(flat_opac[gid][..., None] * torch.exp(-sigma), max_alpha)
        usable = present[..., None] & (sigma >= 0) & (alpha >= ALPHA_THRESHOLD)
        alpha = torch.where(usable, alpha, torch.zeros_like(alpha))
        with torch.no_grad():
            keep = torch.cumprod(1.0 - alpha, dim=1) >= TRANSMITTANCE_MIN
        alpha = alpha * keep
        survive = torch.cumprod(1.0 - alpha, dim=1)  # [T, K, P]
        trans = torch.cat([torch.ones_like(survive[:, :1]), survive[:, :-1]], dim=1)
        weights = alpha * trans
        color_chunks.append(torch.einsum("tkp,tkd->tpd", weights, flat_colors[gid]))
        trans_chunks.append(survive[:, -1])
        begin += tiles.numel()

    inverse = torch.argsort(order)
    color = torch.cat(color_chunks)[inverse]  # [tiles, P, D]
    final_t = torch.cat(trans_chunks)[inverse][..., None]  # [tiles, P, 1]
    if background is not None:
        cams = torch.arange(n_tiles, device=means2d.device) // (tiles_y * tiles_x)
        color = color + final_t * background[cams][:, None, :]
    return _untile(color, n_cams, tiles_y, tiles_x, tile_size, width, height), _untile(
        1.0 - final_t, n_cams, tiles_y, tiles_x, tile_size, width, height
    )


def _abs_accumulator(target: torch.Tensor, ids: torch.Tensor, present: torch.Tensor):
    """A backward hook adding sum over pixels of |gradient| [T, K, P] into ``target`` at Gaussians ``ids``."""

    def hook(grad: torch.Tensor) -> None:
        target.index_add_(0, ids, grad.abs().sum(-1)[present].to(target.dtype))

    return hook


def _untile(
    per_tile: torch.Tensor, n_cams: int, tiles_y: int, tiles_x: int, tile_size: int, width: int, height: int
) -> torch.Tensor:
    """[C*tiles, P, D] tile-major pixels -> [C, H, W, D] image, cropped to the image size."""
    d = per_tile.shape[-1]
    img = per_tile.view(n_cams, tiles_y, tiles_x, tile_size, tile_size, d).permute(0, 1, 3, 2, 4, 5)
    return img.reshape(n_cams, tiles_y * tile_size, tiles_x * tile_size, d)[:, :height, :width]
