"""`pcgrad`: projecting conflicting gradients (Yu et al., NeurIPS 2020) as a reweighting."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax.weighting._base import GRAMIAN, Weighting
from mtl_jax.weighting._solvers import cosine_gramian


class PCGradState(NamedTuple):
    """Empty: the projection orders come from the step key."""


def task_orders(key: jax.Array, num_tasks: int) -> jax.Array:
    """[T, T] int32: row i is the random order in which task i visits all tasks."""
    return jnp.argsort(jax.random.uniform(key, (num_tasks, num_tasks)), axis=1).astype(jnp.int32)


def pcgrad_weights(gram: jax.Array, orders: jax.Array) -> tuple[jax.Array, jax.Array]:
    """PCGrad's projections, run on the weight matrix instead of the gradients.

    Every projected gradient stays in the span of the originals, `g_i' = Σ_k W_ik g_k`,
    starting from `W = I`. Projecting `g_i'` off a conflicting `g_j`,
    `g_i' ← g_i' − min(g_i'·g_j, 0) / ‖g_j‖² g_j`, only needs `g_i'·g_j = (WG)_ij`, so it
    is the update `W_ij ← W_ij − min((WG)_ij, 0) / G_jj` of row i. All rows advance one
    position of their own order per step (vectorised over i, T steps of O(T²)), and the
    sum of the projected gradients is `d = Σ_k (Σ_i W_ik) g_k`: the weights are the
    column sums of `W`. This is exact, not an approximation.

    For float32 safety the recursion runs on unit gradients, `Ŵ_ik = W_ik ‖g_k‖ / ‖g_i‖`
    with the cosine matrix (so `G_jj = 1`), and is mapped back at the end.

    Args:
      gram: [T, T] Gramian.
      orders: [T, T] integer; row i lists the tasks in the order task i is projected
        (`task_orders`).

    Returns:
      `(weights [T], num_projections)`. A zero gradient is never projected on and gets
      weight 1 (its own, unchanged, zero contribution).
    """
    cos = cosine_gramian(gram)
    num_tasks = gram.shape[0]
    rows = jnp.arange(num_tasks)

    def step(position, carry):
        unit_weights, count = carry
        partner = orders[:, position]
        # (Ŵ Ĝ)_{i, j_i}: cosine-space inner product of row i's current gradient with u_j.
        inner = jnp.sum(unit_weights * cos.cosines[:, partner].T, axis=1)
        conflict = jnp.minimum(inner, 0.0)
        unit_weights = unit_weights.at[rows, partner].add(-conflict)
        return unit_weights, count + jnp.sum(conflict < 0)

    unit_weights, count = jax.lax.fori_loop(
        0,
        num_tasks,
        step,
        (jnp.eye(num_tasks, dtype=jnp.float32), jnp.asarray(0, jnp.int32)),
    )
    # W_ik = Ŵ_ik ‖g_i‖ / ‖g_k‖; inactive rows i have ‖g_i‖ = 0 and contribute nothing.
    totals = jnp.sum(unit_weights * cos.norms[:, None], axis=0)
    safe = jnp.where(cos.active, cos.norms, 1.0)
    return jnp.where(cos.active, totals / safe, 1.0), count


def pcgrad() -> Weighting:
    """PCGrad, Yu, Kumar, Gupta, Levine, Hausman & Finn, NeurIPS 2020, Alg. 1.

    Each task gradient `g_i` is projected, in a random order of the tasks, onto the normal
    plane of every `g_j` it conflicts with (`g_i'·g_j < 0`), and the update is the sum of
    the projected gradients. The projections are a reweighting computable from the
    Gramian alone (`pcgrad_weights`), so the method is a `GRAMIAN` method returning
    `d = Σ_k w_k g_k`; without any conflict `w = 1` and `d = Σ_t g_t` (LibMTL's sum, not
    the mean).

    Conventions that change numbers: as in LibMTL and the reference implementation, each
    task draws its own random order of *all* tasks, itself included (a no-op unless
    earlier projections turned `g_i'` against `g_i`); Alg. 1 in the paper and torchjd's
    `PCGrad` skip `j = i`.
    The orders are drawn from the step key that `update` receives (derived from the
    run's seed and the step), so the same key gives the same weights and a resumed run
    draws the same orders.

    Metrics: `num_projections`, the number of projections performed this step.

    Examples:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> from mtl_jax.weighting import pcgrad
      >>> w = pcgrad()
      >>> gram = jnp.array([[1.0, -0.5], [-0.5, 1.0]])
      >>> key = jax.random.PRNGKey(0)
      >>> weights, _, _ = w.update(None, w.init(("a", "b")), key=key, gramian=gram)
      >>> [round(float(x), 4) for x in weights]
      [1.5, 1.5]
    """

    def init(task_names):
        del task_names
        return PCGradState()

    def update(losses, state, *, key, gramian=None, rows=None):
        del losses, rows
        weights, count = pcgrad_weights(gramian, task_orders(key, gramian.shape[0]))
        return weights, state, {"num_projections": count}

    return Weighting(init=init, update=update, kind=GRAMIAN, stochastic=True)
