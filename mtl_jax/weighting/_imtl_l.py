"""`imtl_l`: the loss-balance part of impartial multi-task learning (Liu et al., ICLR 2021)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from mtl_jax.weighting._base import LOSS, Weighting


class IMTLLState(NamedTuple):
    """Learned log-scales `s` [T] and their optimizer state."""

    loss_scale: jax.Array
    opt_state: optax.OptState


def init_loss_scale(
    tx: optax.GradientTransformation, num_tasks: int, value: float
) -> tuple[jax.Array, optax.OptState]:
    """`(s, opt_state)` with `s_t = value` for every task."""
    s = jnp.full((num_tasks,), value, jnp.float32)
    return s, tx.init(s)


def loss_scale_step(
    tx: optax.GradientTransformation,
    loss_scale: jax.Array,
    opt_state: optax.OptState,
    losses: jax.Array,
) -> tuple[jax.Array, optax.OptState]:
    """One optimizer step of `s` on `Σ_t e^{s_t} L_t − s_t`, whose gradient is `e^s L − 1`."""
    grad = jnp.exp(loss_scale) * losses - 1.0
    updates, opt_state = tx.update(grad, opt_state, loss_scale)
    return optax.apply_updates(loss_scale, updates), opt_state


def imtl_l(*, learning_rate: float = 1e-3, init_scale: float = 0.0) -> Weighting:
    """IMTL-L, the loss balance of Liu, Li, Kuang, Xue, Chen, Yang, Liao & Zhang, ICLR 2021.

    Each loss is scaled by `e^{s_t}` with a learned `s`, and `s` minimises
    `e^{s_t} L_t − s_t`: for fixed losses the minimiser is `s_t = −log L_t`, so the scaled
    losses `e^{s_t} L_t` all equalise at 1 (the loss-balance, scale-free objective). The
    model sees weights `w_t = e^{s_t}`; `s` takes one Adam step per update on the
    gradient `e^{s_t} L_t − 1`. The paper states the objective for the shared and task
    parameters together; since the weights are constants for the model (as for every
    method here), `−s_t` only matters for `s`.

    Args:
      learning_rate: Adam learning rate of `s` (the paper trains `s` with the model's
        optimizer; set this to the model's learning rate to match it).
      init_scale: initial `s_t` (LibMTL's `IMTL`: 0, i.e. weights 1).

    Metrics: `loss_scale`, the [T] vector `s` used this step.

    Examples:
      >>> import jax.numpy as jnp
      >>> from mtl_jax.weighting import imtl_l
      >>> w = imtl_l()
      >>> weights, _, _ = w.update(jnp.array([0.5, 2.0]), w.init(("a", "b")), key=None)
      >>> weights.tolist()  # e^s with the scales s still at 0
      [1.0, 1.0]
    """
    if not learning_rate > 0:
        raise ValueError(f"imtl_l: learning_rate must be positive, got {learning_rate!r}")
    tx = optax.adam(learning_rate)

    def init(task_names):
        return IMTLLState(*init_loss_scale(tx, len(task_names), init_scale))

    def update(losses, state, *, key, gramian=None, rows=None):
        del key, gramian, rows
        s = state.loss_scale
        new_s, opt_state = loss_scale_step(tx, s, state.opt_state, losses)
        return jnp.exp(s), IMTLLState(new_s, opt_state), {"loss_scale": s}

    return Weighting(init=init, update=update, kind=LOSS)
