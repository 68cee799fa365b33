"""`famo`: fast adaptive multitask optimisation (Liu et al., NeurIPS 2023)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from mtl_jax.weighting._base import LOSS, Weighting


def logit_gradient(logits: jax.Array, log_loss_decrease: jax.Array) -> jax.Array:
    """`∂z/∂ξᵀ δ = z ⊙ (δ − zᵀδ)` with `z = softmax(ξ)`: FAMO's gradient of the logits."""
    _, softmax_vjp = jax.vjp(jax.nn.softmax, logits)
    return softmax_vjp(log_loss_decrease)[0]


class FAMOState(NamedTuple):
    """Task logits `ξ` [T] and their optimizer state."""

    logits: jax.Array
    opt_state: optax.OptState


def famo(
    *,
    learning_rate: float = 0.025,
    weight_decay: float = 1e-3,
    min_losses: float = 0.0,
    eps: float = 1e-8,
) -> Weighting:
    """FAMO, Liu, Liu, Stone & Liu, NeurIPS 2023, Alg. 1.

    With `z = softmax(ξ)` and shifted losses `D_t = L_t − min_loss + eps`, the model
    minimises `Σ_t z_t log D_t / c` with `c = Σ_t z_t / D_t` held constant, i.e. it takes
    the gradient `Σ_t w_t ∇L_t` with `w_t = (z_t / D_t) / Σ_i (z_i / D_i)` (weights on the
    simplex). After the parameter update, the losses `L'` of the same batch give the
    per-task decrease of the log-loss `δ_t = log D_t − log D'_t`, and the logits take one
    Adam step on the gradient `∂z/∂ξᵀ δ` (Alg. 1, line 7; weight decay added to the
    gradient, as torch's Adam does). Tasks whose log-loss falls more slowly gain weight;
    when all log-losses fall at the same rate, `∂z/∂ξᵀ δ = z ⊙ (δ − zᵀδ) = 0` and `ξ`
    stays put (up to Adam's normalisation of float32 rounding noise in that gradient,
    as in the reference code).

    The trainer supplies `L'` from one extra forward on the same batch (the
    `after_update` hook), as LibMTL's trainer and the FAMO reference code do. LibMTL
    back-propagates the FAMO objective into the heads as well; here they get their own
    unweighted gradient unless the trainer's `head_grads="weighted"`.

    Args:
      learning_rate: Adam learning rate of `ξ` (paper and LibMTL: 0.025).
      weight_decay: L2 penalty on `ξ` added to its gradient (paper and LibMTL: 1e-3).
      min_losses: the losses' known lower bound subtracted before the log (0 for the
        usual non-negative losses).
      eps: added inside the log (reference code: 1e-8).

    Examples:
      >>> import jax.numpy as jnp
      >>> from mtl_jax.weighting import famo
      >>> method = famo()
      >>> state = method.init(("a", "b"))
      >>> weights, state, _ = method.update(jnp.array([1.0, 3.0]), state, key=None)
      >>> [round(x, 4) for x in weights.tolist()]  # softmax(0) / L, normalised
      [0.75, 0.25]
      >>> state, _ = method.after_update(jnp.array([1.0, 3.0]), jnp.array([0.5, 2.9]), state)
      >>> [round(x, 4) for x in state.logits.tolist()]  # "b" improved less: it gains weight
      [-0.025, 0.025]
    """
    if learning_rate <= 0:
        raise ValueError(f"famo: learning_rate must be positive, got {learning_rate}")
    if weight_decay < 0 or eps <= 0:
        raise ValueError(f"famo: need weight_decay >= 0 and eps > 0, got {weight_decay}, {eps}")
    tx = optax.chain(optax.add_decayed_weights(weight_decay), optax.adam(learning_rate))

    def shifted(losses):
        # Clamp at eps so that a loss below its stated bound cannot make the log NaN.
        return jnp.maximum(losses - min_losses + eps, eps)

    def init(task_names):
        logits = jnp.zeros((len(task_names),), jnp.float32)
        return FAMOState(logits, tx.init(logits))

    def update(losses, state, *, key, gramian=None, rows=None):
        del key, gramian, rows
        z = jax.nn.softmax(state.logits)
        scaled = z / shifted(losses)
        return scaled / jnp.sum(scaled), state, {"logits": state.logits}

    def after_update(losses_before, losses_after, state):
        delta = jnp.log(shifted(losses_before)) - jnp.log(shifted(losses_after))
        grad = logit_gradient(state.logits, delta)
        updates, opt_state = tx.update(grad, state.opt_state, state.logits)
        logits = optax.apply_updates(state.logits, updates)
        return FAMOState(logits, opt_state), {"log_loss_decrease": delta}

    return Weighting(init=init, update=update, kind=LOSS, after_update=after_update)
