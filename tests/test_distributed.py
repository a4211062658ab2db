"""Distributed Gaussian training on the CPU with gloo and two processes.

The sharded render (each process projects its shard, an all-to-all sends each view's visible Gaussians to the
view's owner) must equal a one-process render of the whole model, image and every gradient; shard
bookkeeping (rebalancing, checkpoints gathered into one file and cut into shards again) must lose nothing.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from random_splats import random_cameras, random_gaussians
from recon.engine.models.gaussians import GaussianModel
from recon.engine.scene.camera import Camera
from recon.engine.train import distributed
from recon.engine.train.batch_render import render_local, render_sharded
from recon.engine.train.densify import DefaultStrategy, RowScope
from recon.engine.train.optim import append_rows, make_adam
from recon.engine.train.shards import ShardedScope, gather_checkpoint, rebalance, slice_checkpoint
from recon.engine.train.views import Batch

WORLD = 2
N_GAUSSIANS = 301  # odd: the shards differ in size
SIZES = [(29, 23), (20, 31), (29, 23)]  # two image sizes in one batch, the first owned by rank 0, the rest by 1


def _spawn(worker, *args) -> None:
    """Run ``worker(rank, *args)`` in ``WORLD`` processes joined in a gloo group (file rendezvous)."""
    with tempfile.TemporaryDirectory() as folder:
        mp.spawn(_entry, args=(worker, str(Path(folder) / "rendezvous"), args), nprocs=WORLD)


def _entry(rank: int, worker, rendezvous: str, args: tuple) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=WORLD)
    try:
        worker(rank, *args)
    finally:
        dist.destroy_process_group()


def _scene(seed: int):
    """Raw Gaussians, a batch of ``SIZES`` views (for ``rank``), backgrounds and per-pixel loss weights."""
    g = torch.Generator().manual_seed(seed)
    raw = random_gaussians(N_GAUSSIANS, g)
    cameras, viewmats, Ks = [], [], []
    for width, height in SIZES:
        v, k = random_cameras(1, width, height, g)
        viewmats.append(v)
        Ks.append(k)
        cameras.append(Camera(width, height, float(k[0, 0, 0]), float(k[0, 1, 1]), float(k[0, 0, 2]),
                              float(k[0, 1, 2])))
    backgrounds = torch.rand(len(SIZES), 3, generator=g)
    weights = [torch.rand(h, w, 3, generator=g) for w, h in SIZES]
    return raw, cameras, torch.cat(viewmats), torch.cat(Ks), backgrounds, weights


def _batch(cameras, viewmats, Ks, rank: int, world: int) -> Batch:
    owned = range(*distributed.shard_range(len(cameras), rank, world))
    return Batch(list(range(len(cameras))), cameras, viewmats, Ks, owned, views=[])


def _render_and_backward(model, batch, backgrounds, weights, render):
    rendered = render(model, batch, backgrounds, True)
    loss = sum((image * weights[j]).sum() for image, j in zip(rendered.images, batch.owned)) + rendered.link
    loss.backward()
    rendered.finish()
    return rendered


def _model(params: dict[str, torch.Tensor]) -> GaussianModel:
    return GaussianModel(params, sh_degree=1)


def _density_statistics(model, infos) -> tuple[torch.Tensor, torch.Tensor]:
    """What density control accumulates from a step: summed screen-gradient norms and view counts per Gaussian."""
    strategy = DefaultStrategy(absgrad=True)
    for info in infos:
        strategy.step_pre_optimizer(model.params, info, step=1)
    return strategy.grad2d, strategy.count


def _sharded_worker(rank: int, seed: int, out: str) -> None:
    raw, cameras, viewmats, Ks, backgrounds, weights = _scene(seed)
    group = distributed.current("cpu")
    start, stop = distributed.shard_range(N_GAUSSIANS, rank, WORLD)
    model = _model({k: v[start:stop] for k, v in raw.items()})
    rendered = _render_and_backward(model, _batch(cameras, viewmats, Ks, rank, WORLD), backgrounds, weights,
                                    lambda *a: render_sharded(*a, group=group))
    result = {
        "images": [image.detach() for image in rendered.images],
        "grads": {k: p.grad for k, p in model.params.items()},
        "means2d_grad": [info["means2d"].grad for info in rendered.infos],
        "absgrad": [info["means2d"].absgrad for info in rendered.infos],
        "stats": _density_statistics(model, rendered.infos),
    }
    torch.save(result, f"{out}/rank{rank}.pt")


def test_sharded_render_and_gradients_equal_one_process(seed, tmp_path):
    _spawn(_sharded_worker, seed, str(tmp_path))
    shards = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]

    raw, cameras, viewmats, Ks, backgrounds, weights = _scene(seed)
    model = _model(raw)
    rendered = _render_and_backward(model, _batch(cameras, viewmats, Ks, 0, 1), backgrounds, weights, render_local)

    images = [image for shard in shards for image in shard["images"]]  # rank 0 owns view 0, rank 1 views 1, 2
    assert len(images) == len(SIZES)
    for got, want in zip(images, rendered.images):
        torch.testing.assert_close(got, want.detach(), rtol=1e-5, atol=1e-5)
    for name, param in model.params.items():
        got = torch.cat([shard["grads"][name] for shard in shards])
        assert param.grad.abs().max() > 0, name
        torch.testing.assert_close(got, param.grad, rtol=1e-5, atol=1e-5, msg=name)
    for i, info in enumerate(rendered.infos):  # screen-space gradients and absgrads, per image size
        for key, want in (("means2d_grad", info["means2d"].grad), ("absgrad", info["means2d"].absgrad)):
            got = torch.cat([shard[key][i] for shard in shards], dim=1)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5, msg=key)
    for k, want in enumerate(_density_statistics(model, rendered.infos)):
        assert want.abs().max() > 0
        torch.testing.assert_close(torch.cat([shard["stats"][k] for shard in shards]), want, rtol=1e-5, atol=1e-9)


def _shards_worker(rank: int, seed: int, out: str) -> None:
    """Uneven shards (rank 0 densified more) are rebalanced without changing the model they make up; a gathered
    checkpoint cut into shards gives back every process's rows."""
    group = distributed.current("cpu")
    g = torch.Generator().manual_seed(seed)
    raw = random_gaussians(N_GAUSSIANS, g)
    start, stop = distributed.shard_range(N_GAUSSIANS, rank, WORLD)
    model = _model({k: v[start:stop] for k, v in raw.items()})
    optimizer = make_adam(model.params, {k: 0.01 for k in model.params})
    strategy = DefaultStrategy()
    sum(p.square().sum() for p in model.params.values()).backward()
    optimizer.step()
    if rank == 0:  # rank 0 grows by 40%: its shard is now far larger than rank 1's
        append_rows(optimizer, model.params, {k: v[:60] * 2 for k, v in raw.items()})
    n = model.num_gaussians
    strategy.grad2d = torch.arange(n, dtype=torch.float32) + 1000 * rank
    strategy.count = torch.ones(n) * (rank + 1)
    strategy.ids = torch.arange(n) + 2 ** 40 * (rank + 1)  # int64 rows travel with the float ones

    def checkpoint():
        local = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "strategy": strategy.state_dict()}
        return gather_checkpoint(local, strategy.ROW_STATE, group)

    before = checkpoint()
    sizes = rebalance(model.params, optimizer, strategy, group)
    after = checkpoint()
    mine = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "strategy": strategy.state_dict()}
    scope = ShardedScope(group)
    top = {k: scope.highest(scores, k) for scores in [_scores(seed, rank)] for k in (0, 7, 40, 10 ** 6)}
    tied = scope.highest(torch.tensor([0.5, 0.25, 0.5, -1.0, 0.5]), 4)  # three 0.5 per rank: one tie gets cut
    torch.save({"before": before, "after": after, "sizes": sizes, "mine": mine, "top": top, "tied": tied,
                "total": scope.total(model.num_gaussians), "share": scope.share(9)}, f"{out}/rank{rank}.pt")


