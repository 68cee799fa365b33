"""`dualproj`: the mean gradient projected onto the dual cone (GEM; torchjd's DualProj)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from mtl_jax.weighting._base import GRAMIAN, Weighting
from mtl_jax.weighting._dual_cone import (
    check_dual_cone_options,
    check_num_tasks,
    check_pref_vector,
    normalize_and_regularize,
    preference_vector,
    project_onto_dual_cone,
)


class DualProjState(NamedTuple):
    """`dualproj` keeps no state."""


def dualproj(
    *,
    reduction: str = "mean",
    pref_vector: Sequence[float] | None = None,
    norm_eps: float = 1e-4,
    reg_eps: float = 1e-4,
    tol: float = 1e-7,
    max_iters: int = 200,
) -> Weighting:
    """DualProj: Lopez-Paz & Ranzato, "Gradient Episodic Memory", NeurIPS 2017, Eq. 10–11.

    GEM projects a gradient onto the closest direction that increases no other loss,
    `min_x ½‖x − ḡ‖²` s.t. `g_t · x ≥ 0`, and solves it through its dual, a QP in T
    dimensions (Eq. 11). Here `ḡ = Jᵀp` is the preference-weighted gradient (the mean by
    default, as in torchjd's DualProj), and the projection is `Jᵀv` with
    `v = argmin_{v ≥ p} vᵀGv` (see `project_onto_dual_cone`), so the weights are `v`. The
    result conflicts with no task (`g_t · d ≥ 0`, up to the ridge below); when `ḡ` already
    conflicts with none (`Gp ≥ 0`), `w = p`.

    As in torchjd, the QP uses `G / trace(G) + reg_eps · I` (see `normalize_and_regularize`):
    the guarantee becomes `g_t · d ≥ −reg_eps · trace(G) · w_t`, and below
    `trace(G) ≤ norm_eps` the gradients count as zero and `w = p`.

    Args:
      reduction: the preference `p`: `"mean"` (`1/T`, torchjd) or `"sum"` (`1`). Unused
        when `pref_vector` is given.
      pref_vector: the preference `p` itself, one non-negative number per task in
        sorted-name order, used as given (not normalised), as torchjd's
        `DualProj(pref_vector=...)` (`DualProjWeighting`: `u = pref_vector`, then projected):
        the projected vector is `ḡ = Σ_t p_t g_t`, and `p = (1/T, …, 1/T)` is the default
        exactly. `None`: `reduction`.
      norm_eps: torchjd's `norm_eps` (1e-4); `0` makes the method exactly scale invariant.
      reg_eps: torchjd's `reg_eps` (1e-4); must be positive.
      tol: dual-feasibility tolerance of the active-set solver.
      max_iters: iteration cap of the solver.

    Metrics: `solver_iterations` and `solver_residual` (KKT residual) every step.

    Examples:
      >>> import jax.numpy as jnp
      >>> from mtl_jax.weighting import aggregate, dualproj
      >>> J = jnp.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
      >>> direction, _, _ = aggregate(dualproj(), J)
      >>> [round(x, 4) for x in direction.tolist()]  # torchjd's DualProj gives the same
      [0.5563, 1.1109, 1.1109]
    """
    check_dual_cone_options(
        "dualproj",
        reduction=reduction,
        norm_eps=norm_eps,
        reg_eps=reg_eps,
        tol=tol,
        max_iters=max_iters,
    )

    pref_vector = check_pref_vector("dualproj", pref_vector)

    def init(task_names):
        check_num_tasks("dualproj", "pref_vector", pref_vector, len(task_names))
        return DualProjState()

    def update(losses, state, *, key, gramian=None, rows=None):
        del losses, key, rows
        num_tasks = gramian.shape[0]
        check_num_tasks("dualproj", "pref_vector", pref_vector, num_tasks)
        target = preference_vector(reduction, pref_vector, num_tasks)
        gram = normalize_and_regularize(gramian, norm_eps=norm_eps, reg_eps=reg_eps)
        result = project_onto_dual_cone(gram, target, tol=tol, max_iters=max_iters)
        metrics = {"solver_iterations": result.iterations, "solver_residual": result.residual}
        return result.weights, state, metrics

    return Weighting(init=init, update=update, kind=GRAMIAN)
