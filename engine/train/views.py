"""Training views for the Gaussian trainer: where their images live, and the order they are visited in.

Images (and an optional per-pixel mask per view: pixels with mask 0 do not count in the loss) are kept

* ``device``: on the training device, all of them, for the whole fit (fastest; memory grows with the views);
* ``host``: in host memory (pinned when training on a GPU) and copied to the device per step;
* ``disk``: read from disk per step, the next step's views read ahead on a background thread;
* ``auto``: ``device`` when they take at most ``DEVICE_FRACTION`` of the free device memory, else ``host`` when
  they take at most ``HOST_FRACTION`` of the available host memory, else ``disk``.

Every store keeps an image in the smallest dtype that holds it exactly (uint8 for 8-bit files, uint16 for
16-bit ones, else float32) and expands it to float32 on the device, so the fitted values are the same
whichever store is used, and 8-bit images take a quarter of the memory and transfer.

``TrainViews`` draws batches from a shuffled order that every process of a distributed fit shares (they
draw with the same generator) and fetches only the views the calling process renders.
"""
from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from recon.engine.scene.camera import Camera, camera_matrices

IMAGES_ON = ("auto", "device", "host", "disk")
DEVICE_FRACTION = 0.3  # auto: images on the device when they need at most this share of its free memory
HOST_FRACTION = 0.5  # auto: else in host memory when they need at most this share of the available memory

# Training-view position -> (image [H, W, C] float32 in [0, 1], mask [H, W] float32 or None).
Loader = Callable[[int], "tuple[np.ndarray, np.ndarray | None]"]


@dataclass
class TrainView:
    """One training view of a step, on the device."""

    index: int  # position among the training views
    camera: Camera
    image: torch.Tensor  # [H, W, 3 or 4] float32 (RGBA: straight colour and alpha)
    mask: torch.Tensor | None = None  # [H, W, 1] float32 weights of the pixels in the loss (None: all count)


def compact(array: np.ndarray) -> np.ndarray:
    """``array`` (float32 in [0, 1]) as uint8 or uint16 when every value is k/255 or k/65535 (as decoded 8- and
    16-bit files are), else as float32; ``expand`` gives back exactly the same float32 values."""
    array = np.ascontiguousarray(array, dtype=np.float32)
    for dtype, scale in ((np.uint8, 255.0), (np.uint16, 65535.0)):
        levels = np.rint(array * np.float32(scale))
        if (levels.size and levels.min() >= 0 and levels.max() <= scale
                and np.array_equal(levels.astype(np.float32) / np.float32(scale), array)):
            return levels.astype(dtype)
    return array


def expand(tensor: torch.Tensor) -> torch.Tensor:
    """A ``compact`` array (as a tensor) back as float32 in [0, 1]."""
    if tensor.dtype == torch.uint8:
        return tensor.float() / 255.0
    if tensor.dtype == torch.uint16:
        return tensor.float() / 65535.0
    return tensor.float()


def _compact_pair(loader: Loader, index: int) -> tuple[np.ndarray, np.ndarray | None]:
    image, mask = loader(index)
    return compact(image), None if mask is None else compact(mask[..., None])


