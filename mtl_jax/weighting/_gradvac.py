"""`gradvac`: gradient vaccine (Wang, Tsvetkov, Firat & Cao, ICLR 2021)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax.weighting._base import GRAMIAN, Weighting


class GradVacState(NamedTuple):
    """EMA cosine targets `φ̂` [T, T] and the PRNG key of the task orders."""

    targets: jax.Array
    key: jax.Array


def _safe_div(num, den):
    return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)


def gradvac(*, beta: float = 0.5, seed: int = 0) -> Weighting:
    """Gradient Vaccine, Wang et al., ICLR 2021, Alg. 1 (whole-model, LibMTL group_type=0).

    For each task i, the other tasks j are visited in a random order; when the cosine
    `φ_ij` between the current surgered gradient `g'_i` and `g_j` is below the EMA target
    `φ̂_ij`, `g'_i` gains `a · g_j` with
    `a = ‖g'_i‖ (φ̂_ij √(1−φ_ij²) − φ_ij √(1−φ̂_ij²)) / (‖g_j‖ √(1−φ̂_ij²))` (Eq. 4), which
    sets the cosine to exactly `φ̂_ij`; then `φ̂_ij ← (1−β) φ̂_ij + β φ_ij` (Eq. 5). The
    update is `Σ_i g'_i`. Every `g'_i` stays a combination `Σ_k A_ik g_k` of the task
    gradients, so the whole algorithm runs on the Gramian: `‖g'_i‖² = A_i G A_iᵀ`,
    `g'_i · g_j = (A_i G)_j`, and the weights are the column sums of `A`.

    Conventions (as LibMTL): targets start at 0; the EMA moves after every visited pair
    whether or not it was corrected. The paper's per-layer variants (separate targets per
    parameter block) are not implemented: this is the whole-model variant.

    Args:
      beta: EMA rate of the targets (paper and LibMTL: 0.5).
      seed: seed of the PRNG key kept in the state for the visiting orders.
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"gradvac: beta must be in [0, 1], got {beta}")

    def init(task_names):
        num_tasks = len(task_names)
        return GradVacState(
            jnp.zeros((num_tasks, num_tasks), jnp.float32),
            jax.random.key_data(jax.random.PRNGKey(seed)),
        )

    def update(losses, state, gramian):
        del losses
        num_tasks = gramian.shape[0]
        # Scale-free: cosines and the coefficients a are invariant to a common scale of G.
        gram = _safe_div(gramian, jnp.max(jnp.abs(jnp.diagonal(gramian))))
        norms = jnp.sqrt(jnp.maximum(jnp.diagonal(gram), 0.0))
        key, order_key = jax.random.split(jax.random.wrap_key_data(state.key))
        orders = jax.vmap(lambda k: jax.random.permutation(k, num_tasks))(
            jax.random.split(order_key, num_tasks)
        )

        def visit(carry, pair):
            coeffs, targets = carry
            i, j = pair
            row = coeffs[i]
            surgered_norm = jnp.sqrt(jnp.maximum(row @ gram @ row, 0.0))
            cosine = _safe_div((row @ gram)[j], surgered_norm * norms[j])
            target = targets[i, j]
            correct = (i != j) & (cosine < target)
            root_target = jnp.sqrt(jnp.maximum(1.0 - target**2, 0.0))
            root_cos = jnp.sqrt(jnp.maximum(1.0 - cosine**2, 0.0))
            amount = _safe_div(
                surgered_norm * (target * root_cos - cosine * root_target), norms[j] * root_target
            )
            coeffs = coeffs.at[i, j].add(jnp.where(correct, amount, 0.0))
            moved = (1.0 - beta) * target + beta * cosine
            targets = targets.at[i, j].set(jnp.where(i != j, moved, target))
            return (coeffs, targets), None

        pairs = (
            jnp.repeat(jnp.arange(num_tasks), num_tasks),
            orders.reshape(-1),
        )
        (coeffs, targets), _ = jax.lax.scan(
            visit, (jnp.eye(num_tasks, dtype=jnp.float32), state.targets), pairs
        )
        weights = jnp.sum(coeffs, axis=0)
        return weights, GradVacState(targets, jax.random.key_data(key)), {}

    return Weighting(init=init, update=update, kind=GRAMIAN)
