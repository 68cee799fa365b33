"""`gradnorm`: gradient normalisation (Chen et al., ICML 2018)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from mtl_jax.weighting._base import GRAMIAN, Weighting


class GradNormState(NamedTuple):
    """Weight logits `s` [T], their optimizer state, the first losses `L(0)` and a counter."""

    logits: jax.Array
    opt_state: optax.OptState
    initial_losses: jax.Array
    step: jax.Array


NORMS_ON = ("shared", "last_layer")


def gradnorm(
    *, alpha: float = 1.5, learning_rate: float = 1e-3, norms_on: str = "shared"
) -> Weighting:
    """GradNorm, Chen, Badrinarayanan, Lee & Rabinovich, ICML 2018, Eq. 2 (LibMTL's form).

    Task weights `w = T · softmax(s)` (they sum to T) are learned so that the weighted
    gradient norms `G_t = w_t ‖g_t‖` approach the common target `Ḡ · r_t^α`, where
    `Ḡ = mean_t G_t`, `r_t = L̃_t / mean(L̃)` is the relative inverse training rate and
    `L̃_t = L_t / L_t(0)`. Each update takes one Adam step on `s` for the loss
    `Σ_t |G_t − Ḡ r_t^α|` with the target held constant (Eq. 2), and returns the weights
    from before the step, which the model uses for `Σ_t w_t g_t`.

    Conventions: `‖g_t‖` is the norm of task t's gradient over the parameters `norms_on`
    names. `"shared"` (default, LibMTL's choice): all shared parameters in parameter mode,
    or the shared representation with `rep_grad=True` (the output of the last shared
    layer; the norm is over all (example, feature) entries, whereas LibMTL sums the
    representation gradients over the batch first). `"last_layer"`: the paper's subset
    `W`, the trunk's last layer of weights (`mtl_jax.param_blocks`, blocks
    `"last_layer"`; parameter mode). The weights apply to the whole shared gradient
    either way. `L(0)` are the losses of the first update (the paper's initial losses).
    LibMTL instead trains its whole first epoch with weights 1 and no update of `s`, and
    from the second epoch on uses that epoch's mean losses as `L(0)`. LibMTL trains `s`
    with the model's optimizer and learning rate; here `s` has its own Adam
    (`learning_rate`).

    Args:
      alpha: the restoring-force strength α (paper's and LibMTL's default: 1.5).
      learning_rate: Adam learning rate of the weight logits.
      norms_on: `"shared"` or `"last_layer"`, see above.
    """
    if alpha < 0 or learning_rate <= 0:
        raise ValueError(
            f"gradnorm: need alpha >= 0 and learning_rate > 0, got {alpha}, {learning_rate}"
        )
    if norms_on not in NORMS_ON:
        raise ValueError(f"gradnorm: norms_on must be one of {list(NORMS_ON)}, got {norms_on!r}")
    tx = optax.adam(learning_rate)
    last_layer = norms_on == "last_layer"

    def init(task_names, row=None):
        del row  # the state does not depend on the parameters' shape
        num_tasks = len(task_names)
        logits = jnp.zeros((num_tasks,), jnp.float32)
        return GradNormState(
            logits, tx.init(logits), jnp.ones((num_tasks,), jnp.float32), jnp.zeros((), jnp.int32)
        )

    def update(losses, state, *, key, gramian=None, rows=None):
        del key, rows
        num_tasks = losses.shape[0]
        if last_layer:  # blocks: [every other parameter, the last layer]
            gramian = gramian[1]
        norms = jnp.sqrt(jnp.maximum(jnp.diagonal(gramian), 0.0))
        initial = jnp.where(state.step == 0, losses, state.initial_losses)
        ratio = jnp.where(initial > 0, losses / jnp.where(initial > 0, initial, 1.0), 1.0)
        mean_ratio = jnp.mean(ratio)
        inverse_rate = jnp.where(
            mean_ratio > 0, ratio / jnp.where(mean_ratio > 0, mean_ratio, 1.0), 1.0
        )

        def weights_of(logits):
            return num_tasks * jax.nn.softmax(logits)

        weights = weights_of(state.logits)
        target = jax.lax.stop_gradient(jnp.mean(weights * norms) * inverse_rate**alpha)

        def gradnorm_loss(logits):
            return jnp.sum(jnp.abs(weights_of(logits) * norms - target))

        value, grad = jax.value_and_grad(gradnorm_loss)(state.logits)
        updates, opt_state = tx.update(grad, state.opt_state, state.logits)
        new_state = GradNormState(
            optax.apply_updates(state.logits, updates), opt_state, initial, state.step + 1
        )
        return weights, new_state, {"gradnorm_loss": value}

    blocks = "last_layer" if last_layer else "whole"
    return Weighting(init=init, update=update, kind=GRAMIAN, blocks=blocks)
