"""Suite-wide set-up: Triton runs in its CPU interpreter where there is no GPU; shared data fixtures."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    # Must be set before any Triton kernel is defined (at import of the kernel modules).
    os.environ.setdefault("TRITON_INTERPRET", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RECON_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data; the calling test is skipped with the reason when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data {path} is absent (see ../shared/data/MANIFEST.md)")
    return path


requires_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
# Where the kernel comparisons run: on a GPU the Triton kernels run for real (make gpu-check), else interpreted.
KERNEL_DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture(autouse=True, scope="session")
def private_cache(tmp_path_factory) -> Path:
    """recon's caches (undistorted images) go to a folder of this run, never the user's ~/.cache/recon."""
    folder = tmp_path_factory.mktemp("recon-cache")
    os.environ["RECON_CACHE"] = str(folder)
    return folder


@pytest.fixture
def seed() -> int:
    """A fresh seed per test run (printed on failure), unless RECON_TEST_SEED fixes it."""
    value = int(os.environ.get("RECON_TEST_SEED", int.from_bytes(os.urandom(4), "little")))
    torch.manual_seed(value)
    return value
