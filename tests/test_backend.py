"""The dispatch point: explicit choice, RECON_BACKEND, defaults per device, fallbacks with a warning."""
import pytest
import torch

from recon.kernels import backend as B


def test_cpu_defaults_to_torch(monkeypatch):
    monkeypatch.delenv("RECON_BACKEND", raising=False)
    assert B.resolve_backend("rasterize", "cpu") == "torch"


def test_env_forces_backend(monkeypatch):
    monkeypatch.setenv("RECON_BACKEND", "torch")
    assert B.resolve_backend("rasterize", "cpu", None) == "torch"


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="unknown backend"):
        B.resolve_backend("rasterize", "cpu", "opengl")


def test_triton_on_cpu_needs_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert B.resolve_backend("rasterize", "cpu", "triton") == "triton"
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    B._warn_once.cache_clear()
    with pytest.warns(B.BackendFallbackWarning, match="using 'torch'"):
        assert B.resolve_backend("rasterize", "cpu", "triton") == "torch"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback without a GPU")
def test_cuda_without_gpu_falls_back(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    B._warn_once.cache_clear()
    with pytest.warns(B.BackendFallbackWarning):
        assert B.resolve_backend("rasterize", "cpu", "cuda") == "torch"
