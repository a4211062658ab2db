"""Test-split evaluation shared by every scene model: PSNR and SSIM, with the renders written as PNGs."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from recon.engine.scene.scene import Scene
from recon.engine.train.metrics import psnr, ssim


def evaluate(model: Any, scene: Scene, out_dir: Path | None = None) -> dict[str, float]:
    """PSNR and SSIM of ``model.render`` over the test split (renders written to ``out_dir`` when given).

    Pixels outside a view's valid mask (``Scene.load_valid``: undistorted images' pixels with no source) are
    left out of both.
    """
    from recon.engine.io.images import write_image

    if not scene.test_indices:
        return {}
    psnrs, ssims = [], []
    with torch.no_grad():
        for index in scene.test_indices:
            frame = scene.frames[index]
            rgb = model.render(frame.camera, background=scene.background)["rgb"]
            target = torch.as_tensor(scene.load_image(index), device=rgb.device)
            valid = scene.load_valid(index)
            valid = None if valid is None else torch.as_tensor(valid, device=rgb.device)
            psnrs.append(float(psnr(rgb, target, valid)))
            ssims.append(float(ssim(rgb, target, mask=valid)))
            if out_dir is not None:
                write_image(out_dir / f"{Path(frame.name).stem}.png", rgb.cpu().numpy())
    return {"test_psnr": float(np.mean(psnrs)), "test_ssim": float(np.mean(ssims)), "test_views": len(psnrs)}
