"""`scale_invariant`: minimise the sum of log-losses (Navon et al., ICML 2022, SI baseline)."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax.numpy as jnp

from mtl_jax.weighting._base import LOSS, Weighting


class ScaleInvariantState(NamedTuple):
    """`scale_invariant` keeps no state."""


def scale_invariant(*, eps: float = 1e-20) -> Weighting:
    """Scale-invariant scalarisation: minimise `Σ_t log L_t`, so `w_t = 1 / L_t`.

    The "SI" baseline of Navon et al., "Multi-Task Learning as a Bargaining Game",
    ICML 2022 (Sec. 6, baselines): the objective `Σ_t log L_t` has gradient
    `Σ_t g_t / L_t`, so the weights are `w_t = 1 / L_t`. Multiplying a task's loss by a
    constant `c` multiplies its gradient by `c` and its weight by `1/c`, leaving the
    shared update `Σ_t w_t g_t` unchanged: the method is invariant to the losses' scales.
    The objective tends to −∞ as any loss tends to zero, so with a fixed learning rate
    the iterates can oscillate (or be thrown off) near a point where one task's loss
    is exactly zero; losses bounded away from zero, as usual in practice, are fine.

    Losses below `eps` (zero, or negative from a loss that is not a proper
    non-negative loss) count as `eps`, so a zero loss gets the large but finite weight
    `1/eps` instead of a division by zero. The reference code has no guard; LibMTL's
    STCH warm-up, which uses the same objective, adds `1e-20` inside the log, which
    differs from this clamp only for losses below ~`1e-20`.

    Args:
      eps: positive floor on the losses (default `1e-20`, the guard LibMTL's STCH uses
        for the same log-loss objective; representable in float32).

    Examples:
      >>> import jax.numpy as jnp
      >>> from mtl_jax.weighting import scale_invariant
      >>> w = scale_invariant()
      >>> weights, _, _ = w.update(jnp.array([0.5, 4.0]), w.init(("a", "b")), key=None)
      >>> weights.tolist()
      [2.0, 0.25]
    """
    if not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps <= 0:
        raise ValueError(f"scale_invariant: eps must be a finite number > 0, got {eps!r}")

    def init(task_names):
        del task_names
        return ScaleInvariantState()

    def update(losses, state, *, key, gramian=None, rows=None):
        del key, gramian, rows
        return 1.0 / jnp.maximum(losses, eps), state, {}

    return Weighting(init=init, update=update, kind=LOSS)
