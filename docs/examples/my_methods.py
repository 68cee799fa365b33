"""Two weighting methods written outside mtl_jax (the guide "Writing a weighting method").

Use them by import path, with nothing in the library edited:
`weighting.create("my_methods:norm_balance", relax=0.5)`, or in an experiment
`--config.weighting.name=my_methods:norm_balance --config.weighting.kwargs.relax=0.5`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax.weighting import GRAMIAN, LOSS, Weighting


# --8<-- [start:norm_balance]
class NormBalanceState(NamedTuple):
    """`norm_balance`'s state: running gradient norms and the number of updates."""

    norms: jax.Array  # [T] exponential moving average of ‖g_t‖
    count: jax.Array  # int32 scalar


def norm_balance(*, beta: float = 0.9, relax: float = 0.7) -> Weighting:
    """Gradient-magnitude balancing, after MetaBalance (He et al., WWW 2022).

    MetaBalance moves the norm of every auxiliary task's gradient toward the norm of the
    target task's. With no target task, this variant moves every norm toward their mean:
    `w_t = relax · m̄ / m_t + (1 − relax)`, where `m_t` is an exponential moving average
    (factor `beta`) of `‖g_t‖ = √G_tt` and `m̄` the mean of the `m_t`. A task whose
    gradient has always been zero keeps `w_t = 1`.

    Args:
      beta: EMA factor of the norms, in [0, 1).
      relax: in [0, 1]; 0 is `equal()`, 1 gives every row the mean norm (MetaBalance's
        "relax factor").

    Metrics: `norms` [T], the running norms `m_t`.

    Examples:
      >>> import jax.numpy as jnp
      >>> from mtl_jax.weighting import aggregate
      >>> J = jnp.array([[4.0, 0.0], [0.0, 1.0]])
      >>> _, weights, _ = aggregate(norm_balance(relax=1.0), J)
      >>> weights.tolist()  # both rows rescaled to the mean norm 2.5
      [0.625, 2.5]
    """
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"norm_balance: beta must be in [0, 1), got {beta!r}")
    if not 0.0 <= relax <= 1.0:
        raise ValueError(f"norm_balance: relax must be in [0, 1], got {relax!r}")

    def init(task_names):
        return NormBalanceState(
            norms=jnp.zeros(len(task_names), jnp.float32), count=jnp.zeros((), jnp.int32)
        )

    def update(losses, state, *, key, gramian=None, rows=None):
        del losses, key, rows  # a Gramian method reads only `gramian` (and its state)
        norms = jnp.sqrt(jnp.maximum(jnp.diagonal(gramian), 0.0))
        # The first update has no history to average with: no `if` on traced values.
        ema = jnp.where(state.count == 0, norms, beta * state.norms + (1.0 - beta) * norms)
        ratio = jnp.where(ema > 0, jnp.mean(ema) / jnp.where(ema > 0, ema, 1.0), 1.0)
        weights = relax * ratio + (1.0 - relax)
        return weights, NormBalanceState(ema, state.count + 1), {"norms": ema}

    return Weighting(init=init, update=update, kind=GRAMIAN)


# --8<-- [end:norm_balance]


# --8<-- [start:task_dropout]
class TaskDropoutState(NamedTuple):
    """`task_dropout` keeps no state: its draws come from the step's key."""


def task_dropout(*, rate: float = 0.3) -> Weighting:
    """Random task dropout: each step, each task's loss is left out with probability `rate`.

    The kept losses are scaled by `1 / (1 − rate)`, so the expected weights are all 1
    (`equal()`). A teaching example of a stochastic method: every draw comes from the
    `key` that `update` is given, so the run's seed decides them and a resumed run
    draws the same ones.

    Args:
      rate: the probability of dropping a task, in [0, 1).

    Examples:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> method = task_dropout(rate=0.5)
      >>> state = method.init(("a", "b", "c"))
      >>> key = jax.random.PRNGKey(0)
      >>> weights, _, _ = method.update(jnp.ones(3), state, key=key)
      >>> all(w in (0.0, 2.0) for w in weights.tolist())
      True
      >>> again, _, _ = method.update(jnp.ones(3), state, key=key)
      >>> again.tolist() == weights.tolist()  # same key, same draw
      True
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"task_dropout: rate must be in [0, 1), got {rate!r}")

    def init(task_names):
        del task_names
        return TaskDropoutState()

    def update(losses, state, *, key, gramian=None, rows=None):
        del gramian, rows
        keep = jax.random.bernoulli(key, 1.0 - rate, losses.shape)
        weights = keep.astype(jnp.float32) / (1.0 - rate)
        return weights, state, {"kept": keep.astype(jnp.float32)}

    return Weighting(init=init, update=update, kind=LOSS, stochastic=True)


# --8<-- [end:task_dropout]
