"""`db_mtl`: dual-balancing multi-task learning (Lin et al., 2023)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax.row_math import combine, reciprocal_where
from mtl_jax.weighting._base import JACOBIAN, Weighting


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class DBMTLState(NamedTuple):
    """Update count and the EMA of the log-loss gradients, [T, *row] per leaf."""

    step: jax.Array
    buffer: Any


def db_mtl(*, beta: float = 0.9, beta_sigma: float = 0.0, eps: float = 1e-8) -> Weighting:
    """DB-MTL, Lin et al., "Dual-Balancing for Multi-Task Learning",
    2023 (arXiv:2308.12029), Sec. 3 and Alg. 1, in LibMTL's form.

    Loss balancing: each task is trained on `log(L_t + ε)`, whose gradient is
    `ĝ_t = g_t / (L_t + ε)`, so multiplying a loss by a constant changes nothing.
    Gradient balancing: an EMA of those gradients, `b_t ← (1 − β_k) ĝ_t + β_k b_t` with
    `β_k = β / k^σ` at update `k = 1, 2, …` and `b_t = 0` before the first, is rescaled
    to the largest norm (maximum-norm normalisation): `d = Σ_t (max_s ‖b_s‖ / ‖b_t‖) b_t`.
    Every rescaled row has norm `max_s ‖b_s‖`.

    LibMTL divides by `‖b_t‖ + 1e-8`; we divide by `‖b_t‖` and give a zero row the scale 0
    (its contribution is zero either way), so the rescaled norms are equal at every
    scale, including rows below 1e-8. A loss with `L_t + ε ≤ 0` (no logarithm) gets a zero
    log-gradient instead of LibMTL's NaN. LibMTL's heads are trained on the log-losses
    too (gradient `g_t / (L_t + ε)`); here each head gets its own unweighted loss
    gradient. Use parameter gradients (`rep_grad=False`, the only mode LibMTL accepts):
    the EMA pairs coordinates across batches, and representation-gradient coordinates
    belong to different examples in every batch.

    Args:
      beta: EMA coefficient `β ∈ [0, 1]` (LibMTL: 0.9).
      beta_sigma: decay exponent `σ ≥ 0` of `β_k` (LibMTL: 0).
      eps: `ε ≥ 0` inside the logarithm (LibMTL: 1e-8).

    Metrics: `buffer_norm` [T] (`‖b_t‖`) and `buffer_scale` [T] (`max_s ‖b_s‖ / ‖b_t‖`).
    Needs the task losses.

    Examples:
      >>> import jax.numpy as jnp
      >>> from mtl_jax.weighting import aggregate, db_mtl
      >>> J = jnp.array([[3.0, 0.0], [0.0, 1.0]])
      >>> direction, _, _ = aggregate(db_mtl(), J, losses=jnp.array([1.0, 1.0]))
      >>> [round(x, 4) for x in direction.tolist()]  # both EMA rows rescaled to 0.3
      [0.3, 0.3]
    """
    if not _is_number(beta) or not 0.0 <= beta <= 1.0:
        raise ValueError(f"db_mtl: beta must be a number in [0, 1], got {beta!r}")
    if not _is_number(beta_sigma) or not 0.0 <= beta_sigma < float("inf"):
        raise ValueError(f"db_mtl: beta_sigma must be a finite number ≥ 0, got {beta_sigma!r}")
    if not _is_number(eps) or not 0.0 <= eps < float("inf"):
        raise ValueError(f"db_mtl: eps must be a finite number ≥ 0, got {eps!r}")

    def init(task_names, row):
        num_tasks = len(task_names)
        buffer = jax.tree.map(lambda s: jnp.zeros((num_tasks, *s.shape), s.dtype), row)
        return DBMTLState(jnp.zeros((), jnp.int32), buffer)

    def update(losses, state, *, key, gramian=None, rows=None):
        del key, gramian
        if losses is None:
            raise ValueError("db_mtl: needs the task losses (it balances gradients of log L_t)")
        step = state.step + 1
        rate = beta / step.astype(jnp.float32) ** beta_sigma
        shifted = losses.astype(jnp.float32) + eps
        inverse = reciprocal_where(shifted, shifted > 0)

        def ema(buffer, leaf):
            log_grad = leaf * inverse.reshape((-1,) + (1,) * (leaf.ndim - 1)).astype(leaf.dtype)
            return log_grad + rate.astype(leaf.dtype) * (buffer - log_grad)

        buffer = jax.tree.map(ema, state.buffer, rows)
        squares = [
            jnp.sum(jnp.square(leaf.astype(jnp.float32)).reshape(leaf.shape[0], -1), axis=1)
            for leaf in jax.tree.leaves(buffer)
        ]
        norms = jnp.sqrt(sum(squares))
        scale = jnp.where(norms > 0, jnp.max(norms) / jnp.where(norms > 0, norms, 1.0), 0.0)
        metrics = {"buffer_norm": norms, "buffer_scale": scale}
        return combine(scale, buffer), DBMTLState(step, buffer), metrics

    return Weighting(init=init, update=update, kind=JACOBIAN)
