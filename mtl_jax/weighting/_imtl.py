"""`imtl`: hybrid impartial multi-task learning, IMTL-G on IMTL-L-scaled losses (ICLR 2021)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import optax

from mtl_jax.weighting._base import GRAMIAN, Weighting
from mtl_jax.weighting._imtl_g import equal_projection_weights
from mtl_jax.weighting._imtl_l import init_loss_scale, loss_scale_step


class IMTLState(NamedTuple):
    """Learned log-scales `s` [T] of the losses and their optimizer state."""

    loss_scale: jax.Array
    opt_state: optax.OptState


def imtl(*, learning_rate: float = 1e-3, init_scale: float = 0.0) -> Weighting:
    """IMTL (hybrid balance), Liu, Li, Kuang, Xue, Chen, Yang, Liao & Zhang, ICLR 2021.

    The losses are scaled by `e^{s_t}` with `s` learned as in `imtl_l` (minimising
    `e^{s_t} L_t − s_t`, so the scaled losses equalise), and IMTL-G (`imtl_g`, Eq. 9) is
    applied to the gradients of the scaled losses, `e^{s_t} g_t`, whose Gramian is
    `D G D` with `D = diag(e^s)`. The update is `d = Σ_t α_t e^{s_t} g_t` with `Σ α = 1`,
    so the weights returned on the *original* gradients are `w_t = α_t e^{s_t}`. The unit
    gradients do not depend on `s`, so the direction of `d` is IMTL-G's; `s` sets its
    length through the normalisation of `α` (LibMTL's `IMTL`, which scales the losses the
    same way).

    Conventions that change numbers: every head gets its own unweighted gradient (in the
    paper and in LibMTL the heads see the scaled losses `e^{s_t} L_t`). LibMTL registers
    `s` as an `nn.Parameter` of the model, so its trainer's optimizer learns it with the
    model's learning rate (and weight decay); here `s` has its own Adam.

    Args:
      learning_rate: Adam learning rate of `s` (LibMTL: the model's optimizer).
      init_scale: initial `s_t` (LibMTL: 0).

    Metrics: `loss_scale` (the `s` used this step) and `solver_residual` (IMTL-G's
    relative projection spread).

    Examples:
      >>> import jax.numpy as jnp
      >>> from mtl_jax.weighting import imtl
      >>> w = imtl()
      >>> gram = jnp.diag(jnp.array([1.0, 4.0]))
      >>> losses = jnp.array([1.0, 1.0])
      >>> weights, _, _ = w.update(losses, w.init(("a", "b")), key=None, gramian=gram)
      >>> [round(float(x), 4) for x in weights]  # s = 0: IMTL-G
      [0.6667, 0.3333]
    """
    if not learning_rate > 0:
        raise ValueError(f"imtl: learning_rate must be positive, got {learning_rate!r}")
    tx = optax.adam(learning_rate)

    def init(task_names):
        return IMTLState(*init_loss_scale(tx, len(task_names), init_scale))

    def update(losses, state, *, key, gramian=None, rows=None):
        del key, rows
        if losses is None:
            raise ValueError("imtl: needs the task losses to learn the loss scales")
        s = state.loss_scale
        weights, residual = equal_projection_weights(gramian, log_scale=s)
        new_s, opt_state = loss_scale_step(tx, s, state.opt_state, losses)
        metrics = {"loss_scale": s, "solver_residual": residual}
        return weights, IMTLState(new_s, opt_state), metrics

    return Weighting(init=init, update=update, kind=GRAMIAN)
