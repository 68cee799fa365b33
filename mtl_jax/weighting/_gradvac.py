"""`gradvac`: gradient vaccine (Wang, Tsvetkov, Firat & Cao, ICLR 2021)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax import param_blocks
from mtl_jax.weighting._base import GRAMIAN, Weighting


class GradVacState(NamedTuple):
    """EMA cosine targets `φ̂` ([T, T], or [B, T, T] per parameter block)."""

    targets: jax.Array


def _safe_div(num, den):
    return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)


def _vaccinate(gramian, targets, orders, beta):
    """One block's Alg. 1 on its Gramian: (coefficients A [T, T], new targets [T, T])."""
    num_tasks = gramian.shape[0]
    # Scale-free: cosines and the coefficients a are invariant to a common scale of G.
    gram = _safe_div(gramian, jnp.max(jnp.abs(jnp.diagonal(gramian))))
    norms = jnp.sqrt(jnp.maximum(jnp.diagonal(gram), 0.0))

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

    pairs = (jnp.repeat(jnp.arange(num_tasks), num_tasks), orders.reshape(-1))
    (coeffs, targets), _ = jax.lax.scan(
        visit, (jnp.eye(num_tasks, dtype=jnp.float32), targets), pairs
    )
    return coeffs, targets


def gradvac(*, beta: float = 0.5, blocks: str = "whole") -> Weighting:
    """Gradient Vaccine, Wang et al., ICLR 2021, Alg. 1.

    For each task i, the other tasks j are visited in a random order; when the cosine
    `φ_ij` between the current surgered gradient `g'_i` and `g_j` is below the EMA target
    `φ̂_ij`, `g'_i` gains `a · g_j` with
    `a = ‖g'_i‖ (φ̂_ij √(1−φ_ij²) − φ_ij √(1−φ̂_ij²)) / (‖g_j‖ √(1−φ̂_ij²))` (Eq. 4), which
    sets the cosine to exactly `φ̂_ij`; then `φ̂_ij ← (1−β) φ̂_ij + β φ_ij` (Eq. 5). The
    update is `Σ_i g'_i`. Every `g'_i` stays a combination `Σ_k A_ik g_k` of the task
    gradients, so the whole algorithm runs on the Gramian: `‖g'_i‖² = A_i G A_iᵀ`,
    `g'_i · g_j = (A_i G)_j`, and the weights are the column sums of `A`.

    Layer-wise variants (the paper also vaccinates per layer and per parameter matrix;
    LibMTL's `group_type`): with `blocks="layer"` or `"tensor"` (`mtl_jax.param_blocks`) the
    algorithm runs on each block's Gramian with that block's own targets [B, T, T], the
    same task orders in every block (as LibMTL), and returns per-block weights [B, T]:
    block b of the update is `Σ_i g'_i` restricted to block b. Parameter mode only.

    Conventions (as LibMTL): targets start at 0; the EMA moves after every visited pair
    whether or not it was corrected. The visiting orders are drawn from the step key that
    `update` receives (derived from the run's seed and the step).

    Args:
      beta: EMA rate of the targets (LibMTL's default: 0.5).
      blocks: `"whole"` (default, LibMTL `group_type=0`), `"layer"` (1) or `"tensor"` (2).
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"gradvac: beta must be in [0, 1], got {beta}")
    if blocks not in ("whole", "layer", "tensor"):
        raise ValueError(f"gradvac: blocks must be 'whole', 'layer' or 'tensor', got {blocks!r}")
    blocked = blocks != "whole"

    def init(task_names, row=None):
        num_tasks = len(task_names)
        shape = (num_tasks, num_tasks)
        if blocked:
            shape = (param_blocks.count(row, blocks), *shape)
        return GradVacState(jnp.zeros(shape, jnp.float32))

    def update(losses, state, *, key, gramian=None, rows=None):
        del losses, rows
        num_tasks = gramian.shape[-1]
        orders = jax.vmap(lambda k: jax.random.permutation(k, num_tasks))(
            jax.random.split(key, num_tasks)
        )
        if not blocked:
            coeffs, targets = _vaccinate(gramian, state.targets, orders, beta)
            return jnp.sum(coeffs, axis=0), GradVacState(targets), {}
        coeffs, targets = jax.vmap(_vaccinate, in_axes=(0, 0, None, None))(
            gramian, state.targets, orders, beta
        )
        return jnp.sum(coeffs, axis=1), GradVacState(targets), {}

    return Weighting(init=init, update=update, kind=GRAMIAN, blocks=blocks, stochastic=True)
