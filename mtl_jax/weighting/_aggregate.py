"""`aggregate`: apply any method to a plain matrix of per-task gradients."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from mtl_jax.row_math import combine, gramian
from mtl_jax.weighting._base import GRAMIAN, JACOBIAN, LOSS, Weighting


def default_task_names(num_tasks: int) -> tuple[str, ...]:
    """Names `task0, task1, …` zero-padded so that sorted order is index order."""
    width = len(str(max(num_tasks - 1, 0)))
    return tuple(f"task{i:0{width}d}" for i in range(num_tasks))


def aggregate(
    method: Weighting,
    jacobian: jax.Array,
    *,
    key: jax.Array | None = None,
    losses: jax.Array | None = None,
    state: Any = None,
) -> tuple[jax.Array, jax.Array | None, Any]:
    """Combines the rows of a `[T, P]` matrix of task gradients with a weighting method.

    This is the entry point for users who compute per-task gradients themselves (what
    torchjd users do with `aggregator(matrix)`). It is jittable with `method` static.

    Args:
      method: a `Weighting`, e.g. `mtl_jax.weighting.mgda()`.
      jacobian: [T, P] matrix whose row t is the gradient of task t's loss.
      key: the PRNG key of this call's random draws, required by the methods that draw
        (`method.stochastic`: `rlw`, `pcgrad`, `gradvac`, `graddrop`); the others
        ignore it and may get `None`. Derive it from your run's seed and step, e.g.
        `jax.random.fold_in(jax.random.PRNGKey(seed), step)`, so that every step draws
        fresh numbers and a rerun draws the same ones; there is no default key.
      losses: [T] task losses; required by loss-based methods and by options that use
        losses (e.g. `mgda(normalization="loss")`).
      state: the method's state; `None` initialises it (tasks named `task0, task1, …`).

    Returns:
      `(direction [P], weights [T], new_state)` with `direction = Σ_t w_t J_t`; a descent
      step is `params - lr * direction`. Jacobian-kind methods (e.g. `graddrop`) are not
      a reweighting of the rows: their `weights` are `None`. Methods with an
      `after_update` hook (FAMO) need it called by the caller with the losses after the
      step: `state, _ = method.after_update(losses, new_losses, state)`.

    Examples:
      >>> import jax.numpy as jnp
      >>> from mtl_jax.weighting import aggregate, mgda
      >>> J = jnp.array([[1.0, 0.0], [0.0, 2.0]])
      >>> direction, weights, _ = aggregate(mgda(normalization="none"), J)
      >>> [round(x, 4) for x in weights.tolist()]  # the min-norm point of the two rows
      [0.8, 0.2]
      >>> [round(x, 4) for x in direction.tolist()]
      [0.8, 0.4]
    """
    if method.blocks != "whole":
        raise ValueError(
            f"aggregate: a method with blocks={method.blocks!r} needs the shared-parameter "
            "tree to form its blocks; a [T, P] matrix has none (use it in the train step)"
        )
    jacobian = jnp.asarray(jacobian)
    if jacobian.ndim != 2:
        raise ValueError(f"aggregate: jacobian must be [T, P], got shape {jacobian.shape}")
    num_tasks = jacobian.shape[0]
    if losses is not None and jnp.shape(losses) != (num_tasks,):
        raise ValueError(
            f"aggregate: losses must have shape ({num_tasks},), got {jnp.shape(losses)}"
        )
    if state is None:
        row = jax.ShapeDtypeStruct(jacobian.shape[1:], jnp.float32)
        state = method.init_for(default_task_names(num_tasks), row)
    # Weights are constants even when the caller differentiates through `aggregate`.
    if losses is not None:
        losses = jax.lax.stop_gradient(jnp.asarray(losses, jnp.float32))
    jacobian = jax.lax.stop_gradient(jacobian)
    if method.kind == LOSS and losses is None:
        raise ValueError("aggregate: this loss-based method needs `losses`")
    if method.stochastic and key is None:
        raise ValueError(
            "aggregate: this method draws random numbers; pass key= (a PRNG key derived "
            "from your run's seed and step)"
        )
    output, state, _ = method.update(
        losses,
        state,
        key=key,
        gramian=gramian(jacobian) if method.kind == GRAMIAN else None,
        rows=jacobian if method.kind == JACOBIAN else None,
    )
    if method.kind == JACOBIAN:
        return output, None, state
    return combine(output, jacobian), output, state
