"""The batched Levenberg-Marquardt solver: rows independent, and every iteration descends where it can."""
from __future__ import annotations

import torch

from recon.engine.smpl.solver import jacobian, levenberg_marquardt


def test_one_iteration_descends_where_the_gauss_newton_step_overshoots(seed):
    """atan(x) from |x| >= 1.5: the Gauss-Newton step, -atan(x) (1 + x^2), lands further from 0 on the other side,
    so the small initial damping (1e-3) must be raised several times within the iteration; a solver that only
    raised it for the next iteration would not move at all in one. Rows near 0 take the plain step."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.cat([1.5 + 3 * torch.rand(3, 1, generator=gen), -1.5 - 3 * torch.rand(3, 1, generator=gen),
                   0.2 * torch.rand(2, 1, generator=gen) - 0.1], 0).double()
    one = levenberg_marquardt(torch.atan, x, 1)
    assert bool((one.abs() < x.abs()).all()), f"seed {seed}: {x.flatten().tolist()} -> {one.flatten().tolist()}"
    many = levenberg_marquardt(torch.atan, x, 30)
    assert float(many.abs().max()) < 1e-6, f"seed {seed}: {many.flatten().tolist()}"


def test_rows_do_not_interact_and_fixed_columns_stay(seed):
    """Each row alone gives the same answer as in the batch; columns not free keep their values; the Jacobian
    matches finite differences."""
    gen = torch.Generator().manual_seed(seed)
    target = 2 * torch.rand(5, 3, generator=gen, dtype=torch.float64) - 1  # |x| < sqrt(2): one minimum per row

    def valley(goal: torch.Tensor):
        def residuals(z: torch.Tensor) -> torch.Tensor:  # a curved valley per row, minimum at its goal
            t = goal.repeat(z.shape[0] // goal.shape[0], 1)
            return torch.cat([10 * (z[:, 1:2] - z[:, :1] ** 2 - t[:, 1:2] + t[:, :1] ** 2), z - t], -1)
        return residuals

    start = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    free = torch.tensor([True, True, False])
    batch = levenberg_marquardt(valley(target), start, 50, free=free)
    assert torch.equal(batch[:, 2], start[:, 2])
    torch.testing.assert_close(batch[:, :2], target[:, :2], atol=1e-6, rtol=0)
    for row in range(5):
        alone = levenberg_marquardt(valley(target[row:row + 1]), start[row:row + 1], 50, free=free)
        torch.testing.assert_close(alone, batch[row:row + 1], atol=1e-9, rtol=0)
    residuals = valley(target)
    _, jac = jacobian(residuals, start)
    eps = 1e-6
    for p in range(3):
        shift = torch.zeros(3, dtype=torch.float64)
        shift[p] = eps
        numeric = (residuals(start + shift) - residuals(start - shift)) / (2 * eps)
        torch.testing.assert_close(jac[:, :, p], numeric, atol=1e-6, rtol=1e-6)
