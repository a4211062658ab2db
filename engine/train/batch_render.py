"""Rendering one step's batch of views for the Gaussian trainer: on one device, or sharded across processes.

``render_local`` renders every view of the batch with the whole model (views of one image size in one call).
``render_sharded`` is the distributed path (as in gsplat and Grendel-GS): every process holds a shard of the
Gaussians and renders the views it owns. Each process projects its shard into every view of the batch, sends
each view's visible projected Gaussians to the process that owns the view (one differentiable all-to-all per
step), and the owners blend what they received, in rank order, which is the order of the whole model. The
backward pass returns the gradients the same way, so every shard gets the gradient of the whole batch's loss.

Both return a ``Rendered``: images of the owned views, and per image size the projection of the local
Gaussians (``infos``, with ``n_cameras`` = the batch size) on which density control reads screen-space
gradients after backward.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from recon.engine.models.gaussians import GaussianModel
from recon.engine.train.distributed import Group, all_gather_ints, all_to_all_rows, exchange_rows, shard_range
from recon.engine.train.views import Batch

# What travels per visible (view, Gaussian): name -> number of columns (colours are RGB).
PROJECTED_COLUMNS = {"means2d": 2, "conics": 3, "colors": 3, "opacities": 1, "depths": 1, "radii": 2}


@dataclass
class Rendered:
    """A rendered batch: ``images`` [H, W, 3] of the owned views, in batch order, and what backward needs."""

    images: list[torch.Tensor]
    infos: list[dict[str, Any]]  # per image size: means2d (grad after backward), radii, width, height, n_cameras
    link: torch.Tensor | float = 0.0  # add to the loss: a zero that ties every process into the backward exchange
    finish: Callable[[], None] = field(default=lambda: None)  # call after backward (returns absgrads to shards)


def size_groups(cameras: list) -> dict[tuple[int, int], list[int]]:
    """Batch positions by image size (width, height), sizes in order of first appearance."""
    groups: dict[tuple[int, int], list[int]] = {}
    for j, cam in enumerate(cameras):
        groups.setdefault((cam.width, cam.height), []).append(j)
    return groups


def render_local(model: GaussianModel, batch: Batch, backgrounds: torch.Tensor, absgrad: bool) -> Rendered:
    """Every view of ``batch`` rendered with the whole ``model``; ``backgrounds`` [B, 3]."""
    images: list[torch.Tensor | None] = [None] * batch.size
    infos = []
    for (width, height), positions in size_groups(batch.cameras).items():
        image, _, info = model.rasterize(batch.viewmats[positions], batch.Ks[positions], width, height,
                                         background=backgrounds[positions], absgrad=absgrad)
        info["n_cameras"] = batch.size
        infos.append(info)
        for k, j in enumerate(positions):
            images[j] = image[k]
    return Rendered([images[j] for j in batch.owned], infos)


def _pack(projected: dict[str, torch.Tensor], k: int, ids: torch.Tensor) -> torch.Tensor:
    """Rows [len(ids), 12] of view k's projected Gaussians ``ids``."""
    columns = [projected[name][k, ids].reshape(len(ids), width).float()
               for name, width in PROJECTED_COLUMNS.items()]
    return torch.cat(columns, dim=1)


def _unpack(rows: torch.Tensor) -> dict[str, torch.Tensor]:
    """``_pack``'s columns of rows [C, M, 12] back as rasterize_projected's inputs."""
    out = dict(zip(PROJECTED_COLUMNS, torch.split(rows, list(PROJECTED_COLUMNS.values()), dim=-1)))
    out["opacities"], out["depths"] = out["opacities"][..., 0], out["depths"][..., 0]
    out["radii"] = out["radii"].detach().round().to(torch.int32)
    return out


