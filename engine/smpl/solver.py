"""Batched Levenberg-Marquardt for many small independent least-squares problems (one per row)."""
from __future__ import annotations

from typing import Callable

import torch

Residuals = Callable[[torch.Tensor], torch.Tensor]
STEP_TRIES = 10  # damping raised at most 4**10 times within one iteration before a row gives up on it


def jacobian(residuals: Residuals, x: torch.Tensor,
             free: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Residuals [G, R] at ``x`` [G, P] and their Jacobian [G, R, P], for rows that do not interact.

    Forward mode in one pass: ``residuals`` is evaluated on stacked copies of ``x``, copy k carrying
    the tangent of the k-th free column (``free`` [P] bool, default all), so it must accept any
    multiple of G rows, copies stacked along dim 0. Columns not free get zero derivatives.
    """
    rows, n_params = x.shape
    columns = torch.arange(n_params, device=x.device) if free is None else torch.nonzero(free.to(x.device))[:, 0]
    stacked = x.detach().repeat(len(columns), 1)  # [K * G, P]
    tangents = torch.eye(n_params, dtype=x.dtype, device=x.device)[columns].repeat_interleave(rows, 0)
    values, derivs = torch.func.jvp(residuals, (stacked,), (tangents,))
    jac = x.new_zeros(rows, values.shape[1], n_params)
    jac[:, :, columns] = derivs.reshape(len(columns), rows, -1).permute(1, 2, 0)
    return values[:rows], jac


def levenberg_marquardt(residuals: Residuals, x: torch.Tensor, iterations: int,
                        free: torch.Tensor | None = None, tolerance: float = 1e-12) -> torch.Tensor:
    """Minimise ``sum(residuals(x)**2, -1)`` for each row of ``x`` [G, P] independently; returns the new x.

    ``free`` [P] (bool) keeps the other columns fixed. Marquardt's diagonal scaling; the damping adapts per
    row. Within an iteration a row whose step would raise its cost retries with four times the damping, up to
    ``STEP_TRIES`` times (Madsen and Nielsen's loop), so every iteration moves each row that can still descend:
    callers that relinearise every few iterations (ICP) would otherwise stall where the Gauss-Newton step
    overshoots, each call starting again from the small initial damping.
    """
    x = x.detach().clone()
    damping = torch.full((x.shape[0],), 1e-3, dtype=x.dtype, device=x.device)
    for _ in range(iterations):
        r, jac = jacobian(residuals, x, free)
        cost = r.pow(2).sum(-1)
        jtj = jac.transpose(1, 2) @ jac
        grad = (jac.transpose(1, 2) @ r[..., None])[..., 0]
        diag = jtj.diagonal(dim1=1, dim2=2)
        floor = 1e-9 * diag.amax(-1, keepdim=True).clamp_min(1e-12)
        pending = torch.ones_like(cost, dtype=torch.bool)
        moved = torch.zeros_like(pending)
        for _ in range(STEP_TRIES):
            step = torch.linalg.solve(jtj + torch.diag_embed(damping[:, None] * diag + floor), -grad)
            with torch.no_grad():
                new_cost = residuals(x + step).pow(2).sum(-1)
            stalled = (cost - new_cost).abs() <= tolerance * cost.clamp_min(1e-30)
            better = pending & (new_cost < cost)
            x = torch.where(better[:, None], x + step, x)
            raised = torch.where(pending, damping * 4.0, damping)
            damping = torch.where(better, damping / 3.0, raised).clamp(1e-10, 1e10)
            moved |= better & ~stalled
            pending &= ~better & ~stalled & (step.abs().amax(-1) > 0)
            if not bool(pending.any()):
                break
        if not bool(moved.any()):
            break
    return x
