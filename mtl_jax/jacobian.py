"""The per-task gradient engine: one forward, then only the backward work a method needs.

The forward is split at the shared representation `r = trunk(θ_shared, x)`:

1. `jax.vjp` of the trunk gives `r` and the trunk pullback.
2. `jax.vjp` of all heads and losses, with each head reading *its own copy* of `r`, gives
   the loss vector `L[T]` and, from one pullback of the all-ones cotangent, every head's
   own unweighted gradient together with the per-task representation gradients
   `Z_t = ∂L_t/∂r` (stacked on a leading task axis).

From there:

* loss-based methods (and `rep_grad` mode): the shared gradient is one trunk pullback of
  `Σ_t w_t Z_t` — exactly the work of `jax.value_and_grad` of `Σ_t w_t L_t`, but with the
  heads receiving their own unweighted gradient in the same pass;
* parameter mode: the Jacobian rows `g_t = ∂L_t/∂θ_shared` are the trunk pullback applied
  to each of the T cotangents `Z_t` (unrolled or vmapped; no second forward), the
  Gramian is `Σ_leaves J Jᵀ`, and the shared gradient is `Σ_t w_t g_t` from those rows.

Rows are kept as a pytree with a leading task axis (never concatenated into one [T, P]
matrix inside the step), so Gramians and combinations are leaf-wise sums — and per-block
Gramians are the same leaf sums grouped by block, at no extra cost. That row math lives in
`mtl_jax.row_math`, which the weighting methods use without importing this engine.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax.losses import masked_mean
from mtl_jax.row_math import combine

if TYPE_CHECKING:  # the weighting package imports this module; keep it light
    from mtl_jax.models import MultiTaskModel
    from mtl_jax.tasks import Task

PyTree = Any


class TaskPullbacks(NamedTuple):
    """What one forward leaves for the backward choices.

    Attributes:
      losses: [T] task losses in sorted task-name order.
      preds: {task: prediction}.
      rep_grads: per-task gradients of the losses w.r.t. the shared representation,
        a pytree shaped like the representation with a leading T axis.
      head_grads: {task: gradient of that task's own (unweighted) loss w.r.t. its head}.
      trunk_pullback: maps a representation cotangent to the shared-parameter gradient.
      batch_stats: updated {"shared", "tasks"} batch statistics.
    """

    losses: jax.Array
    preds: dict[str, jax.Array]
    rep_grads: PyTree
    head_grads: dict[str, PyTree]
    trunk_pullback: Callable[[PyTree], PyTree]
    batch_stats: dict[str, PyTree]


def loss_vector(
    tasks: Mapping[str, Task], preds: Mapping[str, jax.Array], batch: Mapping[str, Any]
) -> jax.Array:
    """[T] task losses (sorted task-name order) of predictions `{task: pred}` on `batch`.

    Examples with `batch["valid"]` false (padding) count for nothing.
    """
    valid = batch.get("valid")
    if valid is None:
        valid = jnp.ones(batch["image"].shape[:1], dtype=bool)
    return jnp.stack(
        [
            masked_mean(*tasks[name].loss(preds[name], batch["targets"][name], valid))
            for name in sorted(preds)
        ]
    )


def forward_with_pullbacks(
    model: MultiTaskModel,
    tasks: Mapping[str, Task],
    params: PyTree,
    batch_stats: PyTree,
    batch: Mapping[str, Any],
    *,
    train: bool = True,
    rng: jax.Array | None = None,
) -> TaskPullbacks:
    """Runs the model once and returns the losses and the pullbacks (see module docstring).

    Args:
      model: the multi-task model.
      tasks: task records keyed by name (the same names as the model's heads).
      params: `{"shared": ..., "tasks": {name: ...}}`.
      batch_stats: the same split of BatchNorm statistics.
      batch: `{"image": [B, H, W, C], "targets": {task: [B, ...]}}`, optionally
        `"valid": [B]` marking real (non-padding) examples.
      train: BatchNorm (and dropout) mode.
      rng: PRNG key of the forward's randomness (dropout); the model derives one stream
        for the trunk and one per head from it.
    """
    names = model.task_names
    image = batch["image"]

    def trunk(shared):
        return model.apply_shared(shared, batch_stats["shared"], image, train=train, rng=rng)

    rep, trunk_pullback, shared_stats = jax.vjp(trunk, params["shared"], has_aux=True)

    def heads(task_params, reps):
        preds, stats = {}, {}
        for name in names:
            preds[name], stats[name] = model.apply_head(
                name,
                task_params[name],
                batch_stats["tasks"][name],
                reps[name],
                train=train,
                rng=rng,
            )
        return loss_vector(tasks, preds, batch), (preds, stats)

    losses, heads_pullback, (preds, task_stats) = jax.vjp(
        heads, params["tasks"], {name: rep for name in names}, has_aux=True
    )
    head_grads, rep_cotangents = heads_pullback(jnp.ones_like(losses))
    rep_grads = jax.tree.map(lambda *z: jnp.stack(z), *(rep_cotangents[n] for n in names))
    return TaskPullbacks(
        losses=losses,
        preds=preds,
        rep_grads=rep_grads,
        head_grads=head_grads,
        trunk_pullback=lambda cotangent: trunk_pullback(cotangent)[0],
        batch_stats={"shared": shared_stats, "tasks": task_stats},
    )


def _after(previous: PyTree, tree: PyTree) -> PyTree:
    """`tree`, unchanged in value, but computable only once all of `previous` is.

    Adds `0 · s` to every leaf of `tree`, where `s` reads one element of every leaf of
    `previous` (and is replaced by 0 where it is not finite, so that a NaN or inf there
    cannot leak into `tree`). XLA does not fold a floating-point `x · 0`, so the
    dependency survives compilation; the cost is one add per element of `tree`. The
    value is exact (`z + 0 = z`; only a −0 becomes +0).

    Why not the alternatives: `lax.optimization_barrier` does not order anything on
    XLA's CPU backend (it is removed before scheduling, without control dependencies);
    a `lax.cond` around each chunk bounds memory but made the step several times slower
    (measurements in `benchmarks/results/README.md`).
    """
    leaves = jax.tree.leaves(previous)
    probe = sum(jnp.ravel(leaf)[0].astype(jnp.float32) for leaf in leaves)
    zero = jnp.where(jnp.isfinite(probe), probe, 0.0) * 0.0
    return jax.tree.map(lambda leaf: leaf + zero.astype(leaf.dtype), tree)


# How the T trunk pullbacks of `shared_jacobian` are laid out in the program.
STRATEGIES = ("unrolled", "vmap")


def shared_jacobian(
    pullbacks: TaskPullbacks, *, strategy: str = "unrolled", chunk_size: int | None = None
) -> PyTree:
    """Per-task gradients of the shared parameters: a params-shaped tree with leading T.

    Args:
      pullbacks: from `forward_with_pullbacks`.
      strategy: `"unrolled"` writes the trunk pullbacks of a chunk side by side in the
        program (the default: on CPU, XLA's convolutions batched by vmap are slower than
        T separate ones); `"vmap"` batches them into one vmapped pullback, which
        accelerators may prefer.
      chunk_size: tasks per chunk. Chunk k's cotangents are made to depend on chunk
        k − 1's rows (`_after`), so at most one chunk's backward passes are live at once:
        memory grows with the chunk size, not with T; smaller chunks leave XLA less to
        overlap. `None` = all T tasks in one chunk. The chunks are written out in the
        program (its size grows with T) rather than looped with `lax.map`, which was
        slower. The measurements behind each choice are in `benchmarks/results/README.md`.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {list(STRATEGIES)}, got {strategy!r}")
    num_tasks = pullbacks.losses.shape[0]
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size}")
    chunk = num_tasks if chunk_size is None else min(chunk_size, num_tasks)

    def pull_chunk(cotangents):
        if strategy == "vmap":
            return jax.vmap(pullbacks.trunk_pullback)(cotangents)
        size = jax.tree.leaves(cotangents)[0].shape[0]
        rows = [
            pullbacks.trunk_pullback(jax.tree.map(lambda z, t=t: z[t], cotangents))
            for t in range(size)
        ]
        return jax.tree.map(lambda *leaves: jnp.stack(leaves), *rows)

    chunks = []
    for start in range(0, num_tasks, chunk):
        cotangents = jax.tree.map(lambda z, s=start: z[s : s + chunk], pullbacks.rep_grads)
        if chunks:
            cotangents = _after(chunks[-1], cotangents)
        chunks.append(pull_chunk(cotangents))
    if len(chunks) == 1:
        return chunks[0]
    return jax.tree.map(lambda *parts: jnp.concatenate(parts), *chunks)


def shared_gradient_from_rep(pullbacks: TaskPullbacks, weights: jax.Array) -> PyTree:
    """`∂(Σ_t w_t L_t)/∂θ_shared` by one trunk pullback of `Σ_t w_t Z_t`."""
    return pullbacks.trunk_pullback(combine(weights, pullbacks.rep_grads))
