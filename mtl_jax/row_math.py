"""Row math on per-task gradients stored as a pytree with a leading task axis.

Rows `g_t` (one per task, sorted task-name order) are never concatenated into one [T, P]
matrix: Gramians and combinations are leaf-wise sums, and per-block Gramians (blocks from
`mtl_jax.param_blocks`) are the same leaf sums grouped by block. This module is a leaf:
the weighting methods use it without importing the gradient engine (`mtl_jax.jacobian`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any


def _leaf_product(a: jax.Array, b: jax.Array) -> jax.Array:
    flat_a = a.reshape(a.shape[0], -1).astype(jnp.float32)
    flat_b = b.reshape(b.shape[0], -1).astype(jnp.float32)
    return jnp.matmul(flat_a, flat_b.T, precision=jax.lax.Precision.HIGHEST)


def _leaf_gramian(leaf: jax.Array) -> jax.Array:
    flat = leaf.reshape(leaf.shape[0], -1).astype(jnp.float32)
    return jnp.matmul(flat, flat.T, precision=jax.lax.Precision.HIGHEST)


def gramian(rows: PyTree) -> jax.Array:
    """`G = J Jᵀ` [T, T] of rows stored as a pytree with a leading task axis (float32)."""
    return sum(_leaf_gramian(leaf) for leaf in jax.tree.leaves(rows))


def cross_gramian(rows_a: PyTree, rows_b: PyTree) -> jax.Array:
    """`J_a J_bᵀ` [T, T] of two sets of rows of the same structure, e.g. the per-task
    gradients of two independent mini-batches (the double-sampling Gramian of SDMGrad
    and MoDo: an unbiased estimate of `E[J] E[J]ᵀ`, not symmetric in general)."""
    return sum(
        _leaf_product(a, b)
        for a, b in zip(jax.tree.leaves(rows_a), jax.tree.leaves(rows_b), strict=True)
    )


def block_gramians(rows: PyTree, leaf_blocks: Sequence[int], num_blocks: int) -> jax.Array:
    """Per-block Gramians [B, T, T]: block b sums the leaves `leaf_blocks` puts in it.

    `leaf_blocks` gives each leaf's block in flattening order (`mtl_jax.param_blocks`); a
    block with no leaf gets a zero Gramian. The blocks sum to `gramian(rows)`.
    """
    leaves = jax.tree.leaves(rows)
    if len(leaves) != len(leaf_blocks):
        raise ValueError(f"{len(leaf_blocks)} block indices for {len(leaves)} leaves")
    num_tasks = leaves[0].shape[0]
    blocks = [jnp.zeros((num_tasks, num_tasks), jnp.float32) for _ in range(num_blocks)]
    for leaf, block in zip(leaves, leaf_blocks, strict=True):
        blocks[block] = blocks[block] + _leaf_gramian(leaf)
    return jnp.stack(blocks)


def reduce_tasks(op: Callable[[jax.Array, jax.Array], jax.Array], leaf: jax.Array) -> jax.Array:
    """Reduce the leading task axis of `leaf` [T, ...] with an elementwise binary `op`.

    Written as T − 1 elementwise ops, which XLA fuses into one loop (faster on CPU than a
    reduction over the major axis; `benchmarks/results/README.md` has the measurement).
    """
    result = leaf[0]
    for t in range(1, leaf.shape[0]):
        result = op(result, leaf[t])
    return result


def combine(weights: jax.Array, rows: PyTree, leaf_blocks: Sequence[int] | None = None) -> PyTree:
    """`Σ_t w_t row_t` for rows stored as a pytree with a leading task axis.

    With `leaf_blocks` (each leaf's block, `block_gramians`), `weights` is [B, T] and each
    leaf is combined with the weights of its block.
    """
    if leaf_blocks is None:
        return jax.tree.map(
            lambda leaf: jnp.tensordot(weights.astype(leaf.dtype), leaf, axes=1), rows
        )
    leaves, treedef = jax.tree.flatten(rows)
    return jax.tree.unflatten(
        treedef,
        [
            jnp.tensordot(weights[block].astype(leaf.dtype), leaf, axes=1)
            for leaf, block in zip(leaves, leaf_blocks, strict=True)
        ],
    )


def gramian_norms_and_cosines(gram: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Gradient norms [..., T] and pairwise cosines [..., T, T] of Gramians [..., T, T]
    (a cosine is 0 where either gradient is zero)."""
    norms = jnp.sqrt(jnp.maximum(jnp.diagonal(gram, axis1=-2, axis2=-1), 0.0))
    outer = norms[..., :, None] * norms[..., None, :]
    return norms, jnp.where(outer > 0, gram / jnp.where(outer > 0, outer, 1.0), 0.0)


def reciprocal_where(values: jax.Array, keep: jax.Array) -> jax.Array:
    """`1 / values` where `keep`, 0 elsewhere, with no inf or nan in either branch (so
    gradients through it stay finite): norms, eigenvalues and normalisers that may be 0."""
    return jnp.where(keep, 1.0 / jnp.where(keep, values, 1.0), 0.0)
