"""`fairgrad`: fair resource allocation in multi-task learning (Ban & Ji, ICML 2024)."""

from __future__ import annotations

from typing import NamedTuple

from mtl_jax.weighting._base import GRAMIAN, Weighting
from mtl_jax.weighting._solvers import fair_weights


class FairGradState(NamedTuple):
    """`fairgrad` keeps no state."""


def fairgrad(*, alpha: float = 1.0, max_iters: int = 20, tol: float = 1e-4) -> Weighting:
    """FairGrad, Ban & Ji, "Fair Resource Allocation in Multi-Task Learning", ICML 2024.

    The update `d = Σ_t w_t g_t` maximises the α-fair utility `Σ_t u_t^{1−α} / (1 − α)`
    (`Σ log u_t` for α = 1) of the per-task loss decreases `u_t = g_t · d` under a norm
    constraint; under `d = Σ_t w_t g_t` its first-order optimality condition (the system
    the paper's Algorithm 1 solves at every step) is

        (Gw)_t = w_t^{-1/α}   for every task t,  w > 0.

    α = 1 is proportional fairness, the Nash bargaining solution of `nash_mtl` (without
    its clipping); α → ∞ approaches max–min fairness. LibMTL and the reference code solve
    the equation with `scipy.optimize.least_squares`; we solve it inside `jit` by damped
    Newton's method on the strictly convex objective whose stationarity condition it is
    (`mtl_jax.weighting._solvers`), in cosine-normalised variables so that the gradients'
    scales do not break float32. Convergence within `max_iters` is tested for
    α ∈ [0.5, 2] on random Gramians with norms up to 1e±10 (single common scale); for
    extreme α combined with norms spread over many decades the solve may stop at the cap,
    which the residual reports.

    Conventions that change numbers: no clipping of `d` (as LibMTL); a task with a zero
    gradient has no finite solution and gets weight 0; every head gets its own unweighted
    gradient (LibMTL weights the heads too). The scale of `d` depends on the scale of the
    gradients unless α = 1 (`w → s^{-α/(1+α)} w` when `G → s G`).

    Args:
      alpha: fairness level α > 0 (LibMTL `FairGrad_alpha` default 1.0; the paper tunes
        it per benchmark).
      max_iters: Newton iteration cap.
      tol: stop when `max_t |(Gw)_t w_t^{1/α} − 1| ≤ tol`.

    Metrics: `solver_iterations` and `solver_residual` every step.

    Examples:
      >>> import jax.numpy as jnp
      >>> from mtl_jax.weighting import fairgrad
      >>> w = fairgrad(alpha=1.0)
      >>> gram = jnp.diag(jnp.array([1.0, 4.0]))
      >>> weights, _, _ = w.update(None, w.init(("a", "b")), key=None, gramian=gram)
      >>> [round(float(x), 4) for x in weights]
      [1.0, 0.5]
    """
    if not alpha > 0:
        raise ValueError(f"fairgrad: alpha must be positive, got {alpha!r}")
    if max_iters < 1:
        raise ValueError(f"fairgrad: max_iters must be at least 1, got {max_iters!r}")
    if not tol > 0:
        raise ValueError(f"fairgrad: tol must be positive, got {tol!r}")
    power = 1.0 / float(alpha)

    def init(task_names):
        del task_names
        return FairGradState()

    def update(losses, state, *, key, gramian=None, rows=None):
        del losses, key, rows
        result = fair_weights(gramian, power, tol=tol, max_iters=max_iters)
        metrics = {"solver_iterations": result.iterations, "solver_residual": result.residual}
        return result.weights, state, metrics

    return Weighting(init=init, update=update, kind=GRAMIAN)
