"""`pcd`: priority-constrained descent (torchjd's `PCD`)."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax.row_math import reciprocal_where
from mtl_jax.weighting._base import GRAMIAN, Weighting


class PCDState(NamedTuple):
    """The exponential moving average `sq_norm_ema` ([T], float32) of the squared task
    gradient norms `‖g_t‖²` (before bias correction) and the number of updates `step`
    (0 before the first)."""

    sq_norm_ema: jax.Array
    step: jax.Array


def _check_tau(tau, num_tasks: int | None = None) -> tuple[float, ...] | float:
    if isinstance(tau, bool):
        raise ValueError(f"pcd: tau must be a number in [0, 1] or a sequence of them, got {tau!r}")
    if isinstance(tau, numbers.Real):
        if not 0.0 <= float(tau) <= 1.0:
            raise ValueError(f"pcd: tau must be in [0, 1], got {tau!r}")
        return float(tau)
    try:
        values = tuple(tau)
    except TypeError:
        raise ValueError(
            f"pcd: tau must be a number in [0, 1] or a sequence of them, got {tau!r}"
        ) from None
    if not values or any(
        isinstance(v, bool) or not isinstance(v, numbers.Real) or not 0.0 <= float(v) <= 1.0
        for v in values
    ):
        raise ValueError(f"pcd: tau must hold numbers in [0, 1], got {tau!r}")
    return tuple(float(v) for v in values)


def _check_sizes(tau, primary: int, num_tasks: int) -> None:
    if primary >= num_tasks:
        raise ValueError(f"pcd: primary={primary} but there are only {num_tasks} tasks")
    if isinstance(tau, tuple) and len(tau) != num_tasks - 1:
        raise ValueError(
            f"pcd: tau has {len(tau)} entries but there are {num_tasks - 1} secondary tasks "
            "(one per task other than the primary one)"
        )


def _solve_dual(gram, primary, taus, atol, dependence_tol, max_iters):
    """Multipliers `μ ≥ 0` ([T], `μ_primary = 0`) of the PCD quadratic program on the
    (normalised) Gramian `gram`, by a dual active-set method (Goldfarb & Idnani, 1983, for
    an identity Hessian): `d = g_p + Σ_j μ_j g_j` holds throughout, so every inner product
    comes from `gram`. Returns `(μ, infeasible, iterations)`."""
    num_tasks = gram.shape[0]
    indices = jnp.arange(num_tasks)
    secondary = indices != primary
    diagonal = jnp.diagonal(gram)
    b = taus * diagonal - gram[:, primary]  # b_j > 0: g_p alone violates constraint j
    eye = jnp.eye(num_tasks, dtype=gram.dtype)

    # carry: mu, active, entering (−1: none), slack of the entering one, done, infeasible, i
    def cond(carry):
        return ~carry[4] & (carry[6] < max_iters)

    def body(carry):
        mu, active, entering, slack_p, _, infeasible, i = carry
        # Pick a violated constraint when none is being added.
        slacks = jnp.where(secondary & ~active, gram @ mu - b, jnp.inf)
        candidate = jnp.argmin(slacks)
        choosing = entering < 0
        finished = choosing & (slacks[candidate] >= -atol)
        p = jnp.where(choosing, candidate, entering)
        slack_p = jnp.where(choosing, slacks[candidate], slack_p)
        # Step direction: +1 on μ_p, −r on the active multipliers; z = g_p − Σ_A r_j g_j.
        both = active[:, None] & active[None, :]
        r = jnp.linalg.solve(jnp.where(both, gram, eye), jnp.where(active, gram[:, p], 0.0))
        r = jnp.where(active, r, 0.0)
        z_sq_norm = gram[p, p] - gram[p] @ r
        ratios = jnp.where(active & (r > 0), mu / jnp.where(r > 0, r, 1.0), jnp.inf)
        k = jnp.argmin(ratios)
        partial_step = ratios[k]
        independent = z_sq_norm > dependence_tol * gram[p, p]
        full_step = jnp.where(
            independent, -slack_p / jnp.where(independent, z_sq_norm, 1.0), jnp.inf
        )
        step = jnp.minimum(partial_step, full_step)
        stuck = ~finished & ~jnp.isfinite(step)
        moving = ~finished & ~stuck
        step = jnp.where(moving, step, 0.0)
        new_mu = mu - step * r + step * (indices == p)
        adds = full_step <= partial_step
        drop = moving & ~adds
        new_mu = jnp.where(drop & (indices == k), 0.0, new_mu)
        new_active = jnp.where(moving & adds, active | (indices == p), active)
        new_active = jnp.where(drop, new_active & (indices != k), new_active)
        new_entering = jnp.where(drop, p, -1)
        new_slack = jnp.where(drop, gram[p] @ new_mu - b[p], 0.0)
        return (
            jnp.where(stuck, mu, new_mu),
            new_active,
            new_entering,
            new_slack,
            finished | stuck,
            infeasible | stuck,
            i + 1,
        )

    init = (
        jnp.zeros(num_tasks, gram.dtype),
        jnp.zeros(num_tasks, bool),
        jnp.asarray(-1, jnp.int32),
        jnp.asarray(0.0, gram.dtype),
        jnp.asarray(False),
        jnp.asarray(False),
        jnp.asarray(0, jnp.int32),
    )
    mu, _, _, _, _, infeasible, iterations = jax.lax.while_loop(cond, body, init)
    mu = jnp.where(infeasible, 0.0, mu)
    return mu, infeasible, iterations


def pcd(
    *,
    tau: float | Sequence[float] = 0.02,
    beta: float = 0.999,
    eps: float = 1e-8,
    primary: int = 0,
    tol: float = 1e-9,
) -> Weighting:
    """PCD, "Not All Objectives Are Born Equal: Priority-Constrained Descent for
    Hierarchical Multi-Objective Optimization" (TMLR 2026, arXiv:2606.29521,
    https://openreview.net/forum?id=HT01yGHLEt), as torchjd's `PCD` cites it and
    implements it (`src/torchjd/aggregation/_pcd.py`).

    One task, the primary one `p`, comes first: the direction follows its gradient as
    closely as possible, subject to every secondary task `j` receiving at least a fraction
    `τ_j` of the first-order progress a step along its own normalised gradient would give:

        d̃ = argmin_d ½ ‖d − g̃_p‖²   s.t.   g̃_jᵀ d ≥ τ_j ‖g̃_j‖²   for every j ≠ p,

    with `g̃_t = s_t g_t`, `s_t = 1 / √(v̂_t + ε)` and `v̂_t` the bias-corrected
    exponential moving average (decay `β`) of `‖g_t‖²` over the successive steps. The
    output is `d = d̃ ‖g_p‖ / ‖d̃‖`, whose weights are `w = (e_p + μ) ⊙ s · ‖g_p‖/‖d̃‖`,
    `μ ≥ 0` the KKT multipliers of the constraints (`μ_p = 0`), from the Gramian alone
    (a dual active-set method, Goldfarb & Idnani 1983, as torchjd). Since `τ ≥ 0`, the
    direction increases no secondary loss to first order (`g_jᵀd ≥ 0`). The primary loss
    is *not* constrained: it is the objective, so `g_pᵀd < 0` can happen when a secondary
    constraint pulls hard (e.g. `g_p = (1, 0)`, `g_2 = (−1, 0.1)`, `tau=0.5`), and with
    no active constraint `d = g_p` exactly. Special cases, as torchjd: `g_p = 0` gives
    `w = 0`; infeasible constraints (e.g. two anti-parallel secondary gradients) are
    dropped, `d = g_p`;
    `d̃ = 0` up to round-off gives `w = 0`; a non-finite Gramian gives `nan` weights
    and leaves the moving average unchanged.

    Conventions (torchjd's defaults: `tau=0.02`, `beta=0.999`, `eps=1e-8`):
      * torchjd's primary objective is the first row of its matrix. Here tasks are in
        sorted-name order (as for `pref_vector`) and `primary` is the index of the
        primary task in that order; the default 0 is the first name.
      * A sequence `tau` has one value per secondary task, in sorted-name order with the
        primary task left out (torchjd: one per row after the first).
      * torchjd solves in float64 on the CPU; here the solver runs in the Gramian's
        float32 (its "dependent gradients" threshold is `max(1e-9, 10 · float32 eps)`,
        torchjd's rule with float32's eps).
      * torchjd clears its moving average when the number of rows changes; here the
        state is sized for the tasks at `init`.

    Args:
      tau: the fraction `τ ∈ [0, 1]` of normalised progress guaranteed to each secondary
        task: one number for all, or a sequence of T − 1 (see above).
      beta: decay `β ∈ [0, 1)` of the moving average of the squared gradient norms.
      eps: `ε ≥ 0`, added to the moving average before its inverse square root.
      primary: index of the primary task in sorted-name order (an int ≥ 0, < T).
      tol: a constraint counts as satisfied when violated by at most `tol` times the
        largest diagonal entry of the normalised Gramian (torchjd's solver `tol`, 1e-9).

    Metrics: `solver_iterations` and `infeasible` (1.0 when the constraints were dropped).

    Examples:
      >>> import jax.numpy as jnp
      >>> from mtl_jax.weighting import aggregate, pcd
      >>> J = jnp.array([[1.0, 0.0], [0.5, 1.0]])
      >>> direction, weights, _ = aggregate(pcd(), J)
      >>> [round(x, 4) for x in direction.tolist()]  # unconstrained: g_p itself
      [1.0, 0.0]
      >>> J = jnp.array([[1.0, 0.0], [-1.0, 0.1]])
      >>> direction, weights, _ = aggregate(pcd(tau=0.5), J)
      >>> [bool(x) for x in (J @ direction >= 0)]  # the secondary task gains, not the primary
      [False, True]
    """
    tau = _check_tau(tau)
    if isinstance(beta, bool) or not isinstance(beta, numbers.Real) or not 0.0 <= beta < 1.0:
        raise ValueError(f"pcd: beta must be in [0, 1), got {beta!r}")
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps >= 0.0:
        raise ValueError(f"pcd: eps must be >= 0, got {eps!r}")
    if isinstance(primary, bool) or not isinstance(primary, numbers.Integral) or primary < 0:
        raise ValueError(f"pcd: primary must be a task index (an int >= 0), got {primary!r}")
    primary = int(primary)
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not tol > 0:
        raise ValueError(f"pcd: tol must be > 0, got {tol!r}")
    beta, eps, tol = float(beta), float(eps), float(tol)

    def init(task_names):
        _check_sizes(tau, primary, len(task_names))
        num_tasks = len(task_names)
        return PCDState(
            sq_norm_ema=jnp.zeros(num_tasks, jnp.float32), step=jnp.asarray(0, jnp.int32)
        )

    def update(losses, state, *, key, gramian=None, rows=None):
        del losses, key, rows
        gram = gramian.astype(jnp.float32)
        num_tasks = gram.shape[0]
        _check_sizes(tau, primary, num_tasks)
        if isinstance(tau, tuple):
            taus = jnp.asarray(tau[:primary] + (0.0,) + tau[primary:], jnp.float32)
        else:
            taus = jnp.full(num_tasks, tau, jnp.float32)
        finite = jnp.all(jnp.isfinite(gram))
        safe = jnp.where(finite, gram, 0.0)
        sq_norms = jnp.maximum(jnp.diagonal(safe), 0.0)
        step = state.step + 1
        ema = beta * state.sq_norm_ema + (1.0 - beta) * sq_norms
        debiased = ema / (1.0 - beta ** step.astype(jnp.float32))
        denominators = jnp.sqrt(debiased + eps)
        scales = reciprocal_where(denominators, denominators > 0)
        normalized = safe * scales[:, None] * scales[None, :]
        precision = 10.0 * float(jnp.finfo(jnp.float32).eps)
        atol = tol * jnp.maximum(jnp.max(jnp.diagonal(normalized)), jnp.finfo(jnp.float32).tiny)
        mu, infeasible, iterations = _solve_dual(
            normalized, primary, taus, atol, max(1e-9, precision), 10 * num_tasks
        )
        w = mu + (jnp.arange(num_tasks) == primary)
        direction_sq_norm = w @ normalized @ w
        magnitude = (jnp.abs(w) @ jnp.sqrt(jnp.maximum(jnp.diagonal(normalized), 0.0))) ** 2
        usable = (sq_norms[primary] > 0) & (direction_sq_norm > precision * magnitude)
        factor = jnp.sqrt(sq_norms[primary] / jnp.where(usable, direction_sq_norm, 1.0))
        weights = jnp.where(usable, w * scales * factor, 0.0)
        weights = jnp.where(finite, weights, jnp.nan)
        new_state = PCDState(
            sq_norm_ema=jnp.where(finite, ema, state.sq_norm_ema),
            step=jnp.where(finite, step, state.step),
        )
        metrics = {
            "solver_iterations": iterations,
            "infeasible": infeasible.astype(jnp.float32),
        }
        return weights, new_state, metrics

    return Weighting(init=init, update=update, kind=GRAMIAN)
