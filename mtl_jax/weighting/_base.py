"""The weighting protocol shared by every method.

A method is a factory taking keyword-only hyper-parameters and returning a `Weighting`:
two pure functions, the kind of gradient information `update` needs, and optionally a
hook that sees the losses after the parameter update.

* `init(task_names) -> state` (`JACOBIAN` methods and blocked `GRAMIAN` methods:
  `init(task_names, row) -> state`, where `row` is a pytree of `jax.ShapeDtypeStruct`, the
  shape of one task's gradient, so that the state can hold gradient-shaped buffers or
  per-block values). `task_names` is the sorted tuple of task
  names; the state is a NamedTuple pytree of arrays named after the method (counters,
  histories, learnable parameters with their own optax state).
* `update(losses, state, *, key, gramian=None, rows=None) -> (output, new_state, metrics)`,
  one signature for every kind; a method reads what its kind provides and ignores the
  rest. `losses` is the [T] vector of task losses, as constants (weights never carry a
  gradient). `key` is the step's PRNG key for this method, derived by the train step
  from the run's seed and the step (`mtl_jax.train.step_keys`) and passed explicitly by
  `aggregate`: every random draw of a method comes from it, never from a seed of its own,
  so runs of different seeds draw differently and a resumed run draws the same numbers.
  A method whose `update` reads `key` declares `stochastic=True`; the others may be given
  `key=None`.
  `gramian` is the [T, T] Gramian `J Jᵀ` of the per-task gradients (`GRAMIAN` methods;
  the trainer also passes it to `JACOBIAN` ones); `rows` is the pytree of per-task
  gradients with a leading task axis [T, ...] (`JACOBIAN` methods).
  `LOSS` and `GRAMIAN` methods return `weights` [T] as `output`; the library turns them
  into the update: the shared gradient is `Σ_t w_t g_t`. `JACOBIAN` methods return the
  `direction`, shaped like one row: it *is* the shared gradient (parameter mode) or the
  representation cotangent that the trunk pulls back (`rep_grad` mode).
* Blocked `GRAMIAN` methods (`blocks` other than `"whole"`, see `mtl_jax.param_blocks`):
  `gramian` is [B, T, T], one Gramian per parameter block (they sum to the full one), and
  `weights` is [T] (every block) or [B, T] (block b's rows are combined with `weights[b]`).
  Blocks partition shared *parameters*, so these methods need parameter mode.
* Multi-batch `GRAMIAN` methods (`batches` = k > 1: SDMGrad, MoDo) take k independent
  mini-batches per step (the train step gets `{"0": batch, ..., "k-1": batch}`):
  `gramian` is then the cross-Gramian `J_0 J_1ᵀ` of the first two batches' per-task
  gradients (double sampling; not symmetric), `losses` the [T] mean over the k batches,
  and the returned weights combine the gradients of the last batch, `Σ_t w_t g_t^(k−1)`.
  On one fixed batch (`aggregate`) the cross-Gramian is the ordinary one.
* `after_update(losses_before, losses_after, state) -> (new_state, metrics)`, `None` for
  most methods: methods that learn from the effect of the step (FAMO) get the losses of
  the same batch under the updated parameters; the trainer then runs one extra forward.

`metrics` maps names to scalars or [T] vectors (solver iterations, residuals) that the
trainer logs. Every head gets its own task's gradient. All functions are jit-safe.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax

# What `update` receives besides the losses.
LOSS = "loss"  # nothing: weights from the losses (and the state) alone
GRAMIAN = "gramian"  # the [T, T] Gramian of the per-task gradients
JACOBIAN = "jacobian"  # the per-task gradients themselves; `update` returns the direction
KINDS = (LOSS, GRAMIAN, JACOBIAN)

State = Any
Metrics = dict[str, jax.Array]


class Weighting(NamedTuple):
    """A task-weighting method: `init`, `update`, the `kind` of input `update` needs, the
    optional `after_update` hook, for Gramian methods the parameter `blocks` their
    Gramians are taken over, whether `update` draws random numbers from its `key`
    (`stochastic`) and how many independent mini-batches one step takes (`batches`; see
    the module docstring)."""

    init: Callable[..., State]
    update: Callable[..., tuple[Any, State, Metrics]]
    kind: str
    after_update: Callable[[jax.Array, jax.Array, State], tuple[State, Metrics]] | None = None
    blocks: str = "whole"
    stochastic: bool = False
    batches: int = 1

    @property
    def needs_row(self) -> bool:
        """Whether `init` takes the gradient shape `row` (jacobian kind, or blocked)."""
        return self.kind == JACOBIAN or self.blocks != "whole"

    def init_for(self, task_names: Sequence[str], row: Any = None) -> State:
        """`init` with the arguments this method takes (`row` only where `needs_row`)."""
        if self.needs_row:
            if row is None:
                what = "jacobian-kind" if self.kind == JACOBIAN else f"blocks={self.blocks!r}"
                raise ValueError(f"a {what} method needs the gradient shape to initialise")
            return self.init(tuple(task_names), row)
        return self.init(tuple(task_names))
