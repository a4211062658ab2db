"""recon: 3D reconstruction and rendering with its own GPU kernels.

The layers install as ``recon.kernels`` (GPU ops with torch references), ``recon.engine`` (scenes,
models, training, editing, import/export) and ``recon.apps`` (the ``recon`` command line).
"""

__version__ = "0.1.0"
