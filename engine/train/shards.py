"""Gaussians split across the processes of a distributed fit: every per-Gaussian tensor cut into shards.

The per-Gaussian ("row") tensors are the model's parameters, their two Adam moments and the density
statistics a strategy names in ``ROW_STATE``. A checkpoint is always the ordinary single-file one, with the
rows of every shard gathered in rank order (``gather_checkpoint``); a process resuming on any number of
processes cuts its own rows out of it (``slice_checkpoint``). ``rebalance`` moves rows between processes when
per-shard densification has made their sizes drift apart, keeping the global order.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from recon.engine.train.densify import RowScope
from recon.engine.train.distributed import (Group, all_gather_ints, all_gather_rows, all_to_all_rows, gather_rows,
                                              shard_range)
from recon.engine.train.optim import MOMENTS, Params, replace_rows

REBALANCE_TOLERANCE = 0.1  # rebalance when the largest shard exceeds the mean by more than this fraction


def _checkpoint_slots(state: dict[str, Any], row_state: tuple[str, ...]) -> list[tuple[dict, str]]:
    """(container, key) of every row tensor in a Gaussian checkpoint, in a fixed order."""
    params = state["model"]["params"]
    slots = [(params, name) for name in params]
    optim = state["optimizer"]
    for group in optim["param_groups"]:
        for index in group["params"]:
            moments = optim["state"].get(index)
            if moments:
                slots += [(moments, key) for key in MOMENTS]
    strategy = state["strategy"]
    slots += [(strategy, key) for key in row_state if strategy.get(key) is not None]
    return slots


def map_checkpoint_rows(state: dict[str, Any], row_state: tuple[str, ...],
                        fn: Callable[[torch.Tensor], torch.Tensor | None]) -> dict[str, Any]:
    """A copy of checkpoint ``state`` with ``fn`` applied to every row tensor (other entries shared)."""
    out = dict(state)
    out["model"] = {**state["model"], "params": dict(state["model"]["params"])}
    out["optimizer"] = {**state["optimizer"],
                        "state": {i: dict(s) for i, s in state["optimizer"]["state"].items()}}
    out["strategy"] = dict(state["strategy"])
    for container, key in _checkpoint_slots(out, row_state):
        container[key] = fn(container[key])
    return out


def slice_checkpoint(state: dict[str, Any], row_state: tuple[str, ...], rank: int, world: int) -> dict[str, Any]:
    """Process ``rank``'s shard of a (whole-model) checkpoint when the rows are split over ``world`` processes."""
    start, stop = shard_range(state["model"]["params"]["means"].shape[0], rank, world)
    return map_checkpoint_rows(state, row_state, lambda t: t[start:stop])


def gather_checkpoint(state: dict[str, Any], row_state: tuple[str, ...], group: Group) -> dict[str, Any] | None:
    """The whole-model checkpoint from every process's shard checkpoint: on rank 0, None elsewhere.

    Every process must call it (it is a sequence of collectives); with one process ``state`` comes back.
    """
    if not group.distributed:
        return state
    gathered = map_checkpoint_rows(state, row_state, lambda t: gather_rows(t, group))
    return gathered if group.is_main else None


def _live_rows(params: Params, optimizer: torch.optim.Optimizer, strategy: Any) -> dict[tuple[str, str], torch.Tensor]:
    rows = {("param", name): p.detach() for name, p in params.items()}
    for group in optimizer.param_groups:
        moments = optimizer.state.get(group["params"][0])
        if moments:
            rows.update({(key, group["name"]): moments[key] for key in MOMENTS})
    for key in strategy.ROW_STATE:
        value = getattr(strategy, key)
        if value is not None:
            rows[("strategy", key)] = value
    return rows


def _overlap(a: tuple[int, int], b: tuple[int, int]) -> int:
    return max(0, min(a[1], b[1]) - max(a[0], b[0]))


def rebalance(params: Params, optimizer: torch.optim.Optimizer, strategy: Any, group: Group,
              tolerance: float = REBALANCE_TOLERANCE) -> list[int]:
    """Even out the shards when the largest exceeds the mean by more than ``tolerance``; returns the shard sizes.

    Rows keep their global order (rank 0's first), so the model the shards make up does not change; each
    row's parameters, Adam moments and density statistics move together. Every process must call it.
    """
    sizes = [s[0] for s in all_gather_ints([params["means"].shape[0]], group)]
    total = sum(sizes)
    if not group.distributed or max(sizes) - min(sizes) <= 1 or max(sizes) <= (1 + tolerance) * total / group.world:
        return sizes
    offsets = [sum(sizes[:r]) for r in range(group.world)]
    mine = (offsets[group.rank], offsets[group.rank] + sizes[group.rank])
    target = [shard_range(total, r, group.world) for r in range(group.world)]
    send = [_overlap(mine, target[r]) for r in range(group.world)]
    receive = [_overlap((offsets[r], offsets[r] + sizes[r]), target[group.rank]) for r in range(group.world)]

    rows = _live_rows(params, optimizer, strategy)
    new = {}
    for dtype in dict.fromkeys(t.dtype for t in rows.values()):  # one all-to-all per dtype (ids are int64)
        keys = [key for key, t in rows.items() if t.dtype == dtype]
        flat = [rows[key].reshape(rows[key].shape[0], -1) for key in keys]
        moved = all_to_all_rows(torch.cat(flat, dim=1), send, receive)
        for key, piece in zip(keys, torch.split(moved, [f.shape[1] for f in flat], dim=1)):
            new[key] = piece.reshape(-1, *rows[key].shape[1:]).contiguous()
    values = {name: new[("param", name)] for name in params}
    moments = {name: {key: new[(key, name)] for key in MOMENTS if (key, name) in new} for name in params}
    replace_rows(optimizer, params, values, moments)
    for key in strategy.ROW_STATE:
        if ("strategy", key) in new:
            setattr(strategy, key, new[("strategy", key)])
    return [t[1] - t[0] for t in target]



class ShardedScope(RowScope):
    """Density decisions on the whole model from one shard (``densify.RowScope`` across processes).

    Every process must call each method at the same point (they are collectives): a cap on Gaussians then
    holds for the whole model, and growth under the cap picks the model's highest gradients wherever they are.
    """

    def __init__(self, group: Group):
        self.group = group

    def total(self, count: int) -> int:
        return sum(s[0] for s in all_gather_ints([count], self.group))

    def highest(self, scores: torch.Tensor, k: int) -> torch.Tensor:
        candidates = scores >= 0
        counts = [c[0] for c in all_gather_ints([int(candidates.sum())], self.group)]
        if sum(counts) <= k:
            return candidates
        if k == 0:
            return torch.zeros_like(candidates)
        best = torch.topk(scores, min(k, counts[self.group.rank])).values  # only these can be among the k
        kth = torch.topk(torch.cat(all_gather_rows(best, self.group)), k).values[-1]
        above, tied = scores > kth, scores == kth
        ranks = all_gather_ints([int(above.sum()), int(tied.sum())], self.group)
        room = k - sum(r[0] for r in ranks) - sum(r[1] for r in ranks[:self.group.rank])  # ties: rank order
        take = torch.nonzero(tied)[:, 0][:max(0, min(room, int(tied.sum())))]
        above[take] = True
        return above

    def share(self, count: int) -> int:
        start, stop = shard_range(count, self.group.rank, self.group.world)
        return stop - start
