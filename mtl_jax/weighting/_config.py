"""`config`: conflict-free inverse gradients (ConFIG; Liu, Chu & Thuerey, 2024)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax.numpy as jnp

from mtl_jax.row_math import reciprocal_where
from mtl_jax.weighting._base import GRAMIAN, Weighting
from mtl_jax.weighting._dual_cone import check_num_tasks, check_pref_vector, preference_vector


class ConFIGState(NamedTuple):
    """`config` keeps no state."""


def config(*, rank_tol: float = 1e-5, pref_vector: Sequence[float] | None = None) -> Weighting:
    """ConFIG, Liu, Chu & Thuerey, 2024 (arXiv 2408.11104), Eq. 2: equal cosine to every task.

    From "ConFIG: Towards Conflict-free Training of Physics Informed Neural Networks".

    With unit task gradients `u_t = g_t / ‖g_t‖` stacked in `U`, the direction is
    `ĝ = normalise(U⁺ 1)` — the minimum-norm `x` with `u_t · x = 1` for every t, so it makes
    the same positive cosine with every task gradient — and the update is
    `d = (Σ_t g_t · ĝ) ĝ`. `U⁺ 1 = Uᵀ Ĝ⁺ 1` lies in the row span, with `Ĝ = U Uᵀ` the
    unit-row Gramian, so everything follows from G: with `a = Ĝ⁺ 1` and `c_t = a_t/‖g_t‖`
    (so `Jᵀc = U⁺ 1`), the weights are `w = c · (1ᵀGc) / (cᵀGc)`.

    Conventions that change numbers: the pseudo-inverse keeps the eigenvalues of `Ĝ` above
    `rank_tol · λ_max`. torch's `pinv` and `lstsq` (torchjd, the authors' code) cut the
    singular values of `U` at `max(T, P) · eps`, a threshold that grows with the number of
    parameters P, which a Gramian does not know; `rank_tol = (max(T, P) · 1.19e-7)²`
    reproduces it. The default 1e-5 (singular values below ~0.3% of the largest) matches P
    ≈ 2.6e4 and stays clear of float32 round-off in G (~1e-7 · λ_max). On banks with full
    rank, `cos(d, g_t)` is the same positive number for every task; when `Ĝ` is
    rank-deficient, `ĝ` solves the equal-cosine system in the least-squares sense. Zero
    gradients get zero weight and are left out of the cosine conditions; if `U⁺ 1 = 0`
    (e.g. two opposite gradients), `d = 0`.

    Args:
      rank_tol: relative eigenvalue threshold of the pseudo-inverse of `Ĝ`.
      pref_vector: `p`, one non-negative number per task in sorted-name order, replacing the
        `1` on the right of the cosine system, as torchjd's `ConFIG(pref_vector=...)`
        (`best_direction = pinv(units) @ weights`, default all ones): `ĝ = normalise(U⁺ p)`,
        `a = Ĝ⁺ p`, so `u_t · ĝ ∝ p_t` (on full rank) and the length is still
        `Σ_t g_t · ĝ`. Only the direction of `p` matters (it is normalised away).
        `None`: `p = 1`.

    Metrics: `rank`, the numerical rank of `Ĝ`, every step.

    Examples:
      >>> import jax.numpy as jnp
      >>> from mtl_jax.weighting import aggregate, config
      >>> J = jnp.array([[1.0, 0.0], [0.0, 2.0]])
      >>> direction, _, _ = aggregate(config(), J)
      >>> [round(x, 4) for x in direction.tolist()]  # 45° to both rows
      [1.5, 1.5]
    """
    if not 0 <= rank_tol < 1:
        raise ValueError(f"config: rank_tol must be in [0, 1), got {rank_tol!r}")
    pref_vector = check_pref_vector("config", pref_vector)

    def init(task_names):
        check_num_tasks("config", "pref_vector", pref_vector, len(task_names))
        return ConFIGState()

    def update(losses, state, *, key, gramian=None, rows=None):
        del losses, key, rows
        check_num_tasks("config", "pref_vector", pref_vector, gramian.shape[0])
        gram = gramian.astype(jnp.float32)
        norms = jnp.sqrt(jnp.maximum(jnp.diagonal(gram), 0.0))
        nonzero = norms > 0
        inverse_norms = reciprocal_where(norms, nonzero)
        # Dividing in two steps keeps G_ij / (‖g_i‖ ‖g_j‖) in range for norms near 1e±19.
        unit_gram = gram * inverse_norms[:, None] * inverse_norms[None, :]
        eigenvalues, eigenvectors = jnp.linalg.eigh(unit_gram)
        keep = eigenvalues > rank_tol * jnp.max(eigenvalues)
        inverse_eigenvalues = reciprocal_where(eigenvalues, keep)
        # a = Ĝ⁺ p (p = 1 by default); zero rows of Ĝ give exact zeros in its null space
        # only up to round-off.
        if pref_vector is None:  # Vᵀ1 as a sum, the numbers from before the option
            projected = jnp.sum(eigenvectors, axis=0)
        else:
            projected = eigenvectors.T @ preference_vector("sum", pref_vector, gram.shape[0])
        a = eigenvectors @ (inverse_eigenvalues * projected)
        a = jnp.where(nonzero, a, 0.0)
        unit_gram_a = unit_gram @ a
        # In terms of c = a / ‖g‖: 1ᵀGc = Σ_t ‖g_t‖ (Ĝa)_t and cᵀGc = aᵀĜa = ‖U⁺ 1‖².
        length_numerator = jnp.sum(norms * unit_gram_a)
        squared_norm = a @ unit_gram_a
        usable = squared_norm > 0
        ratio = jnp.where(usable, length_numerator / jnp.where(usable, squared_norm, 1.0), 0.0)
        weights = a * inverse_norms * ratio
        return weights, state, {"rank": jnp.sum(keep).astype(jnp.int32)}

    return Weighting(init=init, update=update, kind=GRAMIAN)
