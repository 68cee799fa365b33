"""`gls`: the geometric loss strategy (Chennupati et al., CVPRW 2019)."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax.numpy as jnp

from mtl_jax.weighting._base import LOSS, Weighting


class GLSState(NamedTuple):
    """`gls` keeps no state."""


def gls(*, eps: float = 1e-20) -> Weighting:
    """Geometric loss strategy: minimise the geometric mean `(Π_t L_t)^{1/T}`.

    Chennupati et al., "MultiNet++: Multi-Stream Feature Aggregation and Geometric Loss
    Strategy for Multi-Task Learning", CVPR Workshops 2019 (the geometric-mean total
    loss `(Π_t L_t)^{1/T}` that replaces the weighted sum). Its gradient is `Σ_t w_t g_t` with

        w_t = ∂(Π_s L_s)^{1/T} / ∂L_t = (Π_s L_s)^{1/T} / (T · L_t),

    which is what LibMTL's GLS back-propagates (its `backward` differentiates the
    geometric mean, into the heads too: here they get their own unweighted gradient
    unless the trainer's `head_grads="weighted"`). The weights are computed in log space,
    `w_t = exp(mean_s log L_s − log L_t) / T`, so that a product of many small or large
    losses neither underflows nor overflows. Since the geometric mean is homogeneous of
    degree one, `Σ_t w_t L_t` equals it. The weights are `scale_invariant`'s `1 / L_t`
    times the common factor `(Π L)^{1/T} / T`: same direction, a step size that shrinks
    with the losses.

    Like `scale_invariant`, the objective is singular where a loss reaches zero (the
    gradient grows like `L_t^{1/T − 1}`), so with a fixed learning rate the iterates can
    oscillate around a point where one task is solved exactly.

    A loss `L_t ≤ 0` makes the geometric mean's gradient infinite (or undefined); losses
    below `eps` are therefore counted as `eps`, which keeps every weight finite (at most
    `max_s L_s / (T · eps)`). LibMTL has no guard: a zero loss gives non-finite gradients
    there.

    Args:
      eps: positive floor on the losses (default `1e-20`, representable in float32).

    Metrics: `geometric_mean`, the scalar `(Π_t L_t)^{1/T}` of the floored losses.

    Examples:
      >>> import jax.numpy as jnp
      >>> from mtl_jax.weighting import gls
      >>> w = gls()
      >>> weights, _, _ = w.update(jnp.array([1.0, 4.0]), w.init(("a", "b")), key=None)
      >>> weights.tolist()  # geometric mean 2 over T · L_t
      [1.0, 0.25]
    """
    if not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps <= 0:
        raise ValueError(f"gls: eps must be a finite number > 0, got {eps!r}")

    def init(task_names):
        del task_names
        return GLSState()

    def update(losses, state, *, key, gramian=None, rows=None):
        del key, gramian, rows
        log_losses = jnp.log(jnp.maximum(losses, eps))
        log_mean = jnp.mean(log_losses)
        weights = jnp.exp(log_mean - log_losses) / losses.shape[0]
        return weights, state, {"geometric_mean": jnp.exp(log_mean)}

    return Weighting(init=init, update=update, kind=LOSS)
