"""`uncertainty`: homoscedastic-uncertainty weighting (Kendall et al., CVPR 2018)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from mtl_jax.weighting._base import LOSS, Weighting


class UncertaintyState(NamedTuple):
    """Learned log-variances `s` [T] and their optimizer state."""

    log_variance: jax.Array
    opt_state: optax.OptState


def uncertainty(*, learning_rate: float = 1e-3, init_log_variance: float = -0.5) -> Weighting:
    """Uncertainty weighting, Kendall, Gal & Cipolla, CVPR 2018 (Eq. 7, in LibMTL's form).

    The joint objective is `Σ_t e^{-s_t} L_t / 2 + s_t / 2` with learned log-variances
    `s`. The model sees weights `w_t = e^{-s_t} / 2`; `s` takes one Adam step per update on
    the gradient `(1 − e^{-s_t} L_t) / 2` of that objective, whose minimiser for fixed
    losses is `s_t = log L_t`. LibMTL back-propagates the weighted losses into the heads
    as well; here they get their own unweighted gradient unless the trainer's
    `head_grads="weighted"`.

    Args:
      learning_rate: Adam learning rate of `s` (LibMTL trains `s` with the model's
        optimizer; set this to the model's learning rate to match it).
      init_log_variance: initial `s_t` (LibMTL: −0.5).
    """
    tx = optax.adam(learning_rate)

    def init(task_names):
        s = jnp.full((len(task_names),), init_log_variance, jnp.float32)
        return UncertaintyState(s, tx.init(s))

    def update(losses, state, *, key, gramian=None, rows=None):
        del key, gramian, rows
        s = state.log_variance
        precision = jnp.exp(-s)
        grad = 0.5 * (1.0 - precision * losses)
        updates, opt_state = tx.update(grad, state.opt_state, s)
        new_s = optax.apply_updates(s, updates)
        return 0.5 * precision, UncertaintyState(new_s, opt_state), {"log_variance": s}

    return Weighting(init=init, update=update, kind=LOSS)