class ImageStore:
    """Images (and masks) of the training views; ``fetch`` returns them as float32 tensors on ``device``."""

    kind = ""

    def __init__(self, loader: Loader, count: int, device: torch.device):
        self.loader, self.count, self.device = loader, count, torch.device(device)

    def prefetch(self, indices: list[int]) -> None:
        """Start reading ``indices`` ahead of ``fetch`` where that helps (no-op by default)."""

    def fetch(self, indices: list[int]) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        return [self._fetch_one(i) for i in indices]

    def _fetch_one(self, index: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def _to_device(self, image: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        non_blocking = image.is_pinned()
        image = expand(image.to(self.device, non_blocking=non_blocking))
        if mask is not None:
            mask = expand(mask.to(self.device, non_blocking=non_blocking))
        return image, mask


class DeviceImages(ImageStore):
    """Every image on the training device for the whole fit."""

    kind = "device"

    def __init__(self, loader: Loader, count: int, device: torch.device):
        super().__init__(loader, count, device)
        self.items = []
        for i in range(count):
            image, mask = _compact_pair(loader, i)
            self.items.append((torch.from_numpy(image).to(self.device),
                               None if mask is None else torch.from_numpy(mask).to(self.device)))

    def _fetch_one(self, index: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        image, mask = self.items[index]
        return expand(image), None if mask is None else expand(mask)


class HostImages(ImageStore):
    """Every image in host memory, copied to the device when a step uses it.

    On a GPU they are pinned torch tensors (asynchronous copies); on the CPU they stay numpy arrays, so that
    nothing the trainer holds as a tensor grows with the number of views.
    """

    kind = "host"

    def __init__(self, loader: Loader, count: int, device: torch.device):
        super().__init__(loader, count, device)
        pin = self.device.type == "cuda"
        self.items = []
        for i in range(count):
            pair = _compact_pair(loader, i)
            self.items.append(tuple(None if a is None else (torch.from_numpy(a).pin_memory() if pin else a)
                                    for a in pair))

    def _fetch_one(self, index: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        image, mask = (None if a is None else torch.as_tensor(a) for a in self.items[index])
        return self._to_device(image, mask)


class DiskImages(ImageStore):
    """Images read from disk when a step needs them; ``prefetch`` reads the next step's on worker threads."""

    kind = "disk"

    def __init__(self, loader: Loader, count: int, device: torch.device, workers: int = 2):
        super().__init__(loader, count, device)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="recon-images")
        self.pending: dict[int, Future] = {}

    def prefetch(self, indices: list[int]) -> None:
        for i in indices:
            if i not in self.pending:
                self.pending[i] = self.pool.submit(_compact_pair, self.loader, i)

    def _fetch_one(self, index: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        future = self.pending.pop(index, None)
        image, mask = future.result() if future is not None else _compact_pair(self.loader, index)
        return self._to_device(torch.from_numpy(image), None if mask is None else torch.from_numpy(mask))


STORES = {"device": DeviceImages, "host": HostImages, "disk": DiskImages}


def available_host_bytes() -> int | None:
    """Memory the system can still hand out (Linux ``sysconf``), or None where unknown."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def choose_images_on(requested: str, device: torch.device, needed_bytes: int, copies: int = 1) -> str:
    """Resolve ``auto`` (see the module docstring); ``copies``: processes on this host that each hold a copy."""
    if requested != "auto":
        return requested
    device = torch.device(device)
    if device.type != "cuda":
        return "device"  # device memory is host memory: nothing to gain by copying per step
    free, _ = torch.cuda.mem_get_info(device)
    if needed_bytes <= DEVICE_FRACTION * free:
        return "device"
    host = available_host_bytes()
    return "host" if host is None or needed_bytes * copies <= HOST_FRACTION * host else "disk"


def image_store(loader: Loader, cameras: list[Camera], device: torch.device, images_on: str,
                copies: int = 1) -> ImageStore:
    """The store ``images_on`` asks for (``auto`` sized from the first image and every camera's pixel count)."""
    if images_on not in IMAGES_ON:
        raise ValueError(f"images_on must be one of {IMAGES_ON}, got {images_on!r}")
    if images_on == "auto":
        image, mask = _compact_pair(loader, 0)
        per_pixel = image.itemsize * image.shape[-1] + (0 if mask is None else mask.itemsize)
        needed = per_pixel * sum(c.width * c.height for c in cameras)
        images_on = choose_images_on(images_on, device, needed, copies)
    return STORES[images_on](loader, len(cameras), device)


@dataclass
class Batch:
    """The views of one optimisation step (the same in every process) and the images of those this process renders."""

    indices: list[int]  # training-view positions
    cameras: list[Camera]
    viewmats: torch.Tensor  # [B, 4, 4] on the device
    Ks: torch.Tensor  # [B, 3, 3]
    owned: range  # positions in the batch that this process renders
    views: list[TrainView]  # the owned views, in batch order

    @property
    def size(self) -> int:
        return len(self.indices)


class TrainViews:
    """Batches of training views in a shuffled order that is restarted when used up (and saved in checkpoints)."""

    def __init__(self, cameras: list[Camera], store: ImageStore, batch_size: int, device: torch.device,
                 rank: int = 0, world: int = 1):
        from recon.engine.train.distributed import shard_range

        self.cameras, self.store, self.batch_size = cameras, store, batch_size
        self.viewmats, self.Ks = camera_matrices(cameras, device)
        self.owned = range(*shard_range(batch_size, rank, world))
        self.order: list[int] = []

    def _draw(self, generator: torch.Generator) -> list[int]:
        indices = []
        for _ in range(self.batch_size):
            if not self.order:
                self.order = torch.randperm(len(self.cameras), generator=generator).tolist()
            indices.append(self.order.pop())
        return indices

    def next_batch(self, generator: torch.Generator) -> Batch:
        """The next ``batch_size`` views; the owned ones are fetched, and the next step's read ahead."""
        indices = self._draw(generator)
        owned = [indices[j] for j in self.owned]
        fetched = self.store.fetch(owned)
        if len(self.order) >= self.batch_size:  # the next batch is known without drawing: read it ahead
            upcoming = self.order[len(self.order) - self.batch_size:][::-1]
            self.store.prefetch([upcoming[j] for j in self.owned])
        views = [TrainView(i, self.cameras[i], image, mask) for i, (image, mask) in zip(owned, fetched)]
        return Batch(indices, [self.cameras[i] for i in indices], self.viewmats[indices], self.Ks[indices],
                     self.owned, views)
