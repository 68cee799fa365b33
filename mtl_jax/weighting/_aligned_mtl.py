"""`aligned_mtl`: independent component alignment (Senushkin et al., CVPR 2023)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mtl_jax.weighting._base import GRAMIAN, Weighting
from mtl_jax.weighting._dual_cone import check_num_tasks, check_pref_vector, preference_vector

# Preferences `p`: 1 (LibMTL) or 1/T (torchjd).
REDUCTIONS = ("sum", "mean")
# Which eigenvalue of G (squared singular value of J) sets the aligned scale (torchjd).
SCALE_MODES = ("min", "median", "rmse")


class AlignedMTLState(NamedTuple):
    """`aligned_mtl` keeps no state."""


def balance_transformation(
    gram: jax.Array, *, rank_tol: float | None = None, scale_mode: str = "min"
) -> tuple[jax.Array, jax.Array]:
    """The balance transformation `B` of Aligned-MTL, Alg. 1 lines 3–5, and the rank.

    With `G = V Λ Vᵀ` restricted to the `R` eigenvalues above `rank_tol · λ_max`,
    `B = √s · V Λ^{-1/2} Vᵀ` ([T, T], symmetric). The aligned gradients `B J` then satisfy
    `(BJ)(BJ)ᵀ = s · V Vᵀ`: all their nonzero singular values equal `√s` (condition number
    1). The scale `s` is, by `scale_mode` (torchjd's `AlignedMTL(scale_mode=...)`, read in
    its `_compute_balance_transformation`), of the kept eigenvalues: `"min"` the smallest
    `λ_R` (the paper's, LibMTL's and torchjd's default: the weakest principal component),
    `"median"` the median, the lower of the two middle ones when R is even (torch.median's
    convention), `"rmse"` the mean, so `√s` is the root mean square of the kept singular
    values of J.

    Args:
      gram: [T, T] Gramian. It is divided by its trace first (B does not change when G is
        scaled), so the eigendecomposition sees O(1) numbers at any gradient scale.
      rank_tol: eigenvalues at most `rank_tol · λ_max` count as zero. `None` means
        `T · ε_float32`, LibMTL's and torchjd's threshold (`max(M.shape) · eps`). Float32
        round-off in G and in `eigh` leaves spurious eigenvalues near `1e-7 · λ_max` on
        rank-deficient Gramians; raise `rank_tol` if gradients come from very large models.
      scale_mode: `"min"`, `"median"` or `"rmse"`, as above.

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
    if scale_mode == "min":
        target = jnp.min(jnp.where(keep, eigenvalues, jnp.inf))
    elif scale_mode == "median":
        # eigh sorts ascending, so the kept eigenvalues are the last R; their lower median.
        index = num_tasks - rank + jnp.maximum(rank - 1, 0) // 2
        target = eigenvalues[jnp.clip(index, 0, num_tasks - 1)]
    elif scale_mode == "rmse":
        target = jnp.sum(jnp.where(keep, eigenvalues, 0.0)) / jnp.maximum(rank, 1)
    else:
        raise ValueError(f"scale_mode must be one of {list(SCALE_MODES)}, got {scale_mode!r}")
    scale = jnp.where(keep, jnp.sqrt(target / jnp.where(keep, eigenvalues, 1.0)), 0.0)
    balance = (eigenvectors * scale) @ eigenvectors.T
    return jnp.where(rank > 0, balance, jnp.eye(num_tasks, dtype=jnp.float32)), rank


def aligned_mtl(
    *,
    reduction: str = "sum",
    rank_tol: float | None = None,
    pref_vector: Sequence[float] | None = None,
    scale_mode: str = "min",
) -> Weighting:
    """Aligned-MTL, Senushkin et al., CVPR 2023, Alg. 1 (independent component alignment).

    The task gradients' principal components are rescaled so that the aligned gradients
    `B J` have condition number 1 (`balance_transformation`), and the update combines them
    with the task preferences `p`: `d = (BJ)ᵀ p`, i.e. weights `w = B p`. When G has full
    rank the aligned gradients are orthogonal with equal norms `√λ_R`: no conflict and no
    dominance, at the magnitude of the weakest principal component.

    Conventions that change numbers: `"sum"` (`p = 1`) is LibMTL's (`alpha = B.sum(0)`);
    torchjd's AlignedMTL uses the mean (`p = 1/T`), T times smaller.
    Eigenvalues are kept above `rank_tol · λ_max` (LibMTL's `T · eps` by default), and
    the scale is the smallest kept one by default (`scale_mode="min"`: the paper's and
    LibMTL's only choice, torchjd's default). A zero Gramian gives `w = p`.

    Args:
      reduction: the preference `p`: `"sum"` (1, default) or `"mean"` (1/T).
      rank_tol: relative eigenvalue threshold of the numerical rank (see
        `balance_transformation`).
      pref_vector: the preference `p` itself, one non-negative number per task in
        sorted-name order, used as given, as torchjd's `AlignedMTL(pref_vector=...)`
        (`alpha = B @ pref_vector`): `d = (BJ)ᵀ p`, the `p`-weighted sum of the aligned
        gradients. `p = (1, …, 1)` is the default exactly. `None`: `reduction`, which is
        unused otherwise.
      scale_mode: which eigenvalue of G sets the aligned scale, `"min"` (default, the
        behaviour before this option), `"median"` or `"rmse"`, as torchjd's
        `AlignedMTL(scale_mode=...)` (see `balance_transformation`). LibMTL's `Aligned_MTL`
        has no such option and always uses the smallest.

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

    if scale_mode not in SCALE_MODES:
        raise ValueError(
            f"aligned_mtl: scale_mode must be one of {list(SCALE_MODES)}, got {scale_mode!r}"
        )
    pref_vector = check_pref_vector("aligned_mtl", pref_vector)

    def init(task_names):
        check_num_tasks("aligned_mtl", "pref_vector", pref_vector, len(task_names))
        return AlignedMTLState()

    def update(losses, state, *, key, gramian=None, rows=None):
        del losses, key, rows
        num_tasks = gramian.shape[0]
        check_num_tasks("aligned_mtl", "pref_vector", pref_vector, num_tasks)
        target = preference_vector(reduction, pref_vector, num_tasks)
        balance, rank = balance_transformation(gramian, rank_tol=rank_tol, scale_mode=scale_mode)
        weights = balance @ target
        return weights, state, {"rank": rank}

    return Weighting(init=init, update=update, kind=GRAMIAN)
