"""Training views: images kept on the device, in host memory or on disk give the trainer the same float32 values;
the shuffled order batches views and splits each batch between processes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from recon.engine.scene.camera import Camera
from recon.engine.train import views as V


def _loader(seed: int, count: int, with_mask: bool):
    """Images of three kinds (8-bit, 16-bit, arbitrary float) and optional masks, as ``Scene.load_image`` gives."""
    rng = np.random.default_rng(seed)
    kinds = [lambda s: rng.integers(0, 256, s).astype(np.float32) / 255.0,
             lambda s: rng.integers(0, 65536, s).astype(np.float32) / 65535.0,
             lambda s: rng.random(s, dtype=np.float32)]
    images = [kinds[i % 3]((7 + i, 5, 3 + i % 2)) for i in range(count)]
    masks = [(rng.random((7 + i, 5)) > 0.3).astype(np.float32) if with_mask else None for i in range(count)]
    return lambda i: (images[i], masks[i]), images, masks


def test_compact_is_exact_and_small(seed):
    _, images, _ = _loader(seed, 3, False)
    for image, dtype in zip(images, (np.uint8, np.uint16, np.float32)):
        small = V.compact(image)
        assert small.dtype == dtype
        assert torch.equal(V.expand(torch.from_numpy(small)), torch.from_numpy(image))
    big = np.random.default_rng(seed).integers(0, 256, (301, 257, 4)).astype(np.float32) / 255.0  # vectorised paths
    assert torch.equal(V.expand(torch.from_numpy(V.compact(big))), torch.from_numpy(big))
    assert V.compact(big * 1.001).dtype == np.float32  # not exactly 8-bit any more


@pytest.mark.parametrize("with_mask", [False, True])
def test_every_store_gives_the_same_tensors(seed, with_mask):
    loader, images, masks = _loader(seed, 5, with_mask)
    cameras = [Camera(im.shape[1], im.shape[0], 10.0, 10.0, 2.5, 3.5) for im in images]
    stores = [V.image_store(loader, cameras, torch.device("cpu"), kind) for kind in ("device", "host", "disk", "auto")]
    assert [s.kind for s in stores] == ["device", "host", "disk", "device"]  # auto on the CPU: device
    stores[2].prefetch([3, 1])
    for store in stores:
        for (image, mask), i in zip(store.fetch([3, 0, 1, 4, 2]), [3, 0, 1, 4, 2]):
            assert image.dtype == torch.float32 and torch.equal(image, torch.from_numpy(images[i]))
            if with_mask:
                assert mask.shape == (*images[i].shape[:2], 1) and torch.equal(mask[..., 0], torch.from_numpy(masks[i]))
            else:
                assert mask is None
    assert not stores[2].pending  # prefetched reads were consumed
    assert not any(torch.is_tensor(a) for item in stores[1].items for a in item)  # host store on the CPU: numpy


def test_auto_choice(monkeypatch):
    gib = 1 << 30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10 * gib, 80 * gib))
    monkeypatch.setattr(V, "available_host_bytes", lambda: 100 * gib)
    cuda = torch.device("cuda", 0)
    assert V.choose_images_on("auto", cuda, 2 * gib) == "device"
    assert V.choose_images_on("auto", cuda, 4 * gib) == "host"  # over 30% of the free device memory
    assert V.choose_images_on("auto", cuda, 40 * gib, copies=2) == "disk"  # two processes: 80 GiB > half of 100
    assert V.choose_images_on("host", cuda, 1) == "host"
    assert V.choose_images_on("auto", torch.device("cpu"), 10 ** 15) == "device"


@pytest.mark.parametrize("world", [1, 2])
def test_batches_cover_each_epoch_and_split_between_processes(seed, world):
    loader, images, _ = _loader(seed, 6, False)
    cameras = [Camera(im.shape[1], im.shape[0], 10.0, 10.0, 2.5, 3.5) for im in images]
    store = V.image_store(loader, cameras, torch.device("cpu"), "host")
    per_rank = [V.TrainViews(cameras, store, 3, torch.device("cpu"), rank, world) for rank in range(world)]
    generators = [torch.Generator().manual_seed(seed) for _ in range(world)]
    seen = []
    for _ in range(4):  # two epochs of 6 views in batches of 3
        batches = [views.next_batch(g) for views, g in zip(per_rank, generators)]
        assert all(b.indices == batches[0].indices for b in batches)  # every process draws the same views
        owned = [i for b in batches for i in (v.index for v in b.views)]
        assert owned == batches[0].indices  # the processes render the batch between them, each view once
        for b in batches:
            assert torch.equal(b.viewmats, per_rank[0].viewmats[b.indices])
            for view in b.views:
                assert torch.equal(view.image, torch.from_numpy(images[view.index]))
        seen += batches[0].indices
    assert sorted(seen[:6]) == sorted(seen[6:]) == list(range(6))
