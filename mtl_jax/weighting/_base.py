"""The weighting protocol shared by every method.

A method is a factory taking keyword-only hyper-parameters and returning a `Weighting`:
two pure functions and the kind of gradient information `update` needs.

* `init(task_names) -> state`: `task_names` is the sorted tuple of task names; the state
  is a NamedTuple pytree of arrays named after the method (counters, histories, keys,
  learnable parameters with their own optax state).
* `update(losses, state[, gramian]) -> (weights, new_state, metrics)`:
  `losses` is the [T] vector of task losses, as constants (weights never carry a
  gradient); `gramian` is the [T, T] Gramian `J Jᵀ` of the per-task gradients, passed
  only to `GRAMIAN` methods; `weights` is [T]; `metrics` maps names to scalars or [T]
  vectors (solver iterations, residuals) that the trainer logs.

The library turns weights into the update: the shared gradient is `Σ_t w_t g_t`, and
every head gets its own task's gradient. Both functions are jit- and vmap-safe.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax

# What `update` receives besides the losses.
LOSS = "loss"  # nothing: weights from the losses (and the state) alone
GRAMIAN = "gramian"  # the [T, T] Gramian of the per-task gradients

State = Any
Metrics = dict[str, jax.Array]


class Weighting(NamedTuple):
    """A task-weighting method: `init`, `update` and the `kind` of input `update` needs."""

    init: Callable[[Sequence[str]], State]
    update: Callable[..., tuple[jax.Array, State, Metrics]]
    kind: str
