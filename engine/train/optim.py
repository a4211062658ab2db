"""Adam over named parameter tensors whose row count changes (Gaussians added, removed, reset).

Each parameter is its own param group named after it (``group["name"]``), as in the 3DGS code, so each
has its own learning rate. The helpers below swap a parameter for a new tensor and carry the Adam
moments along row for row: kept rows keep their moments, new rows start at zero.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

Params = dict[str, torch.nn.Parameter]
MOMENTS = ("exp_avg", "exp_avg_sq")


def make_adam(params: Params, lrs: dict[str, float], eps: float = 1e-15,
              betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Adam:
    """One Adam with a param group per named parameter; ``lrs`` gives each group's learning rate."""
    groups = [{"params": [p], "lr": lrs[name], "name": name} for name, p in params.items()]
    return torch.optim.Adam(groups, eps=eps, betas=betas)


def batch_scaling(batch_size: int, eps: float = 1e-15,
                  betas: tuple[float, float] = (0.9, 0.999)) -> tuple[float, float, tuple[float, float]]:
    """Adam settings for steps that average the gradients of ``batch_size`` views, by Grendel-GS's rule.

    Returns (learning-rate factor sqrt(B), eps / sqrt(B), betas ** B): under the hypothesis that the views'
    gradients are independent, a batch of B behaves like B single-view steps taken at once, so the moments
    decay by B steps' worth and the step grows with the square root of B.
    """
    factor = math.sqrt(batch_size)
    return factor, eps / factor, (betas[0] ** batch_size, betas[1] ** batch_size)


def set_lr(optimizer: torch.optim.Optimizer, name: str, lr: float) -> None:
    """Set the learning rate of param group ``name``."""
    for group in optimizer.param_groups:
        if group["name"] == name:
            group["lr"] = lr


def exponential_lr(step: int, lr_init: float, lr_final: float, max_steps: int) -> float:
    """Log-linear interpolation from ``lr_init`` at step 0 to ``lr_final`` at ``max_steps`` (3DGS positions)."""
    t = min(max(step / max(max_steps, 1), 0.0), 1.0)
    return math.exp(math.log(lr_init) * (1.0 - t) + math.log(lr_final) * t)


def _swap(optimizer: torch.optim.Optimizer, params: Params,
          new_value: Callable[[str, torch.Tensor], torch.Tensor],
          new_moment: Callable[[str, str, torch.Tensor], torch.Tensor]) -> None:
    """Replace every parameter by ``new_value(name, old)`` and each Adam moment by ``new_moment(name, key, old)``
    (``key``: ``exp_avg`` or ``exp_avg_sq``)."""
    for group in optimizer.param_groups:
        name = group["name"]
        old = group["params"][0]
        fresh = torch.nn.Parameter(new_value(name, old.detach()), requires_grad=old.requires_grad)
        state = optimizer.state.pop(old, None)
        if state:
            for key in MOMENTS:
                state[key] = new_moment(name, key, state[key])
            optimizer.state[fresh] = state
        group["params"][0] = fresh
        params[name] = fresh


def keep_rows(optimizer: torch.optim.Optimizer, params: Params, keep: torch.Tensor) -> None:
    """Keep the rows where ``keep`` [N] (bool) is True, in every parameter and its moments."""
    _swap(optimizer, params, lambda _, t: t[keep], lambda _, __, m: m[keep])


def append_rows(optimizer: torch.optim.Optimizer, params: Params, rows: dict[str, torch.Tensor]) -> None:
    """Append ``rows[name]`` [M, ...] to each parameter; their moments start at zero."""
    _swap(optimizer, params,
          lambda name, t: torch.cat([t, rows[name].to(t)]),
          lambda name, _, m: torch.cat([m, torch.zeros_like(rows[name], dtype=m.dtype, device=m.device)]))


def replace_rows(optimizer: torch.optim.Optimizer, params: Params, values: dict[str, torch.Tensor],
                 moments: dict[str, dict[str, torch.Tensor]]) -> None:
    """Swap every parameter for ``values[name]`` and its Adam moments for ``moments[name][key]`` (when it has
    any): rows moved between processes, say."""
    _swap(optimizer, params, lambda name, _: values[name], lambda name, key, _: moments[name][key])


def reset_rows(optimizer: torch.optim.Optimizer, params: Params, name: str, value: torch.Tensor) -> None:
    """Set parameter ``name`` to ``value`` (same shape) and zero its moments (the 3DGS opacity reset)."""
    _swap(optimizer, params,
          lambda n, t: value.to(t) if n == name else t,
          lambda n, _, m: torch.zeros_like(m) if n == name else m)
