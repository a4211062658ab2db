"""Models: 3D Gaussians, hash-grid NeRF, SDF/occupancy fields, the SMPL body model."""
