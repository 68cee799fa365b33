"""`rlw`: random loss weighting (Lin et al., TMLR 2022)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax.weighting._base import LOSS, Weighting


class RLWState(NamedTuple):
    """Empty: every draw comes from the step key."""


def rlw() -> Weighting:
    """Random loss weighting: fresh weights `w = softmax(z)`, `z ~ N(0, I)`, every step.

    Lin et al., "Reasonable Effectiveness of Random Weighting: A Litmus Test for
    Multi-Task Learning", TMLR 2022: RLW with the standard normal as the distribution of
    the unnormalised weights (the paper's and LibMTL's default). The weights lie on the
    simplex (they sum to 1, not to T), so the shared learning rate is effectively `1/T`
    of `equal(reduction="sum")`'s, as in LibMTL. LibMTL weights the heads' losses too;
    here they get their own unweighted gradient unless the trainer's
    `head_grads="weighted"`.

    `z` is drawn from the step key that `update` receives (the train step derives it
    from the run's seed and the step), so runs of different seeds draw different weights,
    the same seed draws the same ones, and a resumed run continues the same sequence.

    Examples:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> from mtl_jax.weighting import rlw
      >>> w = rlw()
      >>> key = jax.random.PRNGKey(0)
      >>> weights, state, _ = w.update(jnp.ones(3), w.init(("a", "b", "c")), key=key)
      >>> round(float(weights.sum()), 5)
      1.0
    """

    def init(task_names):
        del task_names
        return RLWState()

    def update(losses, state, *, key, gramian=None, rows=None):
        del gramian, rows
        logits = jax.random.normal(key, losses.shape, jnp.float32)
        return jax.nn.softmax(logits), state, {}

    return Weighting(init=init, update=update, kind=LOSS, stochastic=True)
