"""Batched steps on one device (Grendel-GS's sqrt(batch) Adam settings) and training images held off the device."""
from __future__ import annotations

import gc
import math

import pytest
import torch

from recon.engine.train import gaussians, rundir
from recon.engine.train.optim import batch_scaling


def test_batch_scaling_follows_grendel():
    factor, eps, betas = batch_scaling(4)
    assert factor == 2.0 and eps == 1e-15 / 2.0
    assert betas == pytest.approx((0.9 ** 4, 0.999 ** 4))
    assert batch_scaling(1) == (1.0, 1e-15, (0.9, 0.999))  # batch 1: the 3DGS settings


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """Demo scenes of 4 and 12 training views (every 8th view is held out), 64 x 64 RGBA."""
    from recon.engine.scene.demo import write_demo_scene

    root = tmp_path_factory.mktemp("views")
    return {count: write_demo_scene(root / f"scene{count}", views=views, resolution=64)
            for count, views in ((4, 5), (12, 14))}


def test_batched_fit_scales_adam_and_sees_every_view(scenes, tmp_path):
    config = gaussians.GaussianFitConfig(steps=4, batch_size=3, init_points=200, seed=2, checkpoint_every=4)
    gaussians.fit(scenes[4], config, tmp_path / "run", resume=False, device=torch.device("cpu"))
    state = rundir.load_checkpoint(tmp_path / "run")
    groups = {g["name"]: g for g in state["optimizer"]["param_groups"]}
    assert groups["opacities"]["lr"] == pytest.approx(config.opacities_lr * math.sqrt(3))
    assert groups["sh0"]["betas"] == pytest.approx((0.9 ** 3, 0.999 ** 3))
    assert all(s["step"] == 4 for s in state["optimizer"]["state"].values())
    assert len(state["rng"]["order"]) == 4 * 3 % 4  # 12 views drawn from an order of 4: three whole epochs


def _tensor_bytes() -> int:
    """Bytes of every distinct tensor storage that Python objects reference right now."""
    gc.collect()
    storages = {}
    for obj in gc.get_objects():
        if issubclass(type(obj), torch.Tensor) and obj.device.type == "cpu":
            storage = obj.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def _held_at_checkpoint(monkeypatch, scene, run_dir, images_on: str) -> int:
    """Tensor bytes alive while the trainer saves its first checkpoint (step 1; this short a fit never densifies)."""
    measured = []
    save = rundir.save_checkpoint

    def measuring_save(run, state, keep=2):
        if not measured:
            measured.append(_tensor_bytes())
        return save(run, state, keep)

    monkeypatch.setattr(rundir, "save_checkpoint", measuring_save)
    config = gaussians.GaussianFitConfig(steps=2, checkpoint_every=1, init_points=300, seed=0, images_on=images_on)
    gaussians.fit(scene, config, run_dir, resume=False, device=torch.device("cpu"))
    return measured[0]


def test_host_images_do_not_grow_the_trainer(scenes, tmp_path, monkeypatch):
    """With --images-on host the tensors the trainer holds do not grow with the number of views; with
    --images-on device they grow by the 8 extra 64x64 RGBA 8-bit images (8 x 16 KiB)."""
    image_bytes = 64 * 64 * 4
    held = {(count, where): _held_at_checkpoint(monkeypatch, scenes[count], tmp_path / f"{where}{count}", where)
            for where in ("host", "device") for count in (4, 12)}
    assert abs(held[12, "host"] - held[4, "host"]) < image_bytes
    assert held[12, "device"] - held[4, "device"] >= 8 * image_bytes


def test_masked_pixels_do_not_count(seed):
    """A view's mask takes pixels out of the loss: zero gradient there, the unmasked gradient elsewhere."""
    from recon.engine.scene.camera import Camera
    from recon.engine.train.views import TrainView

    g = torch.Generator().manual_seed(seed)
    image = torch.rand(6, 7, 3, generator=g, requires_grad=True)
    target = torch.rand(6, 7, 4, generator=g)
    mask = (torch.rand(6, 7, 1, generator=g) > 0.5).float()
    camera, background = Camera(7, 6, 5.0, 5.0, 3.5, 3.0), torch.rand(3, generator=g)
    masked, = torch.autograd.grad(gaussians._view_loss(image, TrainView(0, camera, target, mask), background, 0.0),
                                  image)
    plain, = torch.autograd.grad(gaussians._view_loss(image, TrainView(0, camera, target), background, 0.0), image)
    assert not masked[mask[..., 0] == 0].any()
    torch.testing.assert_close(masked[mask[..., 0] == 1], plain[mask[..., 0] == 1])
