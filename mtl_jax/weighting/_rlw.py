"""`rlw`: random loss weighting (Lin et al., TMLR 2022)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax.weighting._base import LOSS, Weighting


class RLWState(NamedTuple):
    """The PRNG key of the next draw (split at every update)."""

    key: jax.Array


def rlw(*, seed: int = 0) -> Weighting:
    """Random loss weighting: fresh weights `w = softmax(z)`, `z ~ N(0, I)`, every step.

    Lin et al., "Reasonable Effectiveness of Random Weighting: A Litmus Test for
    Multi-Task Learning", TMLR 2022: RLW with the standard normal as the distribution of
    the unnormalised weights (the paper's and LibMTL's default). The weights lie on the
    simplex (they sum to 1, not to T), so the shared learning rate is effectively `1/T`
    of `equal(reduction="sum")`'s, as in LibMTL.

    All randomness comes from the key in the state: `init` builds it from `seed`, and
    every `update` splits it, drawing with one half and keeping the other. The same state
    therefore gives the same weights, and a run resumed from a checkpointed state draws
    the same sequence.

    Args:
      seed: integer seed of the initial key.

    Example:
      >>> w = rlw(seed=0)
      >>> weights, state, _ = w.update(jnp.ones(3), w.init(("a", "b", "c")))
      >>> round(float(weights.sum()), 5)
      1.0
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"rlw: seed must be an integer, got {seed!r}")

    def init(task_names):
        del task_names
        return RLWState(jax.random.PRNGKey(seed))

    def update(losses, state):
        key, draw = jax.random.split(state.key)
        logits = jax.random.normal(draw, losses.shape, jnp.float32)
        return jax.nn.softmax(logits), RLWState(key), {}

    return Weighting(init=init, update=update, kind=LOSS)