def render_sharded(model: GaussianModel, batch: Batch, backgrounds: torch.Tensor, absgrad: bool,
                   group: Group) -> Rendered:
    """The owned views of ``batch`` rendered from the Gaussians of every process (``model``: this shard).

    Every process must call it with the same batch, add ``link`` to its loss, run backward, then ``finish``.
    """
    from recon.kernels.splatting import project, rasterize_projected

    p = model.params
    activated = (p["means"], p["quats"], torch.exp(p["scales"]), torch.sigmoid(p["opacities"]),
                 torch.cat([p["sh0"], p["shN"]], dim=1))
    owner = [r for r in range(group.world) for _ in range(*shard_range(batch.size, r, group.world))]
    groups = size_groups(batch.cameras)

    # 1. Project this shard into every view; keep each view's visible rows, packed for its owner.
    infos, outgoing, sent_ids = [], [None] * batch.size, [None] * batch.size
    for (width, height), positions in groups.items():
        projected = project(*activated, batch.viewmats[positions], batch.Ks[positions], width, height,
                            sh_degree=model.active_sh_degree, antialiased=model.antialiased)
        means2d = projected["means2d"]
        if means2d.requires_grad:
            means2d.retain_grad()
        if absgrad:
            means2d.absgrad = torch.zeros_like(means2d)
        infos.append({"means2d": means2d, "radii": projected["radii"], "width": width, "height": height,
                      "n_cameras": batch.size})
        visible = (projected["radii"] > 0).any(-1)
        for k, j in enumerate(positions):
            ids = torch.nonzero(visible[k])[:, 0]
            sent_ids[j] = (len(infos) - 1, k, ids)
            outgoing[j] = _pack(projected, k, ids)

    # 2. Exchange: views in batch order are grouped by owner already (owners hold contiguous positions).
    counts = all_gather_ints([rows.shape[0] for rows in outgoing], group)  # [source rank][view]
    send = [sum(rows.shape[0] for j, rows in enumerate(outgoing) if owner[j] == r) for r in range(group.world)]
    mine = list(batch.owned)
    receive = [sum(counts[s][j] for j in mine) for s in range(group.world)]
    received = exchange_rows(torch.cat(outgoing), send, receive)  # blocks [source][owned view]

    # 3. Blend the owned views: each view's rows from every source, in rank order, padded per image size.
    start, where = 0, {}
    for s in range(group.world):
        for j in mine:
            where.setdefault(j, []).append(torch.arange(start, start + counts[s][j], device=received.device))
            start += counts[s][j]
    padded_rows = torch.cat([received, received.new_zeros(1, received.shape[1])])  # the last row: empty padding
    images: dict[int, torch.Tensor] = {}
    returned_absgrad = []  # (view, rows in `received`, padded absgrad [M, 2]) to send back after backward
    for (width, height), positions in groups.items():
        owned = [j for j in positions if j in batch.owned]
        if not owned:
            continue
        index = [torch.cat(where[j]) for j in owned]
        longest = max(len(i) for i in index)
        table = torch.full((len(owned), longest), received.shape[0], dtype=torch.long, device=received.device)
        for k, i in enumerate(index):
            table[k, :len(i)] = i
        blended = _unpack(padded_rows[table])
        image, _, meta = rasterize_projected(blended, width, height, background=backgrounds[owned], absgrad=absgrad)
        for k, j in enumerate(owned):
            images[j] = image[k]
            if absgrad:
                returned_absgrad.append((index[k], meta["means2d"], k))

    def finish() -> None:
        """Send each visible row's absgrad back to its shard and add it to the local projection's absgrad."""
        if not absgrad:
            return
        back = received.new_zeros(received.shape[0], 2)
        for rows, means2d, k in returned_absgrad:
            back[rows] = means2d.absgrad[k, :len(rows)]
        arrived = all_to_all_rows(back, receive, send)
        start = 0
        for j in range(batch.size):
            info_index, k, ids = sent_ids[j]
            target = infos[info_index]["means2d"].absgrad
            target[k, ids] += arrived[start:start + len(ids)]
            start += len(ids)

    return Rendered([images[j] for j in mine], infos, link=0.0 * received.sum(), finish=finish)
