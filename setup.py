"""Packaging for recon: the folders at the root install under the ``recon.`` import prefix."""
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
LAYERS = ("kernels", "engine", "apps")


def _packages() -> tuple[list[str], dict[str, str]]:
    """Map ``engine/scene`` to ``recon.engine.scene`` and so on, without a ``src/recon`` copy."""
    packages, package_dir = ["recon"], {"recon": "recon"}
    for layer in LAYERS:
        packages.append(f"recon.{layer}")
        package_dir[f"recon.{layer}"] = layer
        for sub in find_packages(where=layer):
            packages.append(f"recon.{layer}.{sub}")
            package_dir[f"recon.{layer}.{sub}"] = f"{layer}/{sub.replace('.', '/')}"
    return packages, package_dir


packages, package_dir = _packages()

setup(
    name="recon",
    version="0.1.0",
    description="3D reconstruction and rendering: Gaussian splatting, hash-grid NeRF, SDF, marching cubes, SMPL",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=packages,
    package_dir=package_dir,
    package_data={"recon.kernels.cuda": ["*.cu", "*.cuh", "*.fatbin"],  # fatbins: built by `make cuda`
                  "recon.engine.smpl": ["data/*.npz", "data/*.md"]},  # the CMU pose prior
    install_requires=[
        "torch>=2.4",
        "triton>=3.0; platform_system == 'Linux'",
        "numpy",
        "plyfile>=1.0",
        "imageio>=2.30",
        "imageio-ffmpeg",
        "tqdm",
        "pycolmap>=4.2,<4.3",  # structure from motion (recon sfm); CPU wheels, no COLMAP binary needed
        "viser>=1.0",  # the browser viewer (recon view, recon fit --view)
    ],
    extras_require={
        "cuda": ["pycuda"],
        "mesh": ["open3d>=0.18"],
        "test": ["pytest>=7", "scikit-image>=0.22", "triton==3.6.0; platform_system == 'Linux'"],
    },
    entry_points={"console_scripts": ["recon = recon.apps.cli:main"]},
)
