"""The processes of a distributed fit (torch.distributed: NCCL on GPUs, gloo on CPUs) and the collectives it uses.

A fit runs distributed when it is started by ``torchrun`` (or ``recon fit --gpus N``) with more than one
process: ``init_from_env`` then joins the process group, and ``current`` describes it to the trainer. With a
single process every helper here degenerates to the identity, so the trainer has one code path.

Rows are the unit of distribution: Gaussians are split into contiguous row ranges (``shard_range``), and
concatenating the shards in rank order gives the whole model.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Group:
    """This process's place in the fit: ``rank`` of ``world`` processes, training on ``device``."""

    rank: int
    world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """True for the process that logs, shows progress and writes files (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def env_world_size() -> int:
    """The number of processes ``torchrun`` started (1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_from_env(device: torch.device) -> Group:
    """Join the process group that ``torchrun`` describes in the environment, if there is more than one process.

    Each process trains on GPU ``LOCAL_RANK`` (NCCL) when ``device`` is a CUDA device, else on the CPU (gloo).
    """
    device = torch.device(device)
    if env_world_size() <= 1 or dist.is_initialized():
        return current(device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return current(device)


def current(device: torch.device) -> Group:
    """The group of the running fit (a world of one when torch.distributed is not initialised)."""
    device = torch.device(device)
    if not (dist.is_available() and dist.is_initialized()):
        return Group(0, 1, device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return Group(dist.get_rank(), dist.get_world_size(), device)


def shutdown() -> None:
    """Leave the process group (after the last collective)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard_range(total: int, rank: int, world: int) -> tuple[int, int]:
    """Rows [start, stop) of ``rank`` when ``total`` rows are split into ``world`` contiguous, near-equal parts."""
    base, extra = divmod(total, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def all_gather_ints(values: list[int], group: Group) -> list[list[int]]:
    """Every process's ``values`` (same length everywhere), indexed by rank."""
    if not group.distributed:
        return [list(values)]
    local = torch.tensor(values, dtype=torch.int64, device=group.device)
    gathered = [torch.empty_like(local) for _ in range(group.world)]
    dist.all_gather(gathered, local)
    return [t.tolist() for t in gathered]


def all_reduce_sum(value: torch.Tensor, group: Group) -> torch.Tensor:
    """The sum of ``value`` over the processes (``value`` itself with one process)."""
    if not group.distributed:
        return value
    total = value.detach().clone()
    dist.all_reduce(total)
    return total


def all_to_all_rows(rows: torch.Tensor, send: list[int], receive: list[int]) -> torch.Tensor:
    """Send ``rows`` [sum(send), F] in consecutive blocks of ``send[r]`` rows to rank r; returns the blocks
    received, [sum(receive), F], in rank order. Not differentiable (see ``exchange_rows``)."""
    out = rows.new_empty(sum(receive), *rows.shape[1:])
    dist.all_to_all_single(out, rows.contiguous(), receive, send)
    return out


class _ExchangeRows(torch.autograd.Function):
    """``all_to_all_rows`` whose backward sends the gradients back the way the rows came."""

    @staticmethod
    def forward(ctx, rows: torch.Tensor, send: list[int], receive: list[int]) -> torch.Tensor:
        ctx.send, ctx.receive = send, receive
        return all_to_all_rows(rows, send, receive)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return all_to_all_rows(grad, ctx.receive, ctx.send), None, None


def exchange_rows(rows: torch.Tensor, send: list[int], receive: list[int]) -> torch.Tensor:
    """Differentiable all-to-all of rows (see ``all_to_all_rows``).

    Every process must use the result in its loss (and call backward once), since the backward pass is a
    collective too.
    """
    return _ExchangeRows.apply(rows, send, receive)


def gather_rows(tensor: torch.Tensor, group: Group) -> torch.Tensor | None:
    """The row shards of every process concatenated in rank order, on rank 0's CPU (None on other ranks).

    One process's shard is in flight at a time, so rank 0 needs memory for the result plus one shard.
    With a single process ``tensor`` itself comes back.
    """
    if not group.distributed:
        return tensor
    sizes = [s[0] for s in all_gather_ints([tensor.shape[0]], group)]
    if not group.is_main:
        if sizes[group.rank]:
            dist.send(tensor.detach().contiguous(), dst=0)
        return None
    parts = [tensor.detach().cpu()]
    for rank in range(1, group.world):
        if sizes[rank]:
            buffer = tensor.new_empty(sizes[rank], *tensor.shape[1:])
            dist.recv(buffer, src=rank)
            parts.append(buffer.cpu())
    return torch.cat(parts)


def broadcast_object(value, group: Group):
    """Rank 0's ``value`` in every process."""
    if not group.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_objects(value, group: Group) -> list:
    """Every process's (picklable, small) ``value``, indexed by rank."""
    if not group.distributed:
        return [value]
    out = [None] * group.world
    dist.all_gather_object(out, value)
    return out


def all_gather_rows(tensor: torch.Tensor, group: Group) -> list[torch.Tensor]:
    """Every process's ``tensor`` (first dimensions may differ), indexed by rank."""
    if not group.distributed:
        return [tensor]
    sizes = [s[0] for s in all_gather_ints([tensor.shape[0]], group)]
    padded = torch.cat([tensor, tensor.new_zeros(max(sizes) - tensor.shape[0], *tensor.shape[1:])])
    gathered = [torch.empty_like(padded) for _ in range(group.world)]
    dist.all_gather(gathered, padded.contiguous())
    return [t[:size] for t, size in zip(gathered, sizes)]
