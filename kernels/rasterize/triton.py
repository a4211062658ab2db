"""Triton kernels of the rasterizer stages, with the same names and signatures as ``reference.py``.

* ``project_gaussians``: forward in a Triton kernel; its backward re-runs the torch reference under autograd
  (the projection is per-Gaussian and cheap next to blending).
* ``sh_to_color``: forward and backward in one Triton kernel (a flag picks the direction).
* ``blend_tiles``: forward and backward Triton kernels, one program per (camera, tile). The backward walks
  each tile back to front from the last contributing Gaussian, reduces each Gaussian's gradients over the
  tile's pixels and issues one atomic add per Gaussian per tile.
Tile intersection (stage 3) is the shared torch code of ``reference.intersect_tiles`` (sort included).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from recon.kernels.rasterize import reference

PROJECT_BLOCK = 128
# Compiled kernels may only read constexpr globals.
ALPHA_THRESHOLD = tl.constexpr(reference.ALPHA_THRESHOLD)
TRANSMITTANCE_MIN = tl.constexpr(reference.TRANSMITTANCE_MIN)
MAX_EXTEND = tl.constexpr(reference.MAX_EXTEND)
FOV_MARGIN = tl.constexpr(reference.FOV_CLAMP - 1.0)


@triton.jit
def _project_kernel(
    means_ptr, quats_ptr, scales_ptr, opac_ptr, viewmats_ptr, ks_ptr,
    means2d_ptr, conics_ptr, depths_ptr, radii_ptr, opac_out_ptr, comp_ptr,
    N, width, height, near, far, eps2d,
    ANTIALIASED: tl.constexpr, BLOCK: tl.constexpr,
):
    cam = tl.program_id(1)
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = idx < N
    px = tl.load(means_ptr + idx * 3 + 0, mask=m, other=0.0)
    py = tl.load(means_ptr + idx * 3 + 1, mask=m, other=0.0)
    pz = tl.load(means_ptr + idx * 3 + 2, mask=m, other=0.0)
    qw = tl.load(quats_ptr + idx * 4 + 0, mask=m, other=1.0)
    qx = tl.load(quats_ptr + idx * 4 + 1, mask=m, other=0.0)
    qy = tl.load(quats_ptr + idx * 4 + 2, mask=m, other=0.0)
    qz = tl.load(quats_ptr + idx * 4 + 3, mask=m, other=0.0)
    sx = tl.load(scales_ptr + idx * 3 + 0, mask=m, other=0.0)
    sy = tl.load(scales_ptr + idx * 3 + 1, mask=m, other=0.0)
    sz = tl.load(scales_ptr + idx * 3 + 2, mask=m, other=0.0)
    opac = tl.load(opac_ptr + idx, mask=m, other=0.0)

    vm = viewmats_ptr + cam * 16
    r00, r01, r02, t0 = tl.load(vm + 0), tl.load(vm + 1), tl.load(vm + 2), tl.load(vm + 3)
    r10, r11, r12, t1 = tl.load(vm + 4), tl.load(vm + 5), tl.load(vm + 6), tl.load(vm + 7)
    r20, r21, r22, t2 = tl.load(vm + 8), tl.load(vm + 9), tl.load(vm + 10), tl.load(vm + 11)
    fx, cx = tl.load(ks_ptr + cam * 9 + 0), tl.load(ks_ptr + cam * 9 + 2)
    fy, cy = tl.load(ks_ptr + cam * 9 + 4), tl.load(ks_ptr + cam * 9 + 5)

    x = r00 * px + r01 * py + r02 * pz + t0
    y = r10 * px + r11 * py + r12 * pz + t1
    z = r20 * px + r21 * py + r22 * pz + t2
    in_depth = (z >= near) & (z <= far)
    zs = tl.where(in_depth, z, 1.0)

    # Rotation of the normalised quaternion, scaled columns M = R diag(s), covariance M M^T.
    qn = tl.maximum(tl.sqrt(qw * qw + qx * qx + qy * qy + qz * qz), 1e-12)
    qw, qx, qy, qz = qw / qn, qx / qn, qy / qn, qz / qn
    m00 = (1 - 2 * (qy * qy + qz * qz)) * sx
    m01 = 2 * (qx * qy - qw * qz) * sy
    m02 = 2 * (qx * qz + qw * qy) * sz
    m10 = 2 * (qx * qy + qw * qz) * sx
    m11 = (1 - 2 * (qx * qx + qz * qz)) * sy
    m12 = 2 * (qy * qz - qw * qx) * sz
    m20 = 2 * (qx * qz - qw * qy) * sx
    m21 = 2 * (qy * qz + qw * qx) * sy
    m22 = (1 - 2 * (qx * qx + qy * qy)) * sz
    # Camera-space M: W = R_view M, so the camera covariance is W W^T.
    w00 = r00 * m00 + r01 * m10 + r02 * m20
    w01 = r00 * m01 + r01 * m11 + r02 * m21
    w02 = r00 * m02 + r01 * m12 + r02 * m22
    w10 = r10 * m00 + r11 * m10 + r12 * m20
    w11 = r10 * m01 + r11 * m11 + r12 * m21
    w12 = r10 * m02 + r11 * m12 + r12 * m22
    w20 = r20 * m00 + r21 * m10 + r22 * m20
    w21 = r20 * m01 + r21 * m11 + r22 * m21
    w22 = r20 * m02 + r21 * m12 + r22 * m22

    tan_fovx = 0.5 * width / fx
    tan_fovy = 0.5 * height / fy
    lim_x_pos = (width - cx) / fx + FOV_MARGIN * tan_fovx
    lim_x_neg = cx / fx + FOV_MARGIN * tan_fovx
    lim_y_pos = (height - cy) / fy + FOV_MARGIN * tan_fovy
    lim_y_neg = cy / fy + FOV_MARGIN * tan_fovy
    tx = zs * tl.minimum(lim_x_pos, tl.maximum(-lim_x_neg, x / zs))
    ty = zs * tl.minimum(lim_y_pos, tl.maximum(-lim_y_neg, y / zs))
    j00 = fx / zs
    j02 = -fx * tx / (zs * zs)
    j11 = fy / zs
    j12 = -fy * ty / (zs * zs)
    # Rows of J W (2 x 3); the 2D covariance is (J W)(J W)^T.
    a0 = j00 * w00 + j02 * w20
    a1 = j00 * w01 + j02 * w21
    a2 = j00 * w02 + j02 * w22
    b0 = j11 * w10 + j12 * w20
    b1 = j11 * w11 + j12 * w21
    b2 = j11 * w12 + j12 * w22
    ca = a0 * a0 + a1 * a1 + a2 * a2
    cb = a0 * b0 + a1 * b1 + a2 * b2
    cc = b0 * b0 + b1 * b1 + b2 * b2
    det_orig = ca * cc - cb * cb
    ca = ca + eps2d
    cc = cc + eps2d
    det = ca * cc - cb * cb
    valid = in_depth & (det > 0)
    det_safe = tl.where(valid, det, 1.0)
    comp = tl.where(valid, tl.sqrt(tl.maximum(det_orig / det_safe, 0.0)), 0.0)
    if ANTIALIASED:
        opac = opac * comp
    extend = tl.minimum(tl.sqrt(2.0 * tl.log(tl.maximum(opac, ALPHA_THRESHOLD) / ALPHA_THRESHOLD)), MAX_EXTEND)
    valid = valid & (opac >= ALPHA_THRESHOLD)
    rad_x = tl.ceil(extend * tl.sqrt(tl.maximum(ca, 0.0)))
    rad_y = tl.ceil(extend * tl.sqrt(tl.maximum(cc, 0.0)))
    valid = valid & ((rad_x > 0) | (rad_y > 0))
    u = fx * x / zs + cx
    v = fy * y / zs + cy
    valid = valid & (u + rad_x > 0) & (u - rad_x < width) & (v + rad_y > 0) & (v - rad_y < height)

    out = cam * N + idx
    tl.store(means2d_ptr + out * 2 + 0, tl.where(valid, u, 0.0), mask=m)
    tl.store(means2d_ptr + out * 2 + 1, tl.where(valid, v, 0.0), mask=m)
    tl.store(conics_ptr + out * 3 + 0, tl.where(valid, cc / det_safe, 0.0), mask=m)
    tl.store(conics_ptr + out * 3 + 1, tl.where(valid, -cb / det_safe, 0.0), mask=m)
    tl.store(conics_ptr + out * 3 + 2, tl.where(valid, ca / det_safe, 0.0), mask=m)
    tl.store(depths_ptr + out, z, mask=m)
    tl.store(radii_ptr + out * 2 + 0, tl.where(valid, rad_x, 0.0).to(tl.int32), mask=m)
    tl.store(radii_ptr + out * 2 + 1, tl.where(valid, rad_y, 0.0).to(tl.int32), mask=m)
    tl.store(opac_out_ptr + out, opac, mask=m)
    tl.store(comp_ptr + out, comp, mask=m)


_PROJECT_OUTPUTS = ("means2d", "conics", "depths", "radii", "opacities", "compensations")


class _Project(torch.autograd.Function):
    """Triton projection forward; backward by autograd over ``reference.project_gaussians``."""

    @staticmethod
    def forward(ctx, means, quats, scales, opacities, viewmats, Ks, options):
        n_cams, n = viewmats.shape[0], means.shape[0]
        width, height, near, far, eps2d, antialiased = options
        f32 = dict(device=means.device, dtype=torch.float32)
        outs = (torch.empty(n_cams, n, 2, **f32), torch.empty(n_cams, n, 3, **f32), torch.empty(n_cams, n, **f32),
                torch.empty(n_cams, n, 2, device=means.device, dtype=torch.int32), torch.empty(n_cams, n, **f32),
                torch.empty(n_cams, n, **f32))
        if n > 0:
            ins = [t.detach().float().contiguous() for t in (means, quats, scales, opacities, viewmats, Ks)]
            grid = (triton.cdiv(n, PROJECT_BLOCK), n_cams)
            _project_kernel[grid](*ins, *outs, n, width, height, near, far, eps2d,
                                  ANTIALIASED=bool(antialiased), BLOCK=PROJECT_BLOCK)
        ctx.save_for_backward(means, quats, scales, opacities, viewmats, Ks)
        ctx.options = options
        ctx.mark_non_differentiable(outs[3])
        return outs

    @staticmethod
    def backward(ctx, *grads):
        inputs = [t.detach().requires_grad_(need) for t, need in zip(ctx.saved_tensors, ctx.needs_input_grad)]
        with torch.enable_grad():
            out = reference.project_gaussians(*inputs, *ctx.options)
            pairs = [(out[k], g) for k, g in zip(_PROJECT_OUTPUTS, grads) if k != "radii" and g is not None]
            wanted = [t for t in inputs if t.requires_grad]
            got = torch.autograd.grad([p for p, _ in pairs], wanted, [g for _, g in pairs], allow_unused=True)
        got = iter(got)
        return (*[next(got) if t.requires_grad else None for t in inputs], None)


def project_gaussians(means, quats, scales, opacities, viewmats, Ks, width, height, near=0.01, far=1e10, eps2d=0.3,
                      antialiased=False) -> dict[str, torch.Tensor]:
    """Stage 1 on Triton; same contract as ``reference.project_gaussians``."""
    options = (width, height, near, far, eps2d, antialiased)
    return dict(zip(_PROJECT_OUTPUTS, _Project.apply(means, quats, scales, opacities, viewmats, Ks, options)))


@triton.jit
def _sh_term(a0, a1, a2, k: tl.constexpr, basis, bx, by, bz, sh_ptr, v_sh_ptr, row, K, v0, v1, v2, m,
             BACKWARD: tl.constexpr):
    """Forward: a += basis * sh_k (the colour). Backward: v_sh_k += basis * v and a += (sh_k . v) dB_k/d(dir)."""
    base = (row * K + k) * 3
    s0 = tl.load(sh_ptr + base + 0, mask=m, other=0.0)
    s1 = tl.load(sh_ptr + base + 1, mask=m, other=0.0)
    s2 = tl.load(sh_ptr + base + 2, mask=m, other=0.0)
    if BACKWARD:
        tl.atomic_add(v_sh_ptr + base + 0, basis * v0, mask=m)
        tl.atomic_add(v_sh_ptr + base + 1, basis * v1, mask=m)
        tl.atomic_add(v_sh_ptr + base + 2, basis * v2, mask=m)
        dot = s0 * v0 + s1 * v1 + s2 * v2
        a0 += dot * bx
        a1 += dot * by
        a2 += dot * bz
    else:
        a0 += basis * s0
        a1 += basis * s1
        a2 += basis * s2
    return a0, a1, a2


@triton.jit
def _sh_kernel(sh_ptr, means_ptr, centers_ptr, out_ptr, v_out_ptr, v_sh_ptr, v_means_ptr, N, K,
               DEGREE: tl.constexpr, BACKWARD: tl.constexpr, BLOCK: tl.constexpr):
    """SH colours of a block of Gaussians seen from one camera, or (BACKWARD) their gradients.

    Each basis function is listed once with its partial derivatives (bx, by, bz) along the unit direction.
    """
    cam = tl.program_id(1)
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = idx < N
    dx = tl.load(means_ptr + idx * 3 + 0, mask=m, other=0.0) - tl.load(centers_ptr + cam * 3 + 0)
    dy = tl.load(means_ptr + idx * 3 + 1, mask=m, other=0.0) - tl.load(centers_ptr + cam * 3 + 1)
    dz = tl.load(means_ptr + idx * 3 + 2, mask=m, other=0.0) - tl.load(centers_ptr + cam * 3 + 2)
    norm = tl.maximum(tl.sqrt(dx * dx + dy * dy + dz * dz), 1e-12)
    x, y, z = dx / norm, dy / norm, dz / norm
    out = (cam * N + idx) * 3
    v0 = tl.zeros([BLOCK], dtype=tl.float32)
    v1 = tl.zeros([BLOCK], dtype=tl.float32)
    v2 = tl.zeros([BLOCK], dtype=tl.float32)
    if BACKWARD:  # the gradient passes where the colour was not clamped at 0
        v0 = tl.where(tl.load(out_ptr + out + 0, mask=m, other=0.0) > 0, tl.load(v_out_ptr + out + 0, mask=m, other=0.0), 0.0)
        v1 = tl.where(tl.load(out_ptr + out + 1, mask=m, other=0.0) > 0, tl.load(v_out_ptr + out + 1, mask=m, other=0.0), 0.0)
        v2 = tl.where(tl.load(out_ptr + out + 2, mask=m, other=0.0) > 0, tl.load(v_out_ptr + out + 2, mask=m, other=0.0), 0.0)
    zero = 0.0 * x
    a0, a1, a2 = zero, zero, zero
    ptrs = (sh_ptr, v_sh_ptr, idx, K, v0, v1, v2, m, BACKWARD)
    a0, a1, a2 = _sh_term(a0, a1, a2, 0, 0.28209479177387814 + zero, zero, zero, zero, *ptrs)
    if DEGREE > 0:
        c1 = 0.4886025119029199
        a0, a1, a2 = _sh_term(a0, a1, a2, 1, -c1 * y, zero, -c1 + zero, zero, *ptrs)
        a0, a1, a2 = _sh_term(a0, a1, a2, 2, c1 * z, zero, zero, c1 + zero, *ptrs)
        a0, a1, a2 = _sh_term(a0, a1, a2, 3, -c1 * x, -c1 + zero, zero, zero, *ptrs)
    if DEGREE > 1:
        xx, yy, zz = x * x, y * y, z * z
        c20, c21, c22, c23, c24 = 1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396
        a0, a1, a2 = _sh_term(a0, a1, a2, 4, c20 * x * y, c20 * y, c20 * x, zero, *ptrs)
        a0, a1, a2 = _sh_term(a0, a1, a2, 5, c21 * y * z, zero, c21 * z, c21 * y, *ptrs)
        a0, a1, a2 = _sh_term(a0, a1, a2, 6, c22 * (2 * zz - xx - yy), -2 * c22 * x, -2 * c22 * y, 4 * c22 * z, *ptrs)
        a0, a1, a2 = _sh_term(a0, a1, a2, 7, c23 * x * z, c23 * z, zero, c23 * x, *ptrs)
        a0, a1, a2 = _sh_term(a0, a1, a2, 8, c24 * (xx - yy), 2 * c24 * x, -2 * c24 * y, zero, *ptrs)
    if DEGREE > 2:
        c30, c31, c32, c33 = -0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154
        c34, c35, c36 = -0.4570457994644658, 1.445305721320277, -0.5900435899266435
        a0, a1, a2 = _sh_term(a0, a1, a2, 9, c30 * y * (3 * xx - yy), 6 * c30 * x * y, c30 * (3 * xx - 3 * yy), zero,
                              *ptrs)
        a0, a1, a2 = _sh_term(a0, a1, a2, 10, c31 * x * y * z, c31 * y * z, c31 * x * z, c31 * x * y, *ptrs)
        a0, a1, a2 = _sh_term(a0, a1, a2, 11, c32 * y * (4 * zz - xx - yy), -2 * c32 * x * y,
                              c32 * (4 * zz - xx - 3 * yy), 8 * c32 * y * z, *ptrs)
        a0, a1, a2 = _sh_term(a0, a1, a2, 12, c33 * z * (2 * zz - 3 * xx - 3 * yy), -6 * c33 * x * z, -6 * c33 * y * z,
                              c33 * (6 * zz - 3 * xx - 3 * yy), *ptrs)
        a0, a1, a2 = _sh_term(a0, a1, a2, 13, c34 * x * (4 * zz - xx - yy), c34 * (4 * zz - 3 * xx - yy),
                              -2 * c34 * x * y, 8 * c34 * x * z, *ptrs)
        a0, a1, a2 = _sh_term(a0, a1, a2, 14, c35 * z * (xx - yy), 2 * c35 * x * z, -2 * c35 * y * z, c35 * (xx - yy),
                              *ptrs)
        a0, a1, a2 = _sh_term(a0, a1, a2, 15, c36 * x * (xx - 3 * yy), c36 * (3 * xx - 3 * yy), -6 * c36 * x * y, zero,
                              *ptrs)
    if BACKWARD:  # through the normalisation: d(dir)/d(mean) = (I - dir dir^T) / |mean - centre|
        along = a0 * x + a1 * y + a2 * z
        tl.atomic_add(v_means_ptr + idx * 3 + 0, (a0 - along * x) / norm, mask=m)
        tl.atomic_add(v_means_ptr + idx * 3 + 1, (a1 - along * y) / norm, mask=m)
        tl.atomic_add(v_means_ptr + idx * 3 + 2, (a2 - along * z) / norm, mask=m)
    else:
        tl.store(out_ptr + out + 0, tl.maximum(a0 + 0.5, 0.0), mask=m)
        tl.store(out_ptr + out + 1, tl.maximum(a1 + 0.5, 0.0), mask=m)
        tl.store(out_ptr + out + 2, tl.maximum(a2 + 0.5, 0.0), mask=m)


class _ShToColor(torch.autograd.Function):
    """SH evaluation: Triton forward and backward (viewmat gradients, if wanted, by reference autograd)."""

    @staticmethod
    def forward(ctx, sh, means, viewmats, degree):
        n, k = sh.shape[0], sh.shape[1]
        out = torch.empty(viewmats.shape[0], n, 3, device=sh.device, dtype=torch.float32)
        sh32, means32 = sh.detach().float().contiguous(), means.detach().float().contiguous()
        centers = reference.camera_centers(viewmats.detach().float()).contiguous()
        if n > 0:
            _sh_launch(sh32, means32, centers, out, None, degree)
        ctx.save_for_backward(sh, means, viewmats, out)
        ctx.degree = degree
        return out

    @staticmethod
    def backward(ctx, grad):
        sh, means, viewmats, out = ctx.saved_tensors
        if ctx.needs_input_grad[2]:
            inputs = [t.detach().requires_grad_(need) for t, need in zip((sh, means, viewmats), ctx.needs_input_grad)]
            wanted = [t for t in inputs if t.requires_grad]
            with torch.enable_grad():
                got = iter(torch.autograd.grad(reference.sh_to_color(*inputs, ctx.degree), wanted, grad,
                                               allow_unused=True))
            return (*[next(got) if t.requires_grad else None for t in inputs], None)
        v_sh = torch.zeros(sh.shape, device=sh.device, dtype=torch.float32)
        v_means = torch.zeros(means.shape, device=sh.device, dtype=torch.float32)
        if sh.shape[0] > 0:
            centers = reference.camera_centers(viewmats.detach().float()).contiguous()
            _sh_launch(sh.detach().float().contiguous(), means.detach().float().contiguous(), centers, out,
                       (grad.float().contiguous(), v_sh, v_means), ctx.degree)
        return v_sh, v_means, None, None


def _sh_launch(sh, means, centers, out, backward, degree: int) -> None:
    """Run ``_sh_kernel`` forward (``backward`` None) or backward (``(v_out, v_sh, v_means)``)."""
    n, k = sh.shape[0], sh.shape[1]
    v_out, v_sh, v_means = backward if backward is not None else (out, out, out)
    grid = (triton.cdiv(n, PROJECT_BLOCK), centers.shape[0])
    _sh_kernel[grid](sh, means, centers, out, v_out, v_sh, v_means, n, k, DEGREE=degree,
                     BACKWARD=backward is not None, BLOCK=PROJECT_BLOCK)


def sh_to_color(sh, means, viewmats, degree: int) -> torch.Tensor:
    """Stage 2 on Triton; same contract as ``reference.sh_to_color``."""
    return _ShToColor.apply(sh, means, viewmats, degree)


@triton.jit
def _blend_fwd_kernel(
    means2d_ptr, conics_ptr, colors_ptr, opac_ptr, ids_ptr, starts_ptr, ends_ptr, bg_ptr,
    out_ptr, trans_ptr, last_ptr,
    width, height, tiles_x, tiles_per_cam, D, max_alpha,
    HAS_BG: tl.constexpr, TILE: tl.constexpr, BLOCK_D: tl.constexpr,
):
    tile = tl.program_id(0)
    cam = tile // tiles_per_cam
    local = tile % tiles_per_cam
    pix = tl.arange(0, TILE * TILE)
    pxi = (local % tiles_x) * TILE + pix % TILE
    pyi = (local // tiles_x) * TILE + pix // TILE
    inside = (pxi < width) & (pyi < height)
    px = pxi.to(tl.float32) + 0.5
    py = pyi.to(tl.float32) + 0.5
    chan = tl.arange(0, BLOCK_D)
    cmask = chan < D
    start = tl.load(starts_ptr + tile)
    end = tl.load(ends_ptr + tile)

    trans = tl.full([TILE * TILE], 1.0, dtype=tl.float32)
    done = ~inside
    last = tl.full([TILE * TILE], -1, dtype=tl.int32)
    acc = tl.zeros([TILE * TILE, BLOCK_D], dtype=tl.float32)
    i = start
    n_active = tl.sum(inside.to(tl.int32))
    while (i < end) & (n_active > 0):
        g = tl.load(ids_ptr + i)
        mx = tl.load(means2d_ptr + g * 2 + 0)
        my = tl.load(means2d_ptr + g * 2 + 1)
        ca = tl.load(conics_ptr + g * 3 + 0)
        cb = tl.load(conics_ptr + g * 3 + 1)
        cc = tl.load(conics_ptr + g * 3 + 2)
        o = tl.load(opac_ptr + g)
        dx = mx - px
        dy = my - py
        sigma = 0.5 * (ca * dx * dx + cc * dy * dy) + cb * dx * dy
        alpha = tl.minimum(o * tl.exp(-sigma), max_alpha)
        ok = (sigma >= 0) & (alpha >= ALPHA_THRESHOLD) & (~done)
        next_t = trans * (1.0 - alpha)
        stop = ok & (next_t < TRANSMITTANCE_MIN)
        done = done | stop
        ok = ok & (~stop)
        w = tl.where(ok, alpha * trans, 0.0)
        col = tl.load(colors_ptr + g * D + chan, mask=cmask, other=0.0)
        acc += w[:, None] * col[None, :]
        trans = tl.where(ok, next_t, trans)
        last = tl.where(ok, i.to(tl.int32), last)
        n_active = tl.sum((~done).to(tl.int32))
        i += 1

    if HAS_BG:
        bg = tl.load(bg_ptr + cam * D + chan, mask=cmask, other=0.0)
        acc += trans[:, None] * bg[None, :]
    pixel = (cam * height + pyi) * width + pxi
    tl.store(out_ptr + pixel[:, None] * D + chan[None, :], acc, mask=inside[:, None] & cmask[None, :])
    tl.store(trans_ptr + pixel, trans, mask=inside)
    tl.store(last_ptr + pixel, last, mask=inside)


@triton.jit
def _blend_bwd_kernel(
    means2d_ptr, conics_ptr, colors_ptr, opac_ptr, ids_ptr, starts_ptr, bg_ptr,
    trans_ptr, last_ptr, v_out_ptr, v_alpha_ptr,
    v_means2d_ptr, v_conics_ptr, v_colors_ptr, v_opac_ptr,
    width, height, tiles_x, tiles_per_cam, D, max_alpha,
    HAS_BG: tl.constexpr, TILE: tl.constexpr, BLOCK_D: tl.constexpr,
):
    tile = tl.program_id(0)
    cam = tile // tiles_per_cam
    local = tile % tiles_per_cam
    pix = tl.arange(0, TILE * TILE)
    pxi = (local % tiles_x) * TILE + pix % TILE
    pyi = (local // tiles_x) * TILE + pix // TILE
    inside = (pxi < width) & (pyi < height)
    px = pxi.to(tl.float32) + 0.5
    py = pyi.to(tl.float32) + 0.5
    chan = tl.arange(0, BLOCK_D)
    cmask = chan < D
    pixel = (cam * height + pyi) * width + pxi
    full = inside[:, None] & cmask[None, :]

    t_final = tl.load(trans_ptr + pixel, mask=inside, other=1.0)
    last = tl.load(last_ptr + pixel, mask=inside, other=-1)
    v_out = tl.load(v_out_ptr + pixel[:, None] * D + chan[None, :], mask=full, other=0.0)
    # d(out)/d(alpha_i) has a term -T_final/(1-alpha_i) (bg . v_out) and d(1-T_final)/d(alpha_i) = T_final/(1-alpha_i).
    v_final = tl.load(v_alpha_ptr + pixel, mask=inside, other=0.0)
    if HAS_BG:
        bg = tl.load(bg_ptr + cam * D + chan, mask=cmask, other=0.0)
        v_final -= tl.sum(v_out * bg[None, :], axis=1)
    v_final = v_final * t_final

    trans = t_final
    after = tl.zeros([TILE * TILE, BLOCK_D], dtype=tl.float32)  # sum over later Gaussians of w_j c_j
    start = tl.load(starts_ptr + tile)
    i = tl.max(last)
    while i >= start:
        g = tl.load(ids_ptr + i)
        mx = tl.load(means2d_ptr + g * 2 + 0)
        my = tl.load(means2d_ptr + g * 2 + 1)
        ca = tl.load(conics_ptr + g * 3 + 0)
        cb = tl.load(conics_ptr + g * 3 + 1)
        cc = tl.load(conics_ptr + g * 3 + 2)
        o = tl.load(opac_ptr + g)
        dx = mx - px
        dy = my - py
        sigma = 0.5 * (ca * dx * dx + cc * dy * dy) + cb * dx * dy
        vis = tl.exp(-sigma)
        alpha = tl.minimum(o * vis, max_alpha)
        ok = inside & (i <= last) & (sigma >= 0) & (alpha >= ALPHA_THRESHOLD)
        if tl.sum(ok.to(tl.int32)) > 0:
            ra = 1.0 / (1.0 - alpha)
            trans = tl.where(ok, trans * ra, trans)
            w = tl.where(ok, alpha * trans, 0.0)
            col = tl.load(colors_ptr + g * D + chan, mask=cmask, other=0.0)
            v_col = tl.sum(w[:, None] * v_out, axis=0)
            v_alpha = tl.sum(v_out * (col[None, :] * trans[:, None] - after * ra[:, None]), axis=1) + v_final * ra
            after += w[:, None] * col[None, :]
            grad_ok = ok & (o * vis <= max_alpha)
            v_sigma = tl.where(grad_ok, -o * vis * v_alpha, 0.0)
            v_o = tl.sum(tl.where(grad_ok, vis * v_alpha, 0.0))
            tl.atomic_add(v_colors_ptr + g * D + chan, v_col, mask=cmask)
            tl.atomic_add(v_opac_ptr + g, v_o)
            tl.atomic_add(v_conics_ptr + g * 3 + 0, 0.5 * tl.sum(v_sigma * dx * dx))
            tl.atomic_add(v_conics_ptr + g * 3 + 1, tl.sum(v_sigma * dx * dy))
            tl.atomic_add(v_conics_ptr + g * 3 + 2, 0.5 * tl.sum(v_sigma * dy * dy))
            tl.atomic_add(v_means2d_ptr + g * 2 + 0, tl.sum(v_sigma * (ca * dx + cb * dy)))
            tl.atomic_add(v_means2d_ptr + g * 2 + 1, tl.sum(v_sigma * (cb * dx + cc * dy)))
        i -= 1


class _Blend(torch.autograd.Function):
    """Per-tile blending: Triton forward and backward kernels."""

    @staticmethod
    def forward(ctx, means2d, conics, colors, opacities, background, flatten_ids, tile_offsets, options):
        width, height, tile_size, max_alpha = options
        n_cams, tiles_y, tiles_x = tile_offsets.shape
        depth = colors.shape[-1]
        starts, ends = reference.tile_ranges(tile_offsets, flatten_ids.numel())
        tensors = [t.detach().float().contiguous() for t in (means2d, conics, colors, opacities)]
        bg = background.detach().float().contiguous() if background is not None else tensors[0]
        dev = means2d.device
        out = torch.empty(n_cams, height, width, depth, device=dev, dtype=torch.float32)
        trans = torch.empty(n_cams, height, width, device=dev, dtype=torch.float32)
        last = torch.empty(n_cams, height, width, device=dev, dtype=torch.int32)
        ids = flatten_ids.contiguous()
        meta = (width, height, tiles_x, tiles_y * tiles_x, depth, max_alpha)
        consts = dict(HAS_BG=background is not None, TILE=tile_size, BLOCK_D=triton.next_power_of_2(depth))
        _blend_fwd_kernel[(starts.numel(),)](*tensors, ids, starts, ends, bg, out, trans, last, *meta, **consts)
        ctx.save_for_backward(*tensors, ids, starts, bg, trans, last)
        ctx.meta, ctx.consts, ctx.has_bg = meta, consts, background is not None
        return out, (1.0 - trans)[..., None]

    @staticmethod
    def backward(ctx, v_out, v_alpha):
        means2d, conics, colors, opacities, ids, starts, bg, trans, last = ctx.saved_tensors
        grads = [torch.zeros_like(t) for t in (means2d, conics, colors, opacities)]
        v_out = v_out.float().contiguous() if v_out is not None else torch.zeros(*trans.shape, colors.shape[-1],
                                                                                   device=trans.device)
        v_alpha = v_alpha[..., 0].float().contiguous() if v_alpha is not None else torch.zeros_like(trans)
        _blend_bwd_kernel[(starts.numel(),)](means2d, conics, colors, opacities, ids, starts, bg, trans, last, v_out,
                                             v_alpha, *grads, *ctx.meta, **ctx.consts)
        v_bg = (v_out * trans[..., None]).sum((1, 2)) if ctx.has_bg else None
        return (*grads, v_bg, None, None, None)


def blend_tiles(means2d, conics, colors, opacities, flatten_ids, tile_offsets, width, height, tile_size,
                max_alpha=0.99, background=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 4 (and its backward, stage 5) on Triton; same contract as ``reference.blend_tiles``."""
    options = (width, height, tile_size, max_alpha)
    return _Blend.apply(means2d, conics, colors, opacities, background, flatten_ids, tile_offsets, options)
