"""PSNR and SSIM against closed forms and known properties."""
import math

import torch

from recon.engine.train.metrics import photometric_loss, psnr, ssim


def test_psnr_of_uniform_error(seed):
    a = torch.rand(2, 17, 23, 3)
    b = a + 0.1
    assert math.isclose(psnr(a, b).item(), 20.0, abs_tol=1e-4)


def test_ssim_identity_and_bounds(seed):
    a = torch.rand(1, 31, 29, 3)
    assert math.isclose(ssim(a, a).item(), 1.0, abs_tol=1e-5)
    noisy = (a + 0.3 * torch.randn_like(a)).clamp(0, 1)
    s = ssim(a, noisy).item()
    assert -1.0 <= s < 0.9
    assert photometric_loss(a, a).item() < 1e-5
    assert photometric_loss(a, noisy).item() > 0.05
