"""Optimiser bookkeeping under density control: shapes follow the Gaussians and survivors keep their moments."""
from __future__ import annotations

import math

import torch

from recon.engine.models.gaussians import GaussianModel
from recon.engine.train.densify import (DefaultStrategy, MCMCStrategy, Schedule, child_ids, keyed_normal,
                                        screen_grad_norms)
from recon.engine.train.optim import append_rows, exponential_lr, keep_rows, make_adam, reset_rows

LRS = {"means": 1e-3, "quats": 1e-3, "scales": 1e-3, "opacities": 1e-2, "sh0": 1e-3, "shN": 1e-4}


def _model(n: int, generator: torch.Generator) -> GaussianModel:
    points = torch.randn(n, 3, generator=generator)
    return GaussianModel.from_points(points, torch.rand(n, 3, generator=generator), sh_degree=1)


def _step(model: GaussianModel, optimizer: torch.optim.Optimizer, generator: torch.Generator) -> None:
    """One Adam step on a random quadratic so every moment is non-zero."""
    loss = sum((p * torch.randn(p.shape, generator=generator)).square().sum() for p in model.params.values())
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()


def _moments(optimizer, params):
    return {name: {k: optimizer.state[p][k].clone() for k in ("exp_avg", "exp_avg_sq")}
            for name, p in params.items()}


def _check_consistent(optimizer, params):
    for group in optimizer.param_groups:
        p = group["params"][0]
        assert params[group["name"]] is p
        state = optimizer.state[p]
        assert state["exp_avg"].shape == p.shape and state["exp_avg_sq"].shape == p.shape
    assert len({p.shape[0] for p in params.values()}) == 1


def test_keep_append_reset_rows(seed):
    g = torch.Generator().manual_seed(seed)
    model = _model(50, g)
    opt = make_adam(model.params, LRS)
    _step(model, opt, g)
    before = _moments(opt, model.params)
    values = {k: v.detach().clone() for k, v in model.params.items()}
    keep = torch.rand(50, generator=g) > 0.4
    keep_rows(opt, model.params, keep)
    _check_consistent(opt, model.params)
    after = _moments(opt, model.params)
    for name in model.params:
        torch.testing.assert_close(model.params[name].detach(), values[name][keep], rtol=0, atol=0)
        for k in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(after[name][k], before[name][k][keep], rtol=0, atol=0)
    m = int(keep.sum())
    rows = {k: torch.randn(7, *v.shape[1:], generator=g) for k, v in model.params.items()}
    append_rows(opt, model.params, rows)
    _check_consistent(opt, model.params)
    for name in model.params:
        assert model.params[name].shape[0] == m + 7
        torch.testing.assert_close(opt.state[model.params[name]]["exp_avg"][:m], after[name]["exp_avg"])
        assert not opt.state[model.params[name]]["exp_avg"][m:].any()
    _step(model, opt, g)  # the optimiser still runs on the swapped tensors
    before = _moments(opt, model.params)
    reset_rows(opt, model.params, "opacities", torch.zeros(m + 7))
    assert not model.params["opacities"].any() and not opt.state[model.params["opacities"]]["exp_avg"].any()
    torch.testing.assert_close(opt.state[model.params["means"]]["exp_avg"], before["means"]["exp_avg"])


def _fake_info(n: int, grads: torch.Tensor, visible: torch.Tensor) -> dict:
    means2d = torch.zeros(1, n, 2, requires_grad=True)
    means2d.grad = grads[None]
    radii = torch.where(visible[:, None], 3, 0).expand(n, 2)[None].int()
    return {"means2d": means2d, "radii": radii, "width": 40, "height": 30}


