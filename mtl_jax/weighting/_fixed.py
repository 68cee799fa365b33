"""`fixed`: user-given constant task weights, validated."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax.weighting._base import LOSS, Weighting


class FixedState(NamedTuple):
    """The validated weights in sorted task-name order."""

    weights: jax.Array


def fixed(*, weights: Mapping[str, float]) -> Weighting:
    """Constant weights chosen by the user, `L = Σ_t w_t L_t`.

    Args:
      weights: task name -> weight; every weight finite and ≥ 0, not all zero. The names
        must be exactly the tasks being trained (checked by `init`).

    Raises:
      ValueError: for a non-finite, negative or all-zero weight, or (from `init`) when
        the names differ from the tasks; the message shows both sets.

    Examples:
      >>> import jax.numpy as jnp
      >>> from mtl_jax.weighting import fixed
      >>> w = fixed(weights={"left": 1.0, "right": 0.5})
      >>> weights, _, _ = w.update(jnp.ones(2), w.init(("left", "right")), key=None)
      >>> weights.tolist()
      [1.0, 0.5]
    """
    if not isinstance(weights, Mapping) or not weights:
        raise ValueError(
            f"fixed: weights must be a non-empty mapping task -> weight, got {weights!r}"
        )
    for name, value in weights.items():
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(
                f"fixed: weight of task {name!r} must be finite and >= 0, got {value!r}"
            )
    if not any(weights.values()):
        raise ValueError("fixed: at least one weight must be positive")

    def init(task_names):
        if set(task_names) != set(weights):
            raise ValueError(
                "fixed: weights are given for tasks "
                f"{sorted(weights)} but the tasks are {sorted(task_names)}"
            )
        return FixedState(jnp.asarray([float(weights[n]) for n in sorted(task_names)], jnp.float32))

    def update(losses, state, *, key, gramian=None, rows=None):
        del losses, key, gramian, rows
        return state.weights, state, {}

    return Weighting(init=init, update=update, kind=LOSS)