def _scores(seed: int, rank: int) -> torch.Tensor:
    """Distinct scores of a shard's Gaussians; about a third are not candidates (negative)."""
    g = torch.Generator().manual_seed(seed + rank)
    return torch.rand(50 + 13 * rank, generator=g) * 2 - 0.6


def _row_tensors(state) -> list[torch.Tensor]:
    optim = [s[k] for _, s in sorted(state["optimizer"]["state"].items()) for k in ("exp_avg", "exp_avg_sq")]
    return [*state["model"]["params"].values(), *optim, *(state["strategy"][k] for k in DefaultStrategy.ROW_STATE)]


def test_rebalance_and_checkpoint_shards_round_trip(seed, tmp_path):
    _spawn(_shards_worker, seed, str(tmp_path))
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    total = N_GAUSSIANS + 60
    assert results[0]["sizes"] == results[1]["sizes"] == [total - total // 2, total // 2]
    before, after = results[0]["before"], results[0]["after"]
    assert before["model"]["params"]["means"].shape[0] == total
    for a, b in zip(_row_tensors(before), _row_tensors(after)):
        assert torch.equal(a, b)  # the whole model, moments and statistics did not change
    assert [r["total"] for r in results] == [total] * WORLD and [r["share"] for r in results] == [5, 4]
    whole = torch.cat([_scores(seed, r) for r in range(WORLD)])  # the whole model's top-k, picked across shards
    for k, got in results[0]["top"].items():
        got = torch.cat([r["top"][k] for r in results])
        assert torch.equal(got, RowScope().highest(whole, k)), k
    tied = torch.cat([r["tied"] for r in results])
    assert tied.tolist() == [True, False, True, False, True] + [True, False, False, False, False]
    for rank in range(WORLD):  # a shard cut from the gathered checkpoint is exactly what the process holds
        cut = slice_checkpoint(after, DefaultStrategy.ROW_STATE, rank, WORLD)
        for a, b in zip(_row_tensors(cut), _row_tensors(results[rank]["mine"])):
            assert torch.equal(a, b)