def test_default_strategy_clone_split_prune(seed):
    g = torch.Generator().manual_seed(seed)
    model = _model(40, g)
    with torch.no_grad():
        model.params["scales"][:20] = math.log(1e-3)  # small: cloned when the gradient is high
        model.params["scales"][20:] = math.log(0.5)  # large: split
        model.params["opacities"][35:] = -10.0  # transparent: pruned
    opt = make_adam(model.params, LRS)
    _step(model, opt, g)
    strategy = DefaultStrategy(grad_threshold=1e-3, schedule=Schedule(refine_start=0, refine_stop=1000,
                                                                       refine_every=10, reset_every=10_000))
    high = torch.zeros(40, dtype=torch.bool)
    high[[1, 3, 5, 21, 22]] = True  # 3 clones, 2 splits; ids 35.. are transparent
    grads = torch.where(high[:, None], torch.tensor([0.01, 0.0]), torch.tensor([1e-6, 0.0]))
    visible = torch.ones(40, dtype=torch.bool)
    visible[30] = False
    strategy.step_pre_optimizer(model.params, _fake_info(40, grads, visible), step=9)
    assert strategy.count[30] == 0 and strategy.count[0] == 1
    survivors = torch.ones(40, dtype=torch.bool)
    survivors[[21, 22]] = False  # split: replaced by children at the end
    survivors[35:] = False  # pruned
    moments = _moments(opt, model.params)
    values = {k: v.detach().clone() for k, v in model.params.items()}
    stats = strategy.step_post_optimizer(model.params, opt, step=10, extent=1.0, generator=g)
    assert stats == {"cloned": 3, "split": 2, "pruned": 5}
    _check_consistent(opt, model.params)
    assert model.num_gaussians == 40 + 3 + 2 - 5
    kept = int(survivors.sum())
    for name, p in model.params.items():  # survivors first, in order, with their values and moments
        torch.testing.assert_close(p.detach()[:kept], values[name][survivors], rtol=0, atol=0)
        for k in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(opt.state[p][k][:kept], moments[name][k][survivors], rtol=0, atol=0)
            assert not opt.state[p][k][kept:].any()  # clones and split children start fresh
    torch.testing.assert_close(model.params["means"].detach()[kept:kept + 3], values["means"][[1, 3, 5]])
    parents = torch.exp(values["scales"][[21, 22]]) / 1.6
    torch.testing.assert_close(torch.exp(model.params["scales"].detach()[kept + 3:]), torch.cat([parents, parents]))
    assert strategy.grad2d.shape[0] == model.num_gaussians and not strategy.grad2d.any()


def test_default_strategy_cap_and_reset(seed):
    g = torch.Generator().manual_seed(seed)
    model = _model(30, g)
    with torch.no_grad():
        model.params["scales"][:] = math.log(1e-3)
    opt = make_adam(model.params, LRS)
    _step(model, opt, g)
    strategy = DefaultStrategy(grad_threshold=1e-4, max_gaussians=34,
                               schedule=Schedule(refine_start=0, refine_stop=100, refine_every=5, reset_every=5))
    grads = torch.rand(30, 2, generator=g) * 0.01
    strategy.step_pre_optimizer(model.params, _fake_info(30, grads, torch.ones(30, dtype=torch.bool)), step=4)
    stats = strategy.step_post_optimizer(model.params, opt, step=5, extent=1.0, generator=g)
    assert stats["cloned"] == 4 and model.num_gaussians <= 34
    _check_consistent(opt, model.params)
    assert torch.sigmoid(model.params["opacities"]).max() <= 2 * strategy.prune_opacity + 1e-6  # reset ran


def test_mcmc_relocates_and_grows(seed):
    g = torch.Generator().manual_seed(seed)
    model = _model(40, g)
    with torch.no_grad():
        model.params["opacities"][:10] = -10.0  # dead
    opt = make_adam(model.params, LRS)
    _step(model, opt, g)
    strategy = MCMCStrategy(max_gaussians=42, schedule=Schedule(0, 100, 5, 10_000))
    stats = strategy.step_post_optimizer(model.params, opt, step=5, extent=1.0, generator=g, means_lr=1e-4)
    assert stats == {"relocated": 10, "added": 2}
    _check_consistent(opt, model.params)
    assert model.num_gaussians == 42
    assert torch.sigmoid(model.params["opacities"][:10]).min() > strategy.min_opacity


def test_exponential_lr():
    assert math.isclose(exponential_lr(0, 1.6e-4, 1.6e-6, 100), 1.6e-4)
    assert math.isclose(exponential_lr(100, 1.6e-4, 1.6e-6, 100), 1.6e-6)
    assert math.isclose(exponential_lr(50, 1.6e-4, 1.6e-6, 100), 1.6e-5)


