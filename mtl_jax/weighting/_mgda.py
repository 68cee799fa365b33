"""`mgda`: the multiple-gradient descent algorithm (Sener & Koltun, NeurIPS 2018)."""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from mtl_jax.row_math import reciprocal_where
from mtl_jax.weighting._base import GRAMIAN, Weighting
from mtl_jax.weighting._min_norm import min_norm_simplex

NORMALIZATIONS = ("none", "l2", "loss", "loss+")
APPLY_TO = ("raw", "normalized")


class MGDAState(NamedTuple):
    """`mgda` keeps no state."""


def mgda(
    *,
    normalization: str = "loss+",
    apply_to: str = "raw",
    max_iters: int = 250,
    tol: float = 1e-5,
) -> Weighting:
    """MGDA, Sener & Koltun, NeurIPS 2018, Alg. 2 (Désidéri 2012): the min-norm direction.

    Weights `w = argmin_{w ∈ Δ} ‖Σ_t w_t ĝ_t‖²` over the simplex, where `ĝ_t = g_t / n_t`
    are the gradients divided by the normaliser `n_t`. The update combines either the raw
    gradients, `Σ_t w_t g_t` (`apply_to="raw"`, the default: the official Sener & Koltun
    code scales the raw task losses by `w`), or the normalised ones, `Σ_t w_t ĝ_t`
    (`apply_to="normalized"`: LibMTL's `MGDA.backward` in parameter mode, which replaces
    the gradients by the normalised ones before combining them; its `rep_grad` path
    combines the raw representation gradients). The returned weights are the
    coefficients of the raw gradients in either case (`w_t / n_t` for `"normalized"`).
    With `rep_grad=True` in the trainer, `g_t` are representation gradients (MGDA-UB).
    At the solution the KKT conditions hold: `(Ĝw)_t = wᵀĜw` where `w_t > 0` and
    `(Ĝw)_t ≥ wᵀĜw` elsewhere, so with `normalization="none"`, `g_t · d ≥ ‖d‖²`: the
    direction does not increase any task loss to first order.

    Args:
      normalization: `n_t` — `"none"` (1), `"l2"` (`‖g_t‖`), `"loss"` (`L_t`) or
        `"loss+"` (`L_t ‖g_t‖`) (LibMTL's `mgda_gn`). The default `"loss+"` is the
        reference code's MultiMNIST setting; LibMTL defaults to `"none"`, which is
        scale-sensitive: the min-norm point collapses onto a task whose gradient is much
        smaller than the others (on our MultiMNIST, the boundary task's gradient is ~80×
        smaller than the digits' and `"none"` gives it all the weight). A zero normaliser
        drops the task's gradient from the min-norm problem instead of dividing by zero.
      apply_to: `"raw"` (official code) or `"normalized"` (LibMTL, parameter mode): which
        gradients the min-norm weights combine. They differ unless `normalization="none"`.
      max_iters: cap of the Frank–Wolfe solver (LibMTL: 250).
      tol: relative KKT-gap tolerance of the solver.

    Metrics: `solver_iterations` and `solver_gap` (relative KKT gap) every step.
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"mgda: normalization must be one of {list(NORMALIZATIONS)}, got {normalization!r}"
        )
    if apply_to not in APPLY_TO:
        raise ValueError(f"mgda: apply_to must be one of {list(APPLY_TO)}, got {apply_to!r}")

    def init(task_names):
        del task_names
        return MGDAState()

    def update(losses, state, *, key, gramian=None, rows=None):
        del key, rows
        norms = jnp.sqrt(jnp.maximum(jnp.diagonal(gramian), 0.0))
        if normalization == "none":
            normalizer = jnp.ones_like(norms)
        elif normalization == "l2":
            normalizer = norms
        elif losses is None:
            raise ValueError(f"mgda: normalization {normalization!r} needs the task losses")
        elif normalization == "loss":
            normalizer = losses
        else:
            normalizer = losses * norms
        inverse = reciprocal_where(normalizer, normalizer > 0)
        result = min_norm_simplex(
            gramian * inverse[:, None] * inverse[None, :], max_iters=max_iters, tol=tol
        )
        metrics = {"solver_iterations": result.iterations, "solver_gap": result.gap}
        # Σ_t w_t ĝ_t = Σ_t (w_t / n_t) g_t: the raw-gradient coefficients of "normalized".
        weights = result.weights * inverse if apply_to == "normalized" else result.weights
        return weights, state, metrics

    return Weighting(init=init, update=update, kind=GRAMIAN)
