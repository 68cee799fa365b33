"""`nash_mtl`: multi-task learning as a bargaining game (Navon et al., ICML 2022)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax.weighting._base import GRAMIAN, Weighting
from mtl_jax.weighting._solvers import (
    combination_sq_norm,
    cosine_gramian,
    fair_residual,
    fair_weights,
)


class NashMTLState(NamedTuple):
    """Update counter `step` and the cached bargaining solution `alpha` [T] (before clipping)."""

    step: jax.Array
    alpha: jax.Array


def nash_mtl(
    *,
    update_every: int = 1,
    max_norm: float = 1.0,
    max_iters: int = 20,
    tol: float = 1e-4,
) -> Weighting:
    """Nash-MTL, Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik & Fetaya, ICML 2022.

    The Nash bargaining solution (Sec. 3, Alg. 1) is the update direction
    `d = Σ_t α_t g_t` with `α > 0` solving `Gα = 1/α` elementwise, i.e.
    `g_t · d = 1/α_t` for every task. The paper (and LibMTL, through cvxpy) approaches it
    with a sequence of convex problems that linearise a concave term. We solve the same
    equation by damped Newton's method on the strictly convex, self-concordant
    `½ αᵀGα − Σ_t log α_t`, whose unique stationary point is the solution (see
    `mtl_jax.weighting._solvers`): provably globally convergent, quadratic at the end,
    vectorised and inside `jit`. Newton is run in the cosine variables `β_t = ‖g_t‖ α_t`,
    in which the equation `Ĝβ = 1/β` is independent of the gradients' scales (float32
    safe from 1e-10 to 1e10); `α = β / ‖g‖`. At the solution `‖d‖² = αᵀGα = T`.

    Conventions that change numbers:
      * `max_norm`: LibMTL (after the reference code) clips the norm of the shared
        gradient to `max_norm` with `clip_grad_norm_`. Since `‖d‖ = √(wᵀGw)` is known
        from the Gramian, we apply the same clipping as a scaling of the returned weights,
        `w = α · min(1, max_norm / ‖d‖)`, recomputed every step from the current Gramian
        (also on steps that reuse a cached `α`). `max_norm ≤ 0` disables it.
      * `update_every`: the bargaining problem is solved when `step % update_every == 0`
        (`lax.cond`), otherwise the cached `α` is reused (LibMTL `update_weights_every`).
      * The reference code and LibMTL weight the heads' losses by `α` too; here every
        head gets its own unweighted gradient (the trainer's convention).
      * A task with a zero gradient has no finite `α_t` (`0 = 1/α_t`) and gets weight 0.
      * When the gradients are Pareto-stationary (a non-negative combination vanishes,
        e.g. two opposite gradients), no solution exists: the solver's iterates grow, the
        residual stays large and is reported; the weights stay finite and `d` stays
        bounded (`‖d‖² ≤ T`).

    Args:
      update_every: solve every this many updates, reusing `α` in between (LibMTL: 1).
      max_norm: clip the shared gradient's norm to this value; `≤ 0` disables
        (LibMTL: 1.0).
      max_iters: Newton iteration cap (default 20; LibMTL's `optim_niter`, also 20, caps
        its sequence of cvxpy problems instead).
      tol: stop when the relative residual `max_t |α_t (Gα)_t − 1|` is at most `tol`.

    Metrics: `solver_iterations` (0 on steps that reuse `α`), `solver_residual` (of the
    `α` in use, against the current Gramian) and `direction_norm` (`‖d‖` before clipping).

    Examples:
      >>> import jax.numpy as jnp
      >>> from mtl_jax.weighting import nash_mtl
      >>> w = nash_mtl(max_norm=0.0)
      >>> gram = jnp.diag(jnp.array([1.0, 4.0]))
      >>> weights, _, _ = w.update(None, w.init(("a", "b")), key=None, gramian=gram)
      >>> [round(float(x), 4) for x in weights]  # G α = 1 / α
      [1.0, 0.5]
    """
    if not isinstance(update_every, int) or isinstance(update_every, bool) or update_every < 1:
        raise ValueError(f"nash_mtl: update_every must be a positive integer, got {update_every!r}")
    if max_iters < 1:
        raise ValueError(f"nash_mtl: max_iters must be at least 1, got {max_iters!r}")
    if not tol > 0:
        raise ValueError(f"nash_mtl: tol must be positive, got {tol!r}")

    def init(task_names):
        # LibMTL starts from α = 1; it is only used if update_every skips the first solve,
        # which it never does (step 0 always solves).
        return NashMTLState(jnp.asarray(0, jnp.int32), jnp.ones((len(task_names),), jnp.float32))

    def update(losses, state, *, key, gramian=None, rows=None):
        del losses, key, rows

        def solve(_):
            result = fair_weights(gramian, 1.0, tol=tol, max_iters=max_iters)
            return result.weights, result.iterations, result.residual

        def reuse(_):
            residual = fair_residual(state.alpha, gramian, 1.0)
            return state.alpha, jnp.asarray(0, jnp.int32), residual

        alpha, iterations, residual = jax.lax.cond(
            state.step % update_every == 0, solve, reuse, None
        )
        norm = jnp.sqrt(combination_sq_norm(alpha, cosine_gramian(gramian)))
        if max_norm > 0:
            clip = jnp.where(norm > max_norm, max_norm / jnp.where(norm > 0, norm, 1.0), 1.0)
        else:
            clip = jnp.asarray(1.0, jnp.float32)
        metrics = {
            "solver_iterations": iterations,
            "solver_residual": residual,
            "direction_norm": norm,
        }
        return alpha * clip, NashMTLState(state.step + 1, alpha), metrics

    return Weighting(init=init, update=update, kind=GRAMIAN)
