"""`upgrad`: unconflicting projection of gradients (Quinton & Rey, 2024)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax.numpy as jnp

from mtl_jax.row_math import reciprocal_where
from mtl_jax.weighting._base import GRAMIAN, Weighting
from mtl_jax.weighting._dual_cone import (
    check_dual_cone_options,
    check_num_tasks,
    check_pref_vector,
    normalize_and_regularize,
    preference_vector,
    project_onto_dual_cone,
)


class UPGradState(NamedTuple):
    """`upgrad` keeps no state."""


def upgrad(
    *,
    reduction: str = "mean",
    pref_vector: Sequence[float] | None = None,
    normalize_rows: bool = False,
    norm_eps: float = 1e-4,
    reg_eps: float = 1e-4,
    tol: float = 1e-7,
    max_iters: int = 200,
) -> Weighting:
    """UPGrad, Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization" (2024).

    Each task gradient, scaled by its preference `p_t`, is projected onto the dual cone
    `{x : J x ≥ 0}` of all task gradients (Eq. 3), and the projections are summed:
    `d = Σ_t π(p_t g_t)`. By Prop. 1 each projection is `Jᵀ v⁽ᵗ⁾` with
    `v⁽ᵗ⁾ = argmin_{v ≥ p_t e_t} vᵀGv`, so the weights are `w = Σ_t v⁽ᵗ⁾`, from the Gramian
    alone (T quadratic programs in T dimensions, solved together; see
    `project_onto_dual_cone`). The result conflicts with no task: `g_t · d ≥ 0` for all t,
    up to the ridge below; when no pair of gradients conflicts (`G ≥ 0` entrywise) every
    projection is the identity and `w = p` (the mean gradient by default).

    As in torchjd, the QPs use `G / trace(G) + reg_eps · I` (see
    `normalize_and_regularize`): the ridge relaxes the guarantee to
    `g_t · d ≥ −reg_eps · trace(G) · w_t`, and below `trace(G) ≤ norm_eps` the gradients
    are treated as zero and `w = p` (an absolute threshold, so tiny gradients are not
    projected; `norm_eps=0` makes the method exactly scale invariant).

    Args:
      reduction: the preference `p`: `"mean"` (`1/T`, the paper's and torchjd's default) or
        `"sum"` (`1`, T times larger steps). Unused when `pref_vector` is given.
      pref_vector: the preference `p` itself, one non-negative number per task in
        sorted-name order, used as given (not normalised), as torchjd's
        `UPGrad(pref_vector=...)` (`UPGradWeighting`: `U = diag(pref_vector)`, the rows of
        `U` projected and summed; its default is the mean). The direction is then the
        `p`-weighted sum of the projected task gradients, `Σ_t p_t π(g_t)` (π is positively
        homogeneous), and `p = (1/T, …, 1/T)` is the default exactly. `None`: `reduction`.
      normalize_rows: scale every task gradient to unit norm before the projection (asked
        for by torchjd users; torchjd's `UPGrad` has no such option): normalising the rows
        of J is, on the Gramian, `Ĝ_ij = G_ij / √(G_ii G_jj) = G_ij / (‖g_i‖ ‖g_j‖)` (the
        cosines; rows with `G_tt = 0` stay zero), and the QPs use `Ĝ`. The weights are
        returned for the raw gradients, `w_t = ŵ_t / ‖g_t‖` (0 for a zero gradient), so
        the direction is `Σ_t ŵ_t g_t / ‖g_t‖`. It no longer depends on the scale of any
        single task's loss, and its norm is that of a combination of unit vectors, not of
        the gradients. `trace(Ĝ)` is the number of nonzero rows, so `norm_eps` no longer
        treats small gradients as zero (the projection is skipped only when every row is
        zero, and then `w = 0`).
        `pref_vector` applies to the unit rows: `d = Σ_t p_t π(g_t / ‖g_t‖)`.
      norm_eps: torchjd's `norm_eps` (1e-4).
      reg_eps: torchjd's `reg_eps` (1e-4); must be positive.
      tol: dual-feasibility tolerance of the active-set solver (see
        `project_onto_dual_cone`).
      max_iters: iteration cap of the solver, per projection.

    Metrics: `solver_iterations` (the most any of the T projections used) and
    `solver_residual` (their largest KKT residual) every step.

    Examples:
      >>> import jax.numpy as jnp
      >>> from mtl_jax.weighting import aggregate, upgrad
      >>> J = jnp.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
      >>> direction, _, _ = aggregate(upgrad(), J)
      >>> [round(x, 4) for x in direction.tolist()]  # torchjd's UPGrad gives the same
      [0.2929, 1.9004, 1.9004]
    """
    check_dual_cone_options(
        "upgrad",
        reduction=reduction,
        norm_eps=norm_eps,
        reg_eps=reg_eps,
        tol=tol,
        max_iters=max_iters,
    )

    pref_vector = check_pref_vector("upgrad", pref_vector)
    if not isinstance(normalize_rows, bool):
        raise ValueError(f"upgrad: normalize_rows must be a bool, got {normalize_rows!r}")

    def init(task_names):
        check_num_tasks("upgrad", "pref_vector", pref_vector, len(task_names))
        return UPGradState()

    def update(losses, state, *, key, gramian=None, rows=None):
        del losses, key, rows
        num_tasks = gramian.shape[0]
        check_num_tasks("upgrad", "pref_vector", pref_vector, num_tasks)
        targets = jnp.diag(preference_vector(reduction, pref_vector, num_tasks))
        if normalize_rows:
            gramian = gramian.astype(jnp.float32)
            norms = jnp.sqrt(jnp.maximum(jnp.diagonal(gramian), 0.0))
            nonzero = norms > 0
            inverse_norms = reciprocal_where(norms, nonzero)
            # Two multiplications keep G_ij / (‖g_i‖ ‖g_j‖) in range for norms near 1e±19.
            gramian = gramian * inverse_norms[:, None] * inverse_norms[None, :]
        gram = normalize_and_regularize(gramian, norm_eps=norm_eps, reg_eps=reg_eps)
        result = project_onto_dual_cone(gram, targets, tol=tol, max_iters=max_iters)
        metrics = {"solver_iterations": result.iterations, "solver_residual": result.residual}
        weights = jnp.sum(result.weights, axis=0)
        if normalize_rows:
            weights = weights * inverse_norms
        return weights, state, metrics

    return Weighting(init=init, update=update, kind=GRAMIAN)
