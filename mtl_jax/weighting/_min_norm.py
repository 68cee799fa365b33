"""Minimum-norm point of the convex hull of the task gradients, from their Gramian.

Solves `min_{w ∈ Δ} wᵀ G w` with the away-step Frank–Wolfe algorithm (Wolfe 1970;
Lacoste-Julien & Jaggi, NeurIPS 2015, Alg. 1). Plain Frank–Wolfe, as in Sener & Koltun's
Alg. 2, converges sublinearly and never removes a vertex from the support; away steps
converge linearly on this problem and drop vertices exactly, so the KKT conditions hold
to the tolerance. Everything runs inside `jit` (`lax.while_loop`), with exact line
search from the Gramian alone.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class MinNormResult(NamedTuple):
    """Solution `weights` [T] on the simplex, `iterations` run and the final `gap`.

    `gap = max(wᵀGw − min_t (Gw)_t, max_{t: w_t>0} (Gw)_t − wᵀGw)` relative to `max_t G_tt`:
    zero exactly at a KKT point.
    """

    weights: jax.Array
    iterations: jax.Array
    gap: jax.Array


def _gaps(gram, w):
    gw = gram @ w
    value = w @ gw
    fw_gap = value - jnp.min(gw)
    away_gap = jnp.max(jnp.where(w > 0, gw, -jnp.inf)) - value
    return gw, value, fw_gap, away_gap


def min_norm_simplex(gram: jax.Array, *, max_iters: int = 250, tol: float = 1e-5) -> MinNormResult:
    """Away-step Frank–Wolfe for `argmin_{w ∈ Δ} wᵀ G w`.

    Args:
      gram: [T, T] symmetric positive semi-definite Gramian.
      max_iters: iteration cap.
      tol: stop when the relative KKT gap (see `MinNormResult`) is at most `tol`.

    Returns:
      `MinNormResult`; finite for any finite PSD input, including zero and rank-deficient
      Gramians (the uniform weights are returned for G = 0).
    """
    num_tasks = gram.shape[0]
    gram = gram.astype(jnp.float32)
    # Scale invariance: the minimiser of wᵀGw does not change when G is scaled.
    scale = jnp.max(jnp.diagonal(gram))
    gram = jnp.where(scale > 0, gram / jnp.where(scale > 0, scale, 1.0), 0.0)
    eye = jnp.eye(num_tasks, dtype=jnp.float32)

    def cond(carry):
        w, i = carry
        _, _, fw_gap, away_gap = _gaps(gram, w)
        return (i < max_iters) & (jnp.maximum(fw_gap, away_gap) > tol)

    def body(carry):
        w, i = carry
        gw, _, fw_gap, away_gap = _gaps(gram, w)
        toward = jnp.argmin(gw)
        away = jnp.argmax(jnp.where(w > 0, gw, -jnp.inf))
        use_fw = fw_gap >= away_gap
        w_away = w[away]
        direction = jnp.where(use_fw, eye[toward] - w, w - eye[away])
        max_step = jnp.where(use_fw, 1.0, jnp.where(w_away < 1.0, w_away / (1.0 - w_away), 0.0))
        slope = direction @ gw
        curvature = direction @ (gram @ direction)
        step = jnp.where(
            curvature > 0,
            jnp.clip(-slope / jnp.where(curvature > 0, curvature, 1.0), 0.0, max_step),
            jnp.where(slope < 0, max_step, 0.0),
        )
        w = w + step * direction
        # A full away step removes that vertex exactly.
        drop = ~use_fw & (step >= max_step)
        w = jnp.where(drop & (jnp.arange(num_tasks) == away), 0.0, jnp.maximum(w, 0.0))
        return w / jnp.sum(w), i + 1

    w0 = jnp.full((num_tasks,), 1.0 / num_tasks, jnp.float32)
    w, iterations = jax.lax.while_loop(cond, body, (w0, jnp.asarray(0, jnp.int32)))
    _, _, fw_gap, away_gap = _gaps(gram, w)
    return MinNormResult(w, iterations, jnp.maximum(fw_gap, away_gap))
