"""The public ``rasterize`` op: validates inputs, picks the backend once, and chains the stages.

``rasterize`` is ``project`` (projection and SH colours) followed by ``rasterize_projected`` (tile binning
and blending); both halves are public so that callers can move projected Gaussians between them.
"""
from __future__ import annotations

from typing import Any

import torch

from recon.kernels.backend import resolve_backend
from recon.kernels.splatting import reference

MODES = ("rgb", "rgb+depth")
TILE_SIZES = (8, 16, 32)  # powers of two: a Triton program covers TILE * TILE pixels with one tl.arange
MAX_CHANNELS = 64  # colour channels D (tracing: labels + 1); the Triton blend runs them in chunks of 16
ABSGRAD_MAX_CHANNELS = 16  # absgrad sums per-pixel absolute values, so all channels must blend in one program


def _check_inputs(
    means: torch.Tensor,
    quats: torch.Tensor,
    scales: torch.Tensor,
    opacities: torch.Tensor,
    colors: torch.Tensor,
    viewmats: torch.Tensor,
    Ks: torch.Tensor,
    sh_degree: int | None,
) -> None:
    """Raise ``ValueError`` naming the first argument whose shape is wrong."""
    n = means.shape[0]
    expected = {"means": (means, (n, 3)), "quats": (quats, (n, 4)), "scales": (scales, (n, 3)),
                "opacities": (opacities, (n,))}
    for name, (tensor, shape) in expected.items():
        if tuple(tensor.shape) != shape:
            raise ValueError(f"rasterize: {name} must have shape {list(shape)}, got {list(tensor.shape)}")
    if viewmats.dim() != 3 or viewmats.shape[1:] != (4, 4):
        raise ValueError(f"rasterize: viewmats must have shape [C, 4, 4], got {list(viewmats.shape)}")
    if tuple(Ks.shape) != (viewmats.shape[0], 3, 3):
        raise ValueError(f"rasterize: Ks must have shape [{viewmats.shape[0]}, 3, 3], got {list(Ks.shape)}")
    if sh_degree is None:
        leading = colors.shape[:-2] if colors.dim() == 3 else ()
        if (colors.dim() not in (2, 3) or colors.shape[-2] != n or not 1 <= colors.shape[-1] <= MAX_CHANNELS
                or leading not in ((), (viewmats.shape[0],))):
            raise ValueError(f"rasterize: colors must be [N, D] or [C, N, D] with D in 1..{MAX_CHANNELS}, got"
                             f" {list(colors.shape)}")
    elif not 0 <= sh_degree <= 3 or colors.dim() != 3 or colors.shape[0] != n or colors.shape[1] < (sh_degree + 1) ** 2:
        raise ValueError(
            f"rasterize: sh_degree {sh_degree} needs SH coefficients [N, K>={(sh_degree + 1) ** 2}, 3] with degree"
            f" 0..3, got {list(colors.shape)}"
        )


def _check_blend_options(mode: str, tile_size: int, absgrad: bool, colors: int) -> None:
    """Raise ``ValueError`` for a blend option the kernels do not take (``colors``: colour channels)."""
    if mode not in MODES:
        raise ValueError(f"rasterize: mode must be one of {MODES}, got {mode!r}")
    if tile_size not in TILE_SIZES:
        raise ValueError(f"rasterize: tile_size must be one of {TILE_SIZES}, got {tile_size!r}")
    channels = colors + (mode == "rgb+depth")
    if absgrad and channels > ABSGRAD_MAX_CHANNELS:
        raise ValueError(f"rasterize: absgrad supports at most {ABSGRAD_MAX_CHANNELS} channels (depth included),"
                         f" got {channels}")


def _stages(backend: str) -> Any:
    """The module holding the stage functions for ``backend`` (same names in each)."""
    if backend == "torch":
        return reference
    from recon.kernels.splatting import triton as triton_stages  # imported lazily: defines the kernels

    if backend == "cuda":  # CUDA C tile blending (kernels/cuda); projection and SH stay on Triton
        from types import SimpleNamespace

        from recon.kernels.cuda import blend

        return SimpleNamespace(project_gaussians=triton_stages.project_gaussians,
                               sh_to_color=triton_stages.sh_to_color, blend_tiles=blend.blend_tiles)
    return triton_stages


