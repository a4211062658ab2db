"""Multiresolution hash-grid encoding (instant-ngp): torch reference and Triton kernels."""
from recon.kernels.hashgrid.op import hash_encode
from recon.kernels.hashgrid.reference import level_resolutions, level_scales, per_level_scale_for

__all__ = ["hash_encode", "level_scales", "level_resolutions", "per_level_scale_for"]
