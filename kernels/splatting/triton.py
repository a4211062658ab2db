"""Triton kernels of the rasterizer stages, with the same names and signatures as ``reference.py``.

* ``project_gaussians``: forward and backward Triton kernels (gradients to camera matrices, rarely wanted,
  go through the reference by autograd).
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

from recon.kernels.splatting import reference

PROJECT_BLOCK = 128
# Compiled kernels may only read constexpr globals.
ALPHA_THRESHOLD = tl.constexpr(reference.ALPHA_THRESHOLD)
TRANSMITTANCE_MIN = tl.constexpr(reference.TRANSMITTANCE_MIN)
MAX_EXTEND = tl.constexpr(reference.MAX_EXTEND)
FOV_MARGIN = tl.constexpr(reference.FOV_CLAMP - 1.0)
# Colour channels per blend program, by tile size: more run as several programs per tile. The largest widths whose
# backward compiles without register spills on sm_80 and sm_90 (bench/kernel_resources.py; a 32 x 32 tile has
# 512 threads, so at most 128 registers each).
MAX_BLOCK_D = {8: 16, 16: 16, 32: 4}


@triton.jit
def _project_common(means_ptr, quats_ptr, scales_ptr, viewmats_ptr, ks_ptr, idx, m, cam, width, height, near, far):
    """Shared forward algebra of the projection (the backward kernel recomputes it rather than storing it)."""
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
    q00 = 1 - 2 * (qy * qy + qz * qz)
    q01 = 2 * (qx * qy - qw * qz)
    q02 = 2 * (qx * qz + qw * qy)
    q10 = 2 * (qx * qy + qw * qz)
    q11 = 1 - 2 * (qx * qx + qz * qz)
    q12 = 2 * (qy * qz - qw * qx)
    q20 = 2 * (qx * qz - qw * qy)
    q21 = 2 * (qy * qz + qw * qx)
    q22 = 1 - 2 * (qx * qx + qy * qy)
    # Camera-space M: W = R_view R diag(s), so the camera covariance is W W^T.
    w00 = r00 * q00 * sx + r01 * q10 * sx + r02 * q20 * sx
    w01 = r00 * q01 * sy + r01 * q11 * sy + r02 * q21 * sy
    w02 = r00 * q02 * sz + r01 * q12 * sz + r02 * q22 * sz
    w10 = r10 * q00 * sx + r11 * q10 * sx + r12 * q20 * sx
    w11 = r10 * q01 * sy + r11 * q11 * sy + r12 * q21 * sy
    w12 = r10 * q02 * sz + r11 * q12 * sz + r12 * q22 * sz
    w20 = r20 * q00 * sx + r21 * q10 * sx + r22 * q20 * sx
    w21 = r20 * q01 * sy + r21 * q11 * sy + r22 * q21 * sy
    w22 = r20 * q02 * sz + r21 * q12 * sz + r22 * q22 * sz

    tan_fovx = 0.5 * width / fx
    tan_fovy = 0.5 * height / fy
    ux = tl.minimum((width - cx) / fx + FOV_MARGIN * tan_fovx, tl.maximum(-(cx / fx + FOV_MARGIN * tan_fovx), x / zs))
    uy = tl.minimum((height - cy) / fy + FOV_MARGIN * tan_fovy, tl.maximum(-(cy / fy + FOV_MARGIN * tan_fovy), y / zs))
    clamped_x = ux != x / zs
    clamped_y = uy != y / zs
    tx = zs * ux
    ty = zs * uy
    j00 = fx / zs
    j02 = -fx * tx / (zs * zs)
    j11 = fy / zs
    j12 = -fy * ty / (zs * zs)
    # Rows of T = J W (2 x 3); the 2D covariance is T T^T.
    a0 = j00 * w00 + j02 * w20
    a1 = j00 * w01 + j02 * w21
    a2 = j00 * w02 + j02 * w22
    b0 = j11 * w10 + j12 * w20
    b1 = j11 * w11 + j12 * w21
    b2 = j11 * w12 + j12 * w22
    return (x, y, z, in_depth, zs, fx, fy, cx, cy, tx, ty, clamped_x, clamped_y, j00, j02, j11, j12,
            a0, a1, a2, b0, b1, b2, w00, w01, w02, w10, w11, w12, w20, w21, w22,
            r00, r01, r02, r10, r11, r12, r20, r21, r22,
            q00, q01, q02, q10, q11, q12, q20, q21, q22, qw, qx, qy, qz, qn, sx, sy, sz)


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
    (x, y, z, in_depth, zs, fx, fy, cx, cy, tx, ty, clamped_x, clamped_y, j00, j02, j11, j12,
     a0, a1, a2, b0, b1, b2, w00, w01, w02, w10, w11, w12, w20, w21, w22,
     r00, r01, r02, r10, r11, r12, r20, r21, r22,
     q00, q01, q02, q10, q11, q12, q20, q21, q22, qw, qx, qy, qz, qn, sx, sy, sz) = _project_common(
        means_ptr, quats_ptr, scales_ptr, viewmats_ptr, ks_ptr, idx, m, cam, width, height, near, far)
    opac = tl.load(opac_ptr + idx, mask=m, other=0.0)
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


@triton.jit
def _project_bwd_kernel(
    means_ptr, quats_ptr, scales_ptr, opac_ptr, viewmats_ptr, ks_ptr, radii_ptr, comp_ptr,
    v_means2d_ptr, v_conics_ptr, v_depths_ptr, v_opac_out_ptr, v_comp_ptr,
    v_means_ptr, v_quats_ptr, v_scales_ptr, v_opac_ptr,
    N, width, height, near, far, eps2d,
    ANTIALIASED: tl.constexpr, BLOCK: tl.constexpr,
):
    cam = tl.program_id(1)
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = idx < N
    (x, y, z, in_depth, zs, fx, fy, cx, cy, tx, ty, clamped_x, clamped_y, j00, j02, j11, j12,
     a0, a1, a2, b0, b1, b2, w00, w01, w02, w10, w11, w12, w20, w21, w22,
     r00, r01, r02, r10, r11, r12, r20, r21, r22,
     q00, q01, q02, q10, q11, q12, q20, q21, q22, qw, qx, qy, qz, qn, sx, sy, sz) = _project_common(
        means_ptr, quats_ptr, scales_ptr, viewmats_ptr, ks_ptr, idx, m, cam, width, height, near, far)
    out = cam * N + idx
    opac = tl.load(opac_ptr + idx, mask=m, other=0.0)
    valid = m & ((tl.load(radii_ptr + out * 2 + 0, mask=m, other=0) > 0)
                 | (tl.load(radii_ptr + out * 2 + 1, mask=m, other=0) > 0))
    comp = tl.load(comp_ptr + out, mask=m, other=0.0)
    v_opac_out = tl.load(v_opac_out_ptr + out, mask=m, other=0.0)
    v_comp = tl.load(v_comp_ptr + out, mask=m, other=0.0)
    if ANTIALIASED:
        v_o = v_opac_out * comp
        v_comp += v_opac_out * opac
    else:
        v_o = v_opac_out
    ca0 = a0 * a0 + a1 * a1 + a2 * a2
    cb = a0 * b0 + a1 * b1 + a2 * b2
    cc0 = b0 * b0 + b1 * b1 + b2 * b2
    ca = ca0 + eps2d
    cc = cc0 + eps2d
    det = tl.where(valid, ca * cc - cb * cb, 1.0)
    det_orig = ca0 * cc0 - cb * cb
    # Conic = inverse(cov): d cov = -inv V inv, with V the symmetric matrix of the conic gradients.
    ia, ib, ic = cc / det, -cb / det, ca / det
    va = tl.load(v_conics_ptr + out * 3 + 0, mask=valid, other=0.0)
    vb = 0.5 * tl.load(v_conics_ptr + out * 3 + 1, mask=valid, other=0.0)
    vc = tl.load(v_conics_ptr + out * 3 + 2, mask=valid, other=0.0)
    p00 = ia * va + ib * vb
    p01 = ia * vb + ib * vc
    p10 = ib * va + ic * vb
    p11 = ib * vb + ic * vc
    g_a = -(p00 * ia + p01 * ib)
    g_b = -2.0 * (p00 * ib + p01 * ic)
    g_c = -(p10 * ib + p11 * ic)
    # Compensation sqrt(det_orig / det) (its gradient is 0 where the ratio was clamped at 0 or culled).
    ratio = det_orig / det
    v_ratio = tl.where(valid & (ratio > 0), v_comp * 0.5 / tl.sqrt(tl.maximum(ratio, 1e-30)), 0.0)
    g_a += v_ratio * (cc0 * det - det_orig * cc) / (det * det)
    g_c += v_ratio * (ca0 * det - det_orig * ca) / (det * det)
    g_b += v_ratio * 2.0 * cb * (det_orig - det) / (det * det)
    # cov = T T^T, T = J W: dT = 2 G T with G = [[g_a, g_b/2], [g_b/2, g_c]].
    da0 = 2 * g_a * a0 + g_b * b0
    da1 = 2 * g_a * a1 + g_b * b1
    da2 = 2 * g_a * a2 + g_b * b2
    db0 = g_b * a0 + 2 * g_c * b0
    db1 = g_b * a1 + 2 * g_c * b1
    db2 = g_b * a2 + 2 * g_c * b2
    dj00 = da0 * w00 + da1 * w01 + da2 * w02
    dj02 = da0 * w20 + da1 * w21 + da2 * w22
    dj11 = db0 * w10 + db1 * w11 + db2 * w12
    dj12 = db0 * w20 + db1 * w21 + db2 * w22
    dw00, dw01, dw02 = j00 * da0, j00 * da1, j00 * da2
    dw10, dw11, dw12 = j11 * db0, j11 * db1, j11 * db2
    dw20, dw21, dw22 = j02 * da0 + j12 * db0, j02 * da1 + j12 * db1, j02 * da2 + j12 * db2
    # W = R_view Q diag(s): dM = R_view^T dW, then scales and the rotation Q.
    dm00 = r00 * dw00 + r10 * dw10 + r20 * dw20
    dm01 = r00 * dw01 + r10 * dw11 + r20 * dw21
    dm02 = r00 * dw02 + r10 * dw12 + r20 * dw22
    dm10 = r01 * dw00 + r11 * dw10 + r21 * dw20
    dm11 = r01 * dw01 + r11 * dw11 + r21 * dw21
    dm12 = r01 * dw02 + r11 * dw12 + r21 * dw22
    dm20 = r02 * dw00 + r12 * dw10 + r22 * dw20
    dm21 = r02 * dw01 + r12 * dw11 + r22 * dw21
    dm22 = r02 * dw02 + r12 * dw12 + r22 * dw22
    tl.atomic_add(v_scales_ptr + idx * 3 + 0, dm00 * q00 + dm10 * q10 + dm20 * q20, mask=valid)
    tl.atomic_add(v_scales_ptr + idx * 3 + 1, dm01 * q01 + dm11 * q11 + dm21 * q21, mask=valid)
    tl.atomic_add(v_scales_ptr + idx * 3 + 2, dm02 * q02 + dm12 * q12 + dm22 * q22, mask=valid)
    d00, d01, d02 = dm00 * sx, dm01 * sy, dm02 * sz
    d10, d11, d12 = dm10 * sx, dm11 * sy, dm12 * sz
    d20, d21, d22 = dm20 * sx, dm21 * sy, dm22 * sz
    gw = 2 * (-qz * d01 + qy * d02 + qz * d10 - qx * d12 - qy * d20 + qx * d21)
    gx = 2 * (qy * d01 + qz * d02 + qy * d10 - 2 * qx * d11 - qw * d12 + qz * d20 + qw * d21 - 2 * qx * d22)
    gy = 2 * (-2 * qy * d00 + qx * d01 + qw * d02 + qx * d10 + qz * d12 - qw * d20 + qz * d21 - 2 * qy * d22)
    gz = 2 * (-2 * qz * d00 - qw * d01 + qx * d02 + qw * d10 - 2 * qz * d11 + qy * d12 + qx * d20 + qy * d21)
    along = gw * qw + gx * qx + gy * qy + gz * qz
    tl.atomic_add(v_quats_ptr + idx * 4 + 0, (gw - along * qw) / qn, mask=valid)
    tl.atomic_add(v_quats_ptr + idx * 4 + 1, (gx - along * qx) / qn, mask=valid)
    tl.atomic_add(v_quats_ptr + idx * 4 + 2, (gy - along * qy) / qn, mask=valid)
    tl.atomic_add(v_quats_ptr + idx * 4 + 3, (gz - along * qz) / qn, mask=valid)
    # Camera-space mean: through means2d, the Jacobian (clamped tangents do not depend on x / y) and depth.
    vu = tl.load(v_means2d_ptr + out * 2 + 0, mask=valid, other=0.0)
    vv = tl.load(v_means2d_ptr + out * 2 + 1, mask=valid, other=0.0)
    z2 = zs * zs
    z3 = z2 * zs
    gxc = vu * fx / zs + tl.where(clamped_x, 0.0, -dj02 * fx / z2)
    gyc = vv * fy / zs + tl.where(clamped_y, 0.0, -dj12 * fy / z2)
    gzc = -vu * fx * x / z2 - vv * fy * y / z2 - dj00 * fx / z2 - dj11 * fy / z2
    gzc += tl.where(clamped_x, 1.0, 2.0) * dj02 * fx * tx / z3 + tl.where(clamped_y, 1.0, 2.0) * dj12 * fy * ty / z3
    gxc = tl.where(valid, gxc, 0.0)
    gyc = tl.where(valid, gyc, 0.0)
    gzc = tl.where(valid, gzc, 0.0) + tl.load(v_depths_ptr + out, mask=m, other=0.0)
    tl.atomic_add(v_means_ptr + idx * 3 + 0, r00 * gxc + r10 * gyc + r20 * gzc, mask=m)
    tl.atomic_add(v_means_ptr + idx * 3 + 1, r01 * gxc + r11 * gyc + r21 * gzc, mask=m)
    tl.atomic_add(v_means_ptr + idx * 3 + 2, r02 * gxc + r12 * gyc + r22 * gzc, mask=m)
    tl.atomic_add(v_opac_ptr + idx, v_o, mask=m)


_PROJECT_OUTPUTS = ("means2d", "conics", "depths", "radii", "opacities", "compensations")


class _Project(torch.autograd.Function):
    """Projection: Triton forward and backward (viewmat/K gradients, if wanted, by reference autograd)."""

    @staticmethod
    def forward(ctx, means, quats, scales, opacities, viewmats, Ks, options):
        n_cams, n = viewmats.shape[0], means.shape[0]
        f32 = dict(device=means.device, dtype=torch.float32)
        outs = (torch.empty(n_cams, n, 2, **f32), torch.empty(n_cams, n, 3, **f32), torch.empty(n_cams, n, **f32),
                torch.empty(n_cams, n, 2, device=means.device, dtype=torch.int32), torch.empty(n_cams, n, **f32),
                torch.empty(n_cams, n, **f32))
        ins = [t.detach().float().contiguous() for t in (means, quats, scales, opacities, viewmats, Ks)]
        if n > 0:
            _project_launch(_project_kernel, ins, outs, options)
        ctx.save_for_backward(means, quats, scales, opacities, viewmats, Ks, outs[3], outs[5])
        ctx.options = options
        ctx.mark_non_differentiable(outs[3])
        return outs

    @staticmethod
    def backward(ctx, *grads):
        *saved, radii, comp = ctx.saved_tensors
        if ctx.needs_input_grad[4] or ctx.needs_input_grad[5]:
            return _project_backward_by_reference(saved, ctx.needs_input_grad, ctx.options, grads)
        ins = [t.detach().float().contiguous() for t in saved]
        dense = [g.float().contiguous() if g is not None else torch.zeros(o.shape, device=radii.device)
                 for g, o in zip(grads, (comp[..., None].expand(-1, -1, 2), comp[..., None].expand(-1, -1, 3), comp,
                                         radii, comp, comp))]
        v_inputs = [torch.zeros_like(t) for t in ins[:4]]
        if ins[0].shape[0] > 0:
            _project_launch(_project_bwd_kernel, [*ins, radii, comp],
                            (dense[0], dense[1], dense[2], dense[4], dense[5], *v_inputs), ctx.options)
        return (*v_inputs, None, None, None)


def _project_launch(kernel, ins, outs, options) -> None:
    """Launch a projection kernel over (Gaussian blocks, cameras)."""
    width, height, near, far, eps2d, antialiased = options
    n, n_cams = ins[0].shape[0], ins[4].shape[0]
    grid = (triton.cdiv(n, PROJECT_BLOCK), n_cams)
    kernel[grid](*ins, *outs, n, width, height, near, far, eps2d, ANTIALIASED=bool(antialiased), BLOCK=PROJECT_BLOCK)


def _project_backward_by_reference(saved, needs, options, grads):
    """Gradients of the projection by autograd over the reference (used when cameras need gradients)."""
    inputs = [t.detach().requires_grad_(need) for t, need in zip(saved, needs)]
    with torch.enable_grad():
        out = reference.project_gaussians(*inputs, *options)
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
        n = sh.shape[0]
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
def _tile_pixels(tile, tiles_x, tiles_per_cam, width, height, TILE: tl.constexpr):
    """Camera, integer pixel coordinates, in-image mask and pixel centres (+0.5) of one tile's pixels."""
    cam = tile // tiles_per_cam
    local = tile % tiles_per_cam
    pix = tl.arange(0, TILE * TILE)
    pxi = (local % tiles_x) * TILE + pix % TILE
    pyi = (local // tiles_x) * TILE + pix // TILE
    inside = (pxi < width) & (pyi < height)
    return cam, pxi, pyi, inside, pxi.to(tl.float32) + 0.5, pyi.to(tl.float32) + 0.5


@triton.jit
def _splat(ids_ptr, i, means2d_ptr, conics_ptr, opac_ptr, px, py, max_alpha):
    """The i-th sorted Gaussian of a tile evaluated at the tile's pixels: its id, conic, opacity, offsets,
    Mahalanobis power sigma, exp(-sigma) and alpha = min(max_alpha, o exp(-sigma))."""
    g = tl.load(ids_ptr + i)
    ca = tl.load(conics_ptr + g * 3 + 0)
    cb = tl.load(conics_ptr + g * 3 + 1)
    cc = tl.load(conics_ptr + g * 3 + 2)
    o = tl.load(opac_ptr + g)
    dx = tl.load(means2d_ptr + g * 2 + 0) - px
    dy = tl.load(means2d_ptr + g * 2 + 1) - py
    sigma = 0.5 * (ca * dx * dx + cc * dy * dy) + cb * dx * dy
    vis = tl.exp(-sigma)
    return g, ca, cb, cc, o, dx, dy, sigma, vis, tl.minimum(o * vis, max_alpha)


@triton.jit(do_not_specialize=["width", "height", "tiles_x", "tiles_per_cam", "D"])
def _blend_fwd_kernel(
    means2d_ptr, conics_ptr, colors_ptr, opac_ptr, ids_ptr, starts_ptr, ends_ptr, bg_ptr,
    out_ptr, trans_ptr, last_ptr,
    width, height, tiles_x, tiles_per_cam, D, max_alpha,
    HAS_BG: tl.constexpr, TILE: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """Program (tile, chunk): the tile's pixels, channels chunk * BLOCK_D ... + BLOCK_D - 1. Every chunk walks
    the same Gaussians (transmittance does not depend on the channel); chunk 0 also writes T and ``last``."""
    tile = tl.program_id(0)
    chunk = tl.program_id(1)
    cam, pxi, pyi, inside, px, py = _tile_pixels(tile, tiles_x, tiles_per_cam, width, height, TILE)
    chan = chunk * BLOCK_D + tl.arange(0, BLOCK_D)
    cmask = chan < D
    start = tl.load(starts_ptr + tile).to(tl.int32)
    end = tl.load(ends_ptr + tile).to(tl.int32)

    trans = tl.full([TILE * TILE], 1.0, dtype=tl.float32)
    done = ~inside
    last = tl.full([TILE * TILE], -1, dtype=tl.int32)
    acc = tl.zeros([TILE * TILE, BLOCK_D], dtype=tl.float32)
    i = start
    n_active = tl.sum(inside.to(tl.int32))
    while (i < end) & (n_active > 0):
        g, ca, cb, cc, o, dx, dy, sigma, vis, alpha = _splat(ids_ptr, i, means2d_ptr, conics_ptr, opac_ptr, px, py,
                                                             max_alpha)
        ok = (sigma >= 0) & (alpha >= ALPHA_THRESHOLD) & (~done)
        next_t = trans * (1.0 - alpha)
        stop = ok & (next_t < TRANSMITTANCE_MIN)
        done = done | stop
        ok = ok & (~stop)
        w = tl.where(ok, alpha * trans, 0.0)
        col = tl.load(colors_ptr + g * D + chan, mask=cmask, other=0.0)
        acc += w[:, None] * col[None, :]
        trans = tl.where(ok, next_t, trans)
        last = tl.where(ok, i, last)
        n_active = tl.sum((~done).to(tl.int32))
        i += 1

    if HAS_BG:
        bg = tl.load(bg_ptr + cam * D + chan, mask=cmask, other=0.0)
        acc += trans[:, None] * bg[None, :]
    pixel = (cam * height + pyi) * width + pxi
    tl.store(out_ptr + pixel[:, None] * D + chan[None, :], acc, mask=inside[:, None] & cmask[None, :])
    first = inside & (chunk == 0)
    tl.store(trans_ptr + pixel, trans, mask=first)
    tl.store(last_ptr + pixel, last, mask=first)


@triton.jit(do_not_specialize=["width", "height", "tiles_x", "tiles_per_cam", "D"])
def _blend_bwd_kernel(
    means2d_ptr, conics_ptr, colors_ptr, opac_ptr, ids_ptr, starts_ptr, bg_ptr,
    trans_ptr, last_ptr, v_out_ptr, v_alpha_ptr,
    v_means2d_ptr, v_conics_ptr, v_colors_ptr, v_opac_ptr, v_abs_ptr,
    width, height, tiles_x, tiles_per_cam, D, max_alpha,
    HAS_BG: tl.constexpr, TILE: tl.constexpr, BLOCK_D: tl.constexpr, ABSGRAD: tl.constexpr,
):
    """Program (tile, chunk). Every gradient except AbsGS's is linear in d(loss)/d(alpha_i), which sums over
    channels, so each chunk adds its channels' share; chunk 0 adds the alpha output's. ``ABSGRAD`` (a sum of
    per-pixel absolute values) needs all channels in one program: the caller launches one chunk then."""
    tile = tl.program_id(0)
    chunk = tl.program_id(1)
    cam, pxi, pyi, inside, px, py = _tile_pixels(tile, tiles_x, tiles_per_cam, width, height, TILE)
    chan = chunk * BLOCK_D + tl.arange(0, BLOCK_D)
    cmask = chan < D
    pixel = (cam * height + pyi) * width + pxi
    full = inside[:, None] & cmask[None, :]

    t_final = tl.load(trans_ptr + pixel, mask=inside, other=1.0)
    last = tl.load(last_ptr + pixel, mask=inside, other=-1)
    v_out = tl.load(v_out_ptr + pixel[:, None] * D + chan[None, :], mask=full, other=0.0)
    # d(out)/d(alpha_i) has a term -T_final/(1-alpha_i) (bg . v_out) and d(1-T_final)/d(alpha_i) = T_final/(1-alpha_i).
    v_final = tl.load(v_alpha_ptr + pixel, mask=inside & (chunk == 0), other=0.0)
    if HAS_BG:
        bg = tl.load(bg_ptr + cam * D + chan, mask=cmask, other=0.0)
        v_final -= tl.sum(v_out * bg[None, :], axis=1)
    v_final = v_final * t_final

    trans = t_final
    after = tl.zeros([TILE * TILE, BLOCK_D], dtype=tl.float32)  # sum over later Gaussians of w_j c_j
    start = tl.load(starts_ptr + tile).to(tl.int32)
    i = tl.max(last)
    while i >= start:
        g, ca, cb, cc, o, dx, dy, sigma, vis, alpha = _splat(ids_ptr, i, means2d_ptr, conics_ptr, opac_ptr, px, py,
                                                             max_alpha)
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
            v_mx = v_sigma * (ca * dx + cb * dy)  # per-pixel gradient of the 2D mean
            v_my = v_sigma * (cb * dx + cc * dy)
            tl.atomic_add(v_means2d_ptr + g * 2 + 0, tl.sum(v_mx))
            tl.atomic_add(v_means2d_ptr + g * 2 + 1, tl.sum(v_my))
            if ABSGRAD:
                tl.atomic_add(v_abs_ptr + g * 2 + 0, tl.sum(tl.abs(v_mx)))
                tl.atomic_add(v_abs_ptr + g * 2 + 1, tl.sum(tl.abs(v_my)))
        i -= 1


def _blend_launch(tile_size: int, depth: int, has_bg: bool) -> tuple[int, dict]:
    """Number of channel chunks, and constexprs and launch options of the blend kernels: channels in chunks of at
    most ``MAX_BLOCK_D[tile_size]``, two pixels per thread (warps by tile area), and a register budget of all the
    block may have (ptxas's default budget spilled 8 bytes in the sm_80 backward with a background)."""
    block_d = min(triton.next_power_of_2(depth), MAX_BLOCK_D[tile_size])
    num_warps = max(1, tile_size * tile_size // 64)
    consts = dict(HAS_BG=has_bg, TILE=tile_size, BLOCK_D=block_d, num_warps=num_warps,
                  maxnreg=min(255, 65536 // (32 * num_warps)))
    return triton.cdiv(depth, block_d), consts


class _Blend(torch.autograd.Function):
    """Per-tile blending: Triton forward and backward kernels."""

    @staticmethod
    def forward(ctx, means2d, conics, colors, opacities, background, flatten_ids, tile_offsets, options):
        width, height, tile_size, max_alpha, absgrad = options
        _, tiles_y, tiles_x = tile_offsets.shape
        depth = colors.shape[-1]
        buf = reference.blend_buffers(means2d, conics, colors, opacities, background, flatten_ids, tile_offsets,
                                      width, height)
        tensors, ids, starts, trans, last = buf.inputs, buf.ids, buf.starts, buf.trans, buf.last
        bg = buf.background if background is not None else tensors[0]  # a dummy pointer when HAS_BG is off
        meta = (width, height, tiles_x, tiles_y * tiles_x, depth, max_alpha)
        chunks, consts = _blend_launch(tile_size, depth, background is not None)
        _blend_fwd_kernel[(starts.numel(), chunks)](*tensors, ids, starts, buf.ends, bg, buf.out, trans, last, *meta,
                                                    **consts)
        ctx.save_for_backward(*tensors, ids, starts, bg, trans, last)
        ctx.meta, ctx.chunks, ctx.consts = meta, chunks, consts
        ctx.has_bg, ctx.absgrad = background is not None, absgrad
        return buf.out, (1.0 - trans)[..., None]

    @staticmethod
    def backward(ctx, v_out, v_alpha):
        means2d, conics, colors, opacities, ids, starts, bg, trans, last = ctx.saved_tensors
        grads = [torch.zeros_like(t) for t in (means2d, conics, colors, opacities)]
        v_out, v_alpha = reference.blend_output_grads(v_out, v_alpha, trans, colors.shape[-1])
        v_abs = ctx.absgrad if ctx.absgrad is not None else grads[0]
        _blend_bwd_kernel[(starts.numel(), ctx.chunks)](means2d, conics, colors, opacities, ids, starts, bg, trans,
                                                        last, v_out, v_alpha, *grads, v_abs, *ctx.meta, **ctx.consts,
                                                        ABSGRAD=ctx.absgrad is not None)
        v_bg = (v_out * trans[..., None]).sum((1, 2)) if ctx.has_bg else None
        return (*grads, v_bg, None, None, None)


def blend_tiles(means2d, conics, colors, opacities, flatten_ids, tile_offsets, width, height, tile_size,
                max_alpha=0.99, background=None, absgrad=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 4 (and its backward, stage 5) on Triton; same contract as ``reference.blend_tiles``."""
    options = (width, height, tile_size, max_alpha, absgrad)
    return _Blend.apply(means2d, conics, colors, opacities, background, flatten_ids, tile_offsets, options)