def project(
    means: torch.Tensor,  # [N, 3]
    quats: torch.Tensor,  # [N, 4] wxyz, any norm
    scales: torch.Tensor,  # [N, 3] linear
    opacities: torch.Tensor,  # [N] in [0, 1]
    colors: torch.Tensor,  # [N, D], [C, N, D] or SH [N, K, 3] with sh_degree
    viewmats: torch.Tensor,  # [C, 4, 4] world-to-camera, OpenCV
    Ks: torch.Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    *,
    sh_degree: int | None = None,
    near: float = 0.01,
    far: float = 1e10,
    eps2d: float = 0.3,
    antialiased: bool = False,
    backend: str | None = None,
) -> dict[str, Any]:
    """The first half of ``rasterize``: project N 3D Gaussians into C cameras and evaluate their colours.

    Returns ``means2d`` [C, N, 2], ``conics`` [C, N, 3], ``depths`` [C, N], ``radii`` [C, N, 2] int32 (0 where
    culled), ``opacities`` [C, N] (compensated when ``antialiased``), ``compensations`` [C, N], ``colors``
    [C, N, D] and ``backend``, all differentiable. ``rasterize_projected`` blends them; between the two, rows
    may be selected, reordered or moved (distributed training sends each camera's visible Gaussians to the
    process that renders it), as long as every tensor keeps the same [C, M] layout.
    """
    _check_inputs(means, quats, scales, opacities, colors, viewmats, Ks, sh_degree)
    backend = resolve_backend("rasterize", means.device, backend)
    stages = _stages(backend)
    proj = stages.project_gaussians(
        means, quats, scales, opacities, viewmats, Ks, width, height, near, far, eps2d, antialiased
    )
    if sh_degree is not None:
        colors = stages.sh_to_color(colors, means, viewmats, sh_degree)
    elif colors.dim() == 2:
        colors = colors[None].expand(viewmats.shape[0], -1, -1)
    return {**proj, "colors": colors, "backend": backend}


