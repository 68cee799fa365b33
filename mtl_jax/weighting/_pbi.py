"""`pbi`: penalty-based boundary intersection (Zhang & Li, IEEE TEVC 2007)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax.weighting._base import LOSS, Weighting
from mtl_jax.weighting._dual_cone import check_num_tasks, check_numbers, check_pref_vector

# `d2` at most this fraction of `‖L − z*‖` counts as zero: float32 rounding of the
# projection leaves `d2` of ~1e-7 · ‖L − z*‖ for losses exactly on the ray, whose
# direction is noise. There the subgradient 0 of the norm is used (see `pbi`).
ON_RAY_TOLERANCE = 1e-6


class PBIState(NamedTuple):
    """`pbi` keeps no state."""


def pbi(
    *,
    penalty: float = 5.0,
    pref_vector: Sequence[float] | None = None,
    ideal: Sequence[float] | None = None,
) -> Weighting:
    """Penalty-based boundary intersection, Zhang & Li, IEEE TEVC 2007, Sec. II-C.

    "MOEA/D: A Multiobjective Evolutionary Algorithm Based on Decomposition", the PBI
    approach: with `L` the [T] losses, `r` a preference direction and `z*` a reference
    (ideal) point, `r̂ = r / ‖r‖` and

        d1 = (L − z*) · r̂,    d2 = ‖(L − z*) − d1 r̂‖,    g = d1 + θ d2,

    `d1` is the distance travelled along the ray from `z*` in direction `r`, `d2` the
    distance from the ray; the penalty `θ` pulls the solution onto the ray, so that
    different `r` pick different points of the Pareto front (also on non-convex parts
    that a weighted sum cannot reach). The task weights are `w = ∂g/∂L` in closed form,

        w = r̂ + θ p / ‖p‖,    p = (L − z*) − d1 r̂,

    evaluated at the current losses and used as constants (the losses reach `update`
    behind a stop-gradient, like every loss method), so the shared gradient
    `Σ_t w_t g_t` is the gradient of `g`. The weights are not all non-negative: the
    penalty term raises tasks that lie above the ray and lowers the others.

    On the ray (`d2 = 0`) the norm has no gradient; its subgradient 0 is used there
    (`w = r̂`), and `d2 ≤ 1e-6 · ‖L − z*‖` counts as on the ray, since for losses
    exactly on it float32 rounding leaves a `d2` of that size whose direction is noise.
    Every weight is finite, at most `1 + θ` in absolute value.

    torchjd (`SimplexLab/TorchJD`, `src/torchjd/scalarization/_pbi.py`) has
    `PBI(theta, weights, reference=None)`: `theta` and the preference `weights` have no
    defaults, `reference=None` is the origin, and `d2` is smoothed as
    `sqrt(‖p‖² + 1e-12)` instead of taking the subgradient on the ray. Its docstring says
    the paper uses `θ = 5` in its experiments; that is the default here (not checked
    against the paper's text for this library).

    Args:
      penalty: `θ ≥ 0`, finite (default 5.0). `0` gives the plain projection `d1`,
        i.e. the weights `r̂`.
      pref_vector: `r`, one non-negative number per task in sorted-name order, not all
        zero (default uniform, `r̂_t = 1/√T`). Only its direction matters. It is a
        direction in loss space, not an importance: the solution sought has
        `L − z* ∝ r`, so a larger `r_t` accepts a larger loss of task t.
      ideal: `z*`, one finite number per task (default 0, the ideal point of
        non-negative losses). It should lie below the losses.

    Metrics: `d1` and `d2` (scalars).

    Examples:
      >>> import jax.numpy as jnp
      >>> from mtl_jax.weighting import pbi
      >>> w = pbi(penalty=5.0)
      >>> weights, _, _ = w.update(jnp.array([1.0, 1.0]), w.init(("a", "b")), key=None)
      >>> [round(x, 4) for x in weights.tolist()]  # on the ray: r̂
      [0.7071, 0.7071]
      >>> weights, _, _ = w.update(jnp.array([2.0, 0.0]), w.init(("a", "b")), key=None)
      >>> [round(x, 4) for x in weights.tolist()]  # r̂ + 5 (1, -1) / √2
      [4.2426, -2.8284]
    """
    if (
        isinstance(penalty, bool)
        or not isinstance(penalty, (int, float))
        or not math.isfinite(penalty)
        or penalty < 0
    ):
        raise ValueError(f"pbi: penalty must be a finite number >= 0, got {penalty!r}")
    pref_vector = check_pref_vector("pbi", pref_vector)
    ideal = None if ideal is None else check_numbers("pbi", "ideal", ideal)
    penalty = float(penalty)

    def check(num_tasks):
        check_num_tasks("pbi", "pref_vector", pref_vector, num_tasks)
        check_num_tasks("pbi", "ideal", ideal, num_tasks)

    def init(task_names):
        check(len(task_names))
        return PBIState()

    def update(losses, state, *, key, gramian=None, rows=None):
        del key, gramian, rows
        num_tasks = losses.shape[0]
        check(num_tasks)
        losses = jax.lax.stop_gradient(losses.astype(jnp.float32))
        r = jnp.ones((num_tasks,)) if pref_vector is None else jnp.asarray(pref_vector)
        r_hat = (r / jnp.linalg.norm(r)).astype(jnp.float32)
        shifted = losses if ideal is None else losses - jnp.asarray(ideal, jnp.float32)
        # Work in units of the largest |L − z*|, so that squares of huge losses cannot
        # overflow float32 (nor those of tiny ones underflow).
        scale = jnp.max(jnp.abs(shifted))
        unit = shifted / jnp.where(scale > 0, scale, 1.0)
        along = unit @ r_hat
        perp = unit - along * r_hat
        perp_norm = jnp.linalg.norm(perp)
        off_ray = perp_norm > ON_RAY_TOLERANCE * jnp.linalg.norm(unit)
        direction = jnp.where(off_ray, perp / jnp.where(off_ray, perp_norm, 1.0), 0.0)
        weights = r_hat + penalty * direction
        metrics = {"d1": scale * along, "d2": jnp.where(off_ray, scale * perp_norm, 0.0)}
        return weights, state, metrics

    return Weighting(init=init, update=update, kind=LOSS)