def test_schedule_scales_with_steps():
    assert Schedule.scaled(30_000) == Schedule()
    s = Schedule.scaled(3_000)
    assert (s.refine_start, s.refine_stop, s.refine_every, s.reset_every) == (50, 1500, 10, 300)


def test_keyed_normal_is_normal_and_depends_only_on_identity(seed):
    ids = torch.randint(0, 2 ** 62, (20_000,), generator=torch.Generator().manual_seed(seed))
    z = keyed_normal(ids, step=17, draws=2)
    assert z.shape == (2, 20_000, 3)
    assert abs(z.mean()) < 0.02 and abs(z.std() - 1) < 0.02
    quantiles = torch.quantile(z.flatten(), torch.tensor([0.0228, 0.1587, 0.5, 0.8413, 0.9772]))
    torch.testing.assert_close(quantiles, torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0]), rtol=0, atol=0.05)
    assert abs(torch.corrcoef(torch.stack([z[0, :, 0], z[1, :, 0]]))[0, 1]) < 0.03  # draws independent
    order = torch.randperm(20_000)
    assert torch.equal(keyed_normal(ids[order], 17, 2), z[:, order])  # a row's samples follow the row
    assert not torch.equal(keyed_normal(ids, 18, 2), z)  # and change with the step
    children = torch.cat([child_ids(ids, 17, c) for c in range(3)])
    assert children.unique().numel() == 60_000 and children.min() >= 0 and not torch.isin(children, ids).any()


def test_grad_norms_of_an_enlarged_view_match_its_photo(seed):
    """A view rendered larger than its photo at the same focal length (as undistorted images are), its extra
    pixels left out of the loss, gives with ``photo_size`` the screen-space gradient norms of the photo itself;
    without it, norms shrink with the rendered height and width (the loss averages over more pixels)."""
    from recon.kernels import rasterize

    g = torch.Generator().manual_seed(seed)
    n = 12
    means = torch.cat([torch.rand(n, 2, generator=g) * 0.5 - 0.25, torch.rand(n, 1, generator=g) + 2.5], 1)
    quats, scales = torch.randn(n, 4, generator=g), torch.rand(n, 3, generator=g) * 0.05 + 0.02
    opacities, colors = torch.rand(n, generator=g) * 0.5 + 0.3, torch.rand(n, 3, generator=g)
    w, h, pad_x, pad_y = 29, 23, 5, 3  # the photo, and the enlarged view's margins on the left and top
    big_w, big_h = w + pad_x + 4, h + pad_y + 2
    target = torch.rand(h, w, 3, generator=g)
    results = []
    for width, height, dx, dy, photo in ((w, h, 0, 0, None), (big_w, big_h, pad_x, pad_y, (w, h))):
        K = torch.tensor([[30.0, 0.0, w / 2 + dx], [0.0, 31.0, h / 2 + dy], [0.0, 0.0, 1.0]])[None]
        image, _, meta = rasterize(means.requires_grad_(), quats, scales, opacities, colors, torch.eye(4)[None], K,
                                   width, height)
        goal = image[0].detach().clone()  # outside the photo: counts as rendered perfectly
        goal[dy:dy + h, dx:dx + w] = target
        torch.abs(image[0] - goal).mean().backward()
        info = {"means2d": meta["means2d"], "radii": meta["radii"], "width": width, "height": height}
        results.append((screen_grad_norms({**info, "photo_size": photo}, absgrad=False),
                        screen_grad_norms(info, absgrad=False)[0]))
    ((small, small_ids), _), ((large, large_ids), unscaled) = results
    assert torch.equal(small_ids, large_ids) and len(small_ids) == n and bool(small.min() > 0)
    # float32 sums in another order (other tiles): errors scale with the largest norm, not with each one
    torch.testing.assert_close(large, small, rtol=1e-4, atol=1e-5 * float(small.max()))
    assert torch.all(unscaled < small * 0.9)  # (h / big_h, w / big_w) = (0.82, 0.76) of them
