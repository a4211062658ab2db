"""Volume rendering over packed ray samples: torch reference and Triton kernels."""
from recon.kernels.volume.op import composite_rays
from recon.kernels.volume.reference import packed_transmittance, ray_offsets

__all__ = ["composite_rays", "packed_transmittance", "ray_offsets"]
