"""`imtl_g`: the gradient-balance part of impartial multi-task learning (Liu et al., ICLR 2021)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax.row_math import reciprocal_where
from mtl_jax.weighting._base import GRAMIAN, Weighting
from mtl_jax.weighting._solvers import cosine_gramian

# Eigenvalues of the cosine matrix below this fraction of the largest are treated as zero
# (float32 cosines carry errors of about 1e-7 per entry).
RCOND = 1e-5


class IMTLGState(NamedTuple):
    """`imtl_g` keeps no state."""


def equal_projection_weights(
    gram: jax.Array, log_scale: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """IMTL-G weights from the Gramian, optionally for the gradients scaled by `e^{s_t}`.

    The conditions `d·u_i = d·u_j` (unit gradients `u_t`) with `d = Σ_t α_t g_t` read
    `Gα ∝ n` (`n_t = ‖g_t‖`); in cosine variables `β = N α` they are `Ĝβ ∝ 1`. We take
    the minimum-norm least-squares solution `β = Ĝ⁺ 1` (pseudo-inverse by `eigh`), which
    equals the paper's closed form (Eq. 9, up to the normalisation) whenever `Ĝ` is
    invertible; when the gradients are rank-deficient or there are more tasks than
    dimensions, `Σ_t β_t u_t` is the direction whose projections on the unit gradients
    are closest to equal (exact equality would force `d = 0`). Then `α = β / n` is
    normalised to `Σ α = 1`.

    With `log_scale = s` the conditions are applied to the scaled gradients `e^{s_t} g_t`
    (same unit vectors, norms `e^{s_t} n_t`), and the returned weights are those on the
    *original* gradients, `w_t = e^{s_t} α_t`.

    Degenerate cases: a zero gradient has no unit vector and gets weight 0. If `Σ β_t /
    n_t` vanishes (e.g. two opposite gradients, where `Ĝ⁺1 = 0`), we use `β = 1`, the
    sum of the unit gradients, which is the exact solution there (`d = 0`). If the sum
    is negative, Eq. 9's normalisation would flip `d` into an ascent direction for every
    task; we normalise by its absolute value instead (`Σ α = −1`).

    Args:
      gram: [T, T] PSD Gramian.
      log_scale: optional [T] log-scales `s`.

    Returns:
      `(weights [T], residual)` where `residual` is the spread `max_t p_t − min_t p_t`
      of the projections `p_t = d·u_t` relative to `max_t |p_t|` (0 when they are equal).
    """
    cos = cosine_gramian(gram)
    num_tasks = gram.shape[0]
    target = cos.active.astype(jnp.float32)
    eigenvalues, eigenvectors = jnp.linalg.eigh(cos.cosines)
    keep = eigenvalues > RCOND * jnp.max(jnp.abs(eigenvalues))
    inverse = reciprocal_where(eigenvalues, keep)
    beta = eigenvectors @ (inverse * (eigenvectors.T @ target))
    # α_t ∝ β_t / (e^{s_t} n_t) on the scaled gradients; w_t = e^{s_t} α_t ∝ β_t / n_t.
    scaled_norms = cos.norms if log_scale is None else cos.norms * jnp.exp(log_scale)
    safe_norms = jnp.where(cos.active, cos.norms, 1.0)
    safe_scaled = jnp.where(cos.active, scaled_norms, 1.0)

    def normaliser(b):
        terms = jnp.where(cos.active, b / safe_scaled, 0.0)
        return jnp.sum(terms), jnp.sum(jnp.abs(terms))

    total, magnitude = normaliser(beta)
    degenerate = ~(jnp.abs(total) > 1e-6 * magnitude)
    beta = jnp.where(degenerate, target, beta)
    total = jnp.where(degenerate, normaliser(target)[0], total)
    any_active = jnp.any(cos.active)
    safe_total = jnp.where(any_active, jnp.abs(total), 1.0)
    weights = jnp.where(cos.active, beta / safe_norms / safe_total, 0.0)
    weights = jnp.where(any_active, weights, 1.0 / num_tasks)
    # Projections d·u_t = (Ĝ N w)_t: all equal at an exact solution.
    projections = cos.cosines @ (weights * cos.norms)
    high = jnp.max(jnp.where(cos.active, projections, -jnp.inf))
    low = jnp.min(jnp.where(cos.active, projections, jnp.inf))
    peak = jnp.max(jnp.where(cos.active, jnp.abs(projections), 0.0))
    residual = jnp.where(peak > 0, (high - low) / jnp.where(peak > 0, peak, 1.0), 0.0)
    return weights, residual


def imtl_g() -> Weighting:
    """IMTL-G, Liu, Li, Kuang, Xue, Chen, Yang, Liao & Zhang, ICLR 2021, Eq. 9.

    The shared update `d = Σ_t α_t g_t` with `Σ_t α_t = 1` has equal projections on every
    unit task gradient, `d·u_i = d·u_j`, so no task is favoured by the shared parameters
    regardless of its gradient's scale. The paper (and LibMTL) solve the resulting linear
    system in closed form with the differences `g_1 − g_t` and `u_1 − u_t`; we solve the
    equivalent system from the Gramian (`equal_projection_weights`), which also defines
    the weights when the gradients are rank-deficient.

    Conventions that change numbers: weights sum to 1 (a convex-like combination, like
    `equal(reduction="mean")`); a zero gradient gets weight 0; see
    `equal_projection_weights` for the degenerate cases.

    Metrics: `solver_residual`, the relative spread of the projections `d·u_t` (0 when
    they are equal; positive when no equal-projection direction exists).

    Examples:
      >>> import jax.numpy as jnp
      >>> from mtl_jax.weighting import imtl_g
      >>> w = imtl_g()
      >>> gram = jnp.diag(jnp.array([1.0, 4.0]))
      >>> weights, _, _ = w.update(None, w.init(("a", "b")), key=None, gramian=gram)
      >>> [round(float(x), 4) for x in weights]  # d = (g_a + g_b / 2) / 1.5: equal projections
      [0.6667, 0.3333]
    """

    def init(task_names):
        del task_names
        return IMTLGState()

    def update(losses, state, *, key, gramian=None, rows=None):
        del losses, key, rows
        weights, residual = equal_projection_weights(gramian)
        return weights, state, {"solver_residual": residual}

    return Weighting(init=init, update=update, kind=GRAMIAN)
