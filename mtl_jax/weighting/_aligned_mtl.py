"""`aligned_mtl`: independent component alignment (Senushkin et al., CVPR 2023)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mtl_jax.weighting._base import GRAMIAN, Weighting

# Preferences `p`: 1 (LibMTL) or 1/T (torchjd).
REDUCTIONS = ("sum", "mean")


class AlignedMTLState(NamedTuple):
    """`aligned_mtl` keeps no state."""


def balance_transformation(
    gram: jax.Array, *, rank_tol: float | None = None
) -> tuple[jax.Array, jax.Array]:
    """The balance transformation `B` of Aligned-MTL, Alg. 1 lines 3–5, and the rank.

    With `G = V Λ Vᵀ` restricted to the `R` eigenvalues above `rank_tol · λ_max`,
    `B = √λ_R · V Λ^{-1/2} Vᵀ` ([T, T], symmetric), where `λ_R` is the smallest kept
    eigenvalue. The aligned gradients `B J` then satisfy `(BJ)(BJ)ᵀ = λ_R · V Vᵀ`: all their
    nonzero singular values equal `√λ_R` (condition number 1), and their scale is that of
    the weakest principal component of the task gradients.

    Args:
      gram: [T, T] Gramian. It is divided by its trace first (B does not change when G is
        scaled), so the eigendecomposition sees O(1) numbers at any gradient scale.
      rank_tol: eigenvalues at most `rank_tol · λ_max` count as zero. `None` means
        `T · ε_float32`, LibMTL's and torchjd's threshold (`max(M.shape) · eps`). Float32
        round-off in G and in `eigh` leaves spurious eigenvalues near `1e-7 · λ_max` on
        rank-deficient Gramians; raise `rank_tol` if gradients come from very large models.

    Returns:
      `(B, rank)`; `B = I` and `rank = 0` when G is zero (torchjd's convention).
    """
    num_tasks = gram.shape[0]
    if rank_tol is None:
        rank_tol = num_tasks * float(np.finfo(np.float32).eps)
    gram = gram.astype(jnp.float32)
    trace = jnp.trace(gram)
    gram = jnp.where(trace > 0, gram / jnp.where(trace > 0, trace, 1.0), 0.0)
    eigenvalues, eigenvectors = jnp.linalg.eigh(gram)
    keep = eigenvalues > rank_tol * jnp.max(eigenvalues)
    rank = jnp.sum(keep).astype(jnp.int32)
    smallest = jnp.min(jnp.where(keep, eigenvalues, jnp.inf))
    scale = jnp.where(keep, jnp.sqrt(smallest / jnp.where(keep, eigenvalues, 1.0)), 0.0)
    balance = (eigenvectors * scale) @ eigenvectors.T
    return jnp.where(rank > 0, balance, jnp.eye(num_tasks, dtype=jnp.float32)), rank


def aligned_mtl(*, reduction: str = "sum", rank_tol: float | None = None) -> Weighting:
    """Aligned-MTL, Senushkin et al., CVPR 2023, Alg. 1 (independent component alignment).

    The task gradients' principal components are rescaled so that the aligned gradients
    `B J` have condition number 1 (`balance_transformation`), and the update combines them
    with the task preferences `p`: `d = (BJ)ᵀ p`, i.e. weights `w = B p`. When G has full
    rank the aligned gradients are orthogonal with equal norms `√λ_R`: no conflict and no
    dominance, at the magnitude of the weakest principal component.

    Conventions that change numbers: `"sum"` (`p = 1`) is LibMTL's (`alpha = B.sum(0)`);
    torchjd's AlignedMTL uses the mean (`p = 1/T`), T times smaller.
    Eigenvalues are kept above `rank_tol · λ_max` (LibMTL's `T · eps` by default), and
    the scale is the smallest kept one (the paper's and LibMTL's choice). A zero Gramian
    gives `w = p`.

    Args:
      reduction: the preference `p`: `"sum"` (1, default) or `"mean"` (1/T).
      rank_tol: relative eigenvalue threshold of the numerical rank (see
        `balance_transformation`).

    Metrics: `rank`, the numerical rank of G, every step.

    Examples:
      >>> import jax.numpy as jnp
      >>> from mtl_jax.weighting import aggregate, aligned_mtl
      >>> J = jnp.array([[3.0, 0.0], [0.0, 1.0]])  # orthogonal rows: B = diag(1/3, 1)
      >>> direction, weights, _ = aggregate(aligned_mtl(), J)
      >>> [round(x, 4) for x in weights.tolist()]
      [0.3333, 1.0]
      >>> [round(x, 4) for x in direction.tolist()]  # both rows aligned to length 1
      [1.0, 1.0]
    """
    if reduction not in REDUCTIONS:
        raise ValueError(
            f"aligned_mtl: reduction must be one of {list(REDUCTIONS)}, got {reduction!r}"
        )
    if rank_tol is not None and not 0 <= rank_tol < 1:
        raise ValueError(f"aligned_mtl: rank_tol must be in [0, 1) or None, got {rank_tol!r}")

    def init(task_names):
        del task_names
        return AlignedMTLState()

    def update(losses, state, *, key, gramian=None, rows=None):
        del losses, key, rows
        num_tasks = gramian.shape[0]
        preference = 1.0 if reduction == "sum" else 1.0 / num_tasks
        balance, rank = balance_transformation(gramian, rank_tol=rank_tol)
        weights = balance @ jnp.full((num_tasks,), preference, jnp.float32)
        return weights, state, {"rank": rank}

    return Weighting(init=init, update=update, kind=GRAMIAN)