def rasterize_projected(
    projected: dict[str, Any],  # project()'s output (means2d, conics, colors, opacities, depths, radii)
    width: int,
    height: int,
    *,
    max_alpha: float = 0.99,
    tile_size: int = 16,
    background: torch.Tensor | None = None,  # [D] or [C, D] (colour channels only)
    mode: str = "rgb",
    absgrad: bool = False,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """The second half of ``rasterize``: bin projected Gaussians into tiles and alpha-blend them.

    ``projected`` holds [C, M, ...] tensors as ``project`` returns them (M need not be the original N).
    Returns ``(image, alpha, meta)`` exactly as ``rasterize`` does; ``meta["means2d"]`` is
    ``projected["means2d"]`` with its gradient retained (and ``absgrad`` filled) after backward.
    """
    means2d, colors, depths = projected["means2d"], projected["colors"], projected["depths"]
    _check_blend_options(mode, tile_size, absgrad, colors.shape[-1])
    backend = resolve_backend("rasterize", means2d.device, backend or projected.get("backend"))
    stages = _stages(backend)
    n_cams = means2d.shape[0]
    absgrad_sums = None
    if means2d.requires_grad:
        means2d.retain_grad()
        if absgrad:
            absgrad_sums = torch.zeros(means2d.shape[0] * means2d.shape[1], 2, device=means2d.device,
                                       dtype=torch.float32)
            means2d.absgrad = absgrad_sums.view(means2d.shape)
    channels = colors
    if background is not None:
        if background.shape not in ((colors.shape[-1],), (1, colors.shape[-1]), (n_cams, colors.shape[-1])):
            raise ValueError(f"rasterize: background must be [D] or [C, D] with D={colors.shape[-1]}, got"
                             f" {list(background.shape)}")
        background = background.to(colors.dtype).expand(n_cams, colors.shape[-1])
    if mode == "rgb+depth":
        channels = torch.cat([colors, depths[..., None]], dim=-1)
        if background is not None:
            background = torch.cat([background, background.new_zeros(n_cams, 1)], dim=-1)

    isect = reference.intersect_tiles(means2d, projected["radii"], depths, width, height, tile_size)
    image, alpha = stages.blend_tiles(
        means2d, projected["conics"], channels.contiguous(), projected["opacities"], isect["flatten_ids"],
        isect["tile_offsets"], width, height, tile_size, max_alpha, background, absgrad_sums,
    )
    meta = {**projected, **isect, "tile_size": tile_size, "width": width, "height": height, "backend": backend}
    return image, alpha, meta


def rasterize(
    means: torch.Tensor,  # [N, 3]
    quats: torch.Tensor,  # [N, 4] wxyz, any norm
    scales: torch.Tensor,  # [N, 3] linear
    opacities: torch.Tensor,  # [N] in [0, 1]
    colors: torch.Tensor,  # [N, D], [C, N, D] or SH [N, K, 3] with sh_degree
    viewmats: torch.Tensor,  # [C, 4, 4] world-to-camera, OpenCV
    Ks: torch.Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    *,
    sh_degree: int | None = None,
    near: float = 0.01,
    far: float = 1e10,
    eps2d: float = 0.3,
    max_alpha: float = 0.99,
    tile_size: int = 16,
    background: torch.Tensor | None = None,  # [D] or [C, D] (colour channels only)
    mode: str = "rgb",
    antialiased: bool = False,
    absgrad: bool = False,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Render N 3D Gaussians into C cameras, differentiably: ``project`` then ``rasterize_projected``.

    Returns ``(image [C, H, W, D (+1 with depth)], alpha [C, H, W, 1], meta)``. In ``"rgb+depth"`` mode the
    last channel is the accumulated depth sum_i w_i z_i (divide by alpha for gsplat's normalised "ED").
    ``meta`` holds ``means2d`` [C, N, 2] (a non-leaf that keeps its ``.grad`` after backward, for
    densification), ``conics`` [C, N, 3], ``radii`` [C, N, 2] int32, ``depths`` [C, N], ``opacities`` [C, N]
    (compensated when ``antialiased``), ``colors`` [C, N, D], ``tiles_per_gauss`` [C, N], ``isect_ids``,
    ``flatten_ids``, ``tile_offsets`` [C, tiles_y, tiles_x], ``tile_size``, ``width``, ``height`` and ``backend``.
    With ``absgrad`` the backward pass also fills ``means2d.absgrad`` [C, N, 2]: per Gaussian, the sum over
    pixels of the absolute per-pixel gradient of its 2D mean (AbsGS; gsplat's ``absgrad``).
    """
    projected = project(means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree=sh_degree,
                        near=near, far=far, eps2d=eps2d, antialiased=antialiased, backend=backend)
    return rasterize_projected(projected, width, height, max_alpha=max_alpha, tile_size=tile_size,
                               background=background, mode=mode, absgrad=absgrad, backend=projected["backend"])


def gaussian_pixel_weights(
    means: torch.Tensor,  # [N, 3]
    quats: torch.Tensor,  # [N, 4]
    scales: torch.Tensor,  # [N, 3]
    opacities: torch.Tensor,  # [N]
    viewmats: torch.Tensor,  # [C, 4, 4]
    Ks: torch.Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    pixel_weights: torch.Tensor,  # [C, H, W, K]
    **options: Any,
) -> torch.Tensor:
    """Per Gaussian, the sum over cameras and pixels of its blending weight w_i(p) = alpha_i(p) T_i(p) times
    ``pixel_weights`` (p) -> [N, K].

    Computed as the gradient, with respect to K-channel unit colours, of sum(render * pixel_weights): the
    render is linear in the colours with coefficients w_i(p), so this reuses the backward pass of whichever
    backend runs. ``options`` are ``rasterize``'s keyword options (near, far, eps2d, max_alpha, ...).
    """
    n, k = means.shape[0], pixel_weights.shape[-1]
    unit = torch.ones(n, k, device=means.device, dtype=means.dtype, requires_grad=True)
    with torch.enable_grad():
        image, _, _ = rasterize(
            means.detach(), quats.detach(), scales.detach(), opacities.detach(), unit, viewmats, Ks, width, height,
            **{**options, "background": None, "mode": "rgb", "sh_degree": None},
        )
        (grad,) = torch.autograd.grad((image * pixel_weights).sum(), unit, allow_unused=True)
    return grad if grad is not None else torch.zeros_like(unit)
