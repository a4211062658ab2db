"""Tile-based Gaussian splat rasterizer (issue 3): torch reference + Triton kernels, one function per stage.

``rasterize`` is the public, differentiable op, also available as its two halves ``project`` and
``rasterize_projected`` (so projected Gaussians can be moved between processes); ``gaussian_pixel_weights``
gives each Gaussian's blending weight summed against per-pixel weights (for scene editing).
"""

from recon.kernels.splatting.op import gaussian_pixel_weights, project, rasterize, rasterize_projected

__all__ = ['gaussian_pixel_weights', 'project', 'rasterize', 'rasterize_projected']
