"""Tile-based Gaussian splat rasterizer (issue 3): torch reference + Triton kernels, one function per stage.

``rasterize`` is the public, differentiable op; ``gaussian_pixel_weights`` gives each Gaussian's blending
weight summed against per-pixel weights (for scene editing).
"""

from recon.kernels.splatting.op import gaussian_pixel_weights, rasterize

__all__ = ['gaussian_pixel_weights', 'rasterize']
