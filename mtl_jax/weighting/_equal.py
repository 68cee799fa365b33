"""`equal`: linear scalarisation with constant weights."""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from mtl_jax.weighting._base import LOSS, Weighting


class EqualState(NamedTuple):
    """`equal` keeps no state."""


def equal(*, reduction: str = "sum") -> Weighting:
    """Equal weighting (linear scalarisation), `L = Σ_t w L_t`.

    Args:
      reduction: `"sum"` gives `w_t = 1` (LibMTL's EW); `"mean"` gives `w_t = 1/T`
        (torchjd's Mean). The choice scales the shared learning rate by T.

    Examples:
      >>> import jax.numpy as jnp
      >>> from mtl_jax.weighting import equal
      >>> w = equal()
      >>> weights, _, _ = w.update(jnp.array([0.3, 2.0]), w.init(("a", "b")), key=None)
      >>> weights.tolist()
      [1.0, 1.0]
    """
    if reduction not in ("sum", "mean"):
        raise ValueError(f"equal: reduction must be 'sum' or 'mean', got {reduction!r}")

    def init(task_names):
        del task_names
        return EqualState()

    def update(losses, state, *, key, gramian=None, rows=None):
        del key, gramian, rows
        num_tasks = losses.shape[0]
        value = 1.0 if reduction == "sum" else 1.0 / num_tasks
        return jnp.full((num_tasks,), value, jnp.float32), state, {}

    return Weighting(init=init, update=update, kind=LOSS)
