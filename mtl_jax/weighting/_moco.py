"""`moco`: multi-objective gradient correction (Fernando et al., ICLR 2023)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax.row_math import combine
from mtl_jax.row_math import gramian as gramian_of
from mtl_jax.weighting._base import JACOBIAN, Weighting

NORMALIZATIONS = ("none", "loss")
SIMPLEX_STEPS = ("projection", "softmax")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class MoCoState(NamedTuple):
    """Update count, the tracked gradients `Y` ([T, *row] per leaf) and the weights λ [T]."""

    step: jax.Array
    tracked: Any
    weights: jax.Array


def _project_simplex(v: jax.Array) -> jax.Array:
    """Euclidean projection of `v` [T] onto the probability simplex.

    The sort-based algorithm (Held, Wolfe & Crowder 1974; Duchi et al., ICML 2008,
    Fig. 1): `Π(v) = max(v − θ, 0)` with the threshold `θ` set by the sorted prefix sums.
    `v` is shifted by its maximum first (the projection commutes with adding a constant
    to every entry), so that entries of any magnitude give a point of the simplex instead
    of losing the `1` to rounding.
    """
    v = v - jnp.max(v)
    ordered = jnp.sort(v)[::-1]
    count = jnp.arange(1, v.shape[0] + 1, dtype=v.dtype)
    excess = jnp.cumsum(ordered) - 1.0
    # ordered[0] = 0 and excess[0] = -1, so the support has at least one entry.
    support = jnp.max(jnp.where(ordered - excess / count > 0, count, 1.0))
    theta = excess[support.astype(jnp.int32) - 1] / support
    w = jnp.maximum(v - theta, 0.0)
    return w / jnp.sum(w)


def moco(
    *,
    beta: float = 0.5,
    beta_sigma: float = 0.5,
    gamma: float = 0.1,
    gamma_sigma: float = 0.5,
    rho: float = 0.0,
    normalization: str = "none",
    simplex_step: str = "projection",
) -> Weighting:
    """MoCo, Fernando et al., "Mitigating Gradient Bias in Multi-objective Learning: A
    Provably Convergent Approach", ICLR 2023, Alg. 1.

    Stochastic gradients bias the min-norm (MGDA) direction; MoCo replaces them by tracked
    gradients and the min-norm weights by one projected-gradient step per update. At
    update `k = 1, 2, …`, with `β_k = β / k^{σ_β}` and `γ_k = γ / k^{σ_γ}`:

      y_t ← y_t − β_k (y_t − g_t)                      (tracking, y_t = 0 initially)
      λ ← Π_Δ(λ − γ_k (Y Yᵀ + ρ I) λ)                  (λ = 1/T initially)
      d = Σ_t λ_t y_t

    `Y Yᵀ` is the Gramian of the tracked rows. On a fixed batch the tracked gradients
    converge to the true ones (`Π_k (1 − β_k) → 0`), and λ then descends
    `λᵀ (G + ρI) λ` on the simplex, i.e. toward the MGDA weights.

    LibMTL ("implemented based on the authors' code") differs in two conventions, both
    available here: it tracks `L_t g_t / ‖g_t‖` instead of `g_t` (`normalization="loss"`)
    and maps the step with a softmax, `λ ← softmax(λ − γ_k (Y Yᵀ + ρI) λ)`, instead of
    the projection (`simplex_step="softmax"`). The defaults follow the paper, with
    LibMTL's step sizes. Use parameter gradients (`rep_grad=False`, the only mode LibMTL
    accepts): tracking pairs coordinates across batches, and representation-gradient
    coordinates belong to different examples in every batch.

    Args:
      beta: tracking rate `β ∈ (0, 1]` (LibMTL: 0.5).
      beta_sigma: decay exponent `σ_β ≥ 0` of `β_k` (LibMTL: 0.5).
      gamma: weight step size `γ > 0` (LibMTL: 0.1).
      gamma_sigma: decay exponent `σ_γ ≥ 0` of `γ_k` (LibMTL: 0.5).
      rho: `ρ ≥ 0`, the ℓ2 regularisation of λ (LibMTL: 0).
      normalization: `"none"` tracks `g_t` (paper); `"loss"` tracks `L_t g_t / ‖g_t‖`
        (LibMTL; a zero gradient stays zero). `"loss"` needs the task losses.
      simplex_step: `"projection"` (paper) or `"softmax"` (LibMTL).

    Metrics: `weights` [T], the λ of this update.

    Examples:
      >>> import jax.numpy as jnp
      >>> from mtl_jax.weighting import aggregate, moco
      >>> J = jnp.array([[1.0, 0.0], [0.0, 2.0]])
      >>> direction, _, state = aggregate(moco(), J)
      >>> [round(x, 3) for x in direction.tolist()]  # from the tracked (EMA) gradients
      [0.259, 0.481]
    """
    if not _is_number(beta) or not 0.0 < beta <= 1.0:
        raise ValueError(f"moco: beta must be a number in (0, 1], got {beta!r}")
    if not _is_number(gamma) or not 0.0 < gamma < float("inf"):
        raise ValueError(f"moco: gamma must be a finite number > 0, got {gamma!r}")
    for name, value in (("beta_sigma", beta_sigma), ("gamma_sigma", gamma_sigma), ("rho", rho)):
        if not _is_number(value) or not 0.0 <= value < float("inf"):
            raise ValueError(f"moco: {name} must be a finite number ≥ 0, got {value!r}")
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"moco: normalization must be one of {list(NORMALIZATIONS)}, got {normalization!r}"
        )
    if simplex_step not in SIMPLEX_STEPS:
        raise ValueError(
            f"moco: simplex_step must be one of {list(SIMPLEX_STEPS)}, got {simplex_step!r}"
        )

    def init(task_names, row):
        num_tasks = len(task_names)
        tracked = jax.tree.map(lambda s: jnp.zeros((num_tasks, *s.shape), s.dtype), row)
        weights = jnp.full((num_tasks,), 1.0 / num_tasks, jnp.float32)
        return MoCoState(jnp.zeros((), jnp.int32), tracked, weights)

    def update(losses, state, *, key, gramian=None, rows=None):
        del key, gramian
        step = state.step + 1
        k = step.astype(jnp.float32)
        if normalization == "loss":
            if losses is None:
                raise ValueError('moco: normalization="loss" needs the task losses')
            squares = [
                jnp.sum(jnp.square(leaf.astype(jnp.float32)).reshape(leaf.shape[0], -1), axis=1)
                for leaf in jax.tree.leaves(rows)
            ]
            norms = jnp.sqrt(sum(squares))
            factor = jnp.where(norms > 0, losses / jnp.where(norms > 0, norms, 1.0), 0.0)
            rows = jax.tree.map(
                lambda leaf: (
                    leaf * factor.reshape((-1,) + (1,) * (leaf.ndim - 1)).astype(leaf.dtype)
                ),
                rows,
            )
        rate = beta / k**beta_sigma
        tracked = jax.tree.map(lambda y, g: y - rate.astype(y.dtype) * (y - g), state.tracked, rows)
        gram = gramian_of(tracked)
        num_tasks = gram.shape[0]
        step_size = gamma / k**gamma_sigma
        target = state.weights - step_size * (gram + rho * jnp.eye(num_tasks)) @ state.weights
        if simplex_step == "projection":
            weights = _project_simplex(target)
        else:
            weights = jax.nn.softmax(target)
        direction = combine(weights, tracked)
        return direction, MoCoState(step, tracked, weights), {"weights": weights}

    return Weighting(init=init, update=update, kind=JACOBIAN)
