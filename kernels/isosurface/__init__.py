"""Marching cubes: dense grid -> watertight indexed triangle mesh (torch reference + Triton kernels).
"""

from recon.kernels.isosurface.op import marching_cubes

__all__ = ['marching_cubes']
