"""Tile-based Gaussian splat rasterizer (issue 3): torch reference + Triton kernels, one function per stage.

``rasterize`` is the public, differentiable op; ``gaussian_pixel_weights`` gives each Gaussian's blending
weight summed against per-pixel weights (for scene editing).

This package has the same name as its op, and Python's import system binds ``recon.kernels.rasterize`` to
the package once it is imported; the package is therefore made callable (forwarding to ``rasterize``) so
``from recon.kernels import rasterize`` works in every import order.
"""
import sys
import types

from recon.kernels.rasterize.op import gaussian_pixel_weights, rasterize

__all__ = ["rasterize", "gaussian_pixel_weights"]


class _CallablePackage(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return rasterize(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
