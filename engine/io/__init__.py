"""Import and export: atomic writes, PLY (3DGS and meshes), images, video."""
