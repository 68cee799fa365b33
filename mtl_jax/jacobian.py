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

Per-task inputs (`batch["inputs"] = {task: x_t}`, see `check_batch`): the trunk runs once
per task input, `r_t = trunk(θ_shared, x_t)`, in sorted task order, each with its own
`jax.vjp`, and head t reads only `r_t`. The representation is then `{task: r_t}`, and task
t's representation gradient is the cotangent of *its* representation: its row in
`rep_grads` is `Z_t` on `r_t` and zeros on every other task's (so in `rep_grad` mode
rows of different tasks never overlap and the Gramian is diagonal: their inputs differ).
Its parameter row is `g_t = pullback_t(Z_t)`, task t's own trunk pullback, exactly
`∂L_t/∂θ_shared`; the shared gradient of any combination is `Σ_t pullback_t(w_t Z_t)`.
A task's input stem (`MultiTaskModel.stems`) is task-owned: its gradient, from the same
pullback of the unweighted `Z_t`, is part of that task's `head_grads` (under "stem").

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
from mtl_jax.models.multitask import STEM, check_task_keys
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
      trunk_pullback: maps a representation cotangent to the shared-parameter gradient
        (with per-task inputs, a cotangent `{task: cotangent of r_t}`).
      batch_stats: updated {"shared", "tasks"} batch statistics.
      task_pullbacks: per-task inputs only (else None): `{task: pullback_t}`, mapping a
        cotangent of that task's own representation to the shared-parameter gradient.
    """

    losses: jax.Array
    preds: dict[str, jax.Array]
    rep_grads: PyTree
    head_grads: dict[str, PyTree]
    trunk_pullback: Callable[[PyTree], PyTree]
    batch_stats: dict[str, PyTree]
    task_pullbacks: dict[str, Callable[[PyTree], PyTree]] | None = None


def _leading(x) -> int | None:
    shape = getattr(x, "shape", None)
    return shape[0] if shape else None


def check_batch(model: MultiTaskModel, batch: Mapping[str, Any], *, subset: bool = False) -> None:
    """Checks a batch's format against the model's tasks (Python-side, before tracing).

    Two formats:

    * one input for every task: `{"image": [B, ...], "targets": {task: [B, ...]},
      "valid": [B]}` (`valid` optional, marks real examples; extra targets are ignored);
    * one input per task (multi-input MTL): `{"inputs": {task: [B_t, ...]},
      "targets": {task: [B_t, ...]}, "valid": {task: [B_t]}}` (`valid` optional; when
      given, for every task). The batch sizes `B_t` may differ between tasks. With
      `subset` (evaluation), the batch may hold a non-empty subset of the tasks, the
      same ones in "inputs", "targets" and "valid".

    Raises:
      ValueError: naming the task: an input or target missing for a task, an input,
        target or `valid` entry for an unknown task, a task whose input, targets and
        `valid` disagree on `B_t`; or a batch with both "image" and "inputs", with
        neither, or with one "image" for a model that needs per-task inputs.
    """
    names = model.task_names
    if "image" in batch and "inputs" in batch:
        raise ValueError(
            'a batch has either one "image" for every task or "inputs" per task, not both'
        )
    if "image" not in batch and "inputs" not in batch:
        raise ValueError('a batch needs "image" (one input for every task) or "inputs" ({task: x})')
    targets = batch.get("targets", {})
    if "image" in batch:
        model.check_single_input()
        missing = [name for name in names if name not in targets]
        if missing:
            raise ValueError(f"targets: no entry for task {missing[0]!r} (tasks: {list(names)})")
        return
    inputs = batch["inputs"]
    if not isinstance(inputs, Mapping):
        raise ValueError('batch["inputs"] must be a dict {task: [B_t, ...]}')
    check_task_keys(names, inputs, "inputs", subset=subset)
    present = tuple(sorted(inputs))
    check_task_keys(present, targets, "targets")
    valid = batch.get("valid")
    if valid is not None:
        if not isinstance(valid, Mapping):
            raise ValueError('with per-task "inputs", "valid" must be a dict {task: [B_t]}')
        check_task_keys(present, valid, "valid")
    for name in present:
        size = _leading(inputs[name])
        if size is None:
            raise ValueError(f"task {name!r}: its input must have a leading batch axis")
        sizes = {"targets": {_leading(leaf) for leaf in jax.tree.leaves(targets[name])}}
        if valid is not None:
            sizes["valid"] = {_leading(valid[name])}
        for what, found in sizes.items():
            if found != {size}:
                raise ValueError(
                    f"task {name!r}: its input has batch size {size}, its {what} "
                    f"{sorted(found, key=str)}"
                )


def model_input(batch: Mapping[str, Any]) -> jax.Array | dict[str, jax.Array]:
    """What `MultiTaskModel.apply`/`init` take: the batch's image or its per-task inputs."""
    return batch["image"] if "image" in batch else batch["inputs"]


def task_valid(batch: Mapping[str, Any], name: str) -> jax.Array:
    """[B_t] validity of task `name`'s examples in a per-task-inputs batch (all true
    without `valid`)."""
    valid = batch.get("valid")
    if valid is None:
        return jnp.ones(batch["inputs"][name].shape[:1], dtype=bool)
    return valid[name]


def loss_vector(
    tasks: Mapping[str, Task], preds: Mapping[str, jax.Array], batch: Mapping[str, Any]
) -> jax.Array:
    """[T] task losses (sorted task-name order) of predictions `{task: pred}` on `batch`.

    Examples with `batch["valid"]` false (padding) count for nothing; with per-task
    inputs, `valid` is per task (`task_valid`) and each loss reads only its own targets.
    """
    if "inputs" in batch:
        return jnp.stack(
            [
                masked_mean(
                    *tasks[name].loss(preds[name], batch["targets"][name], task_valid(batch, name))
                )
                for name in sorted(preds)
            ]
        )
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
        `"valid": [B]` marking real (non-padding) examples; or per-task inputs
        `{"inputs": {task: [B_t, ...]}, "targets": {task: [B_t, ...]}}`, optionally
        `"valid": {task: [B_t]}` (`check_batch`; module docstring).
      train: BatchNorm (and dropout) mode.
      rng: PRNG key of the forward's randomness (dropout); the model derives one stream
        for the trunk and one per head from it.

    Raises:
      ValueError: from `check_batch`, naming the task, before anything is traced.
    """
    check_batch(model, batch)
    if "inputs" in batch:
        return _forward_task_inputs(model, tasks, params, batch_stats, batch, train=train, rng=rng)
    names = model.task_names
    image = batch["image"]

    def trunk(shared):
        return model.apply_shared(shared, batch_stats["shared"], image, train=train, rng=rng)

    rep, trunk_pullback, shared_stats = jax.vjp(trunk, params["shared"], has_aux=True)

    heads = _heads_and_losses(model, tasks, batch_stats, batch, train=train, rng=rng)
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


def _heads_and_losses(model, tasks, batch_stats, batch, *, train, rng):
    """`heads(head_params, reps) -> (losses [T], (preds, head statistics))`: every head on
    its task's representation, then the loss vector; the function both forwards pull
    back through (`jax.vjp`)."""

    def heads(head_params, reps):
        preds, head_stats = {}, {}
        for name in model.task_names:
            preds[name], head_stats[name] = model.apply_head(
                name,
                head_params[name],
                batch_stats["tasks"][name],
                reps[name],
                train=train,
                rng=rng,
            )
        return loss_vector(tasks, preds, batch), (preds, head_stats)

    return heads


def _forward_task_inputs(model, tasks, params, batch_stats, batch, *, train, rng) -> TaskPullbacks:
    """`forward_with_pullbacks` with one input per task (module docstring).

    A Python loop over the sorted tasks, not one trunk call on the concatenated inputs:
    the batch sizes differ, stems may give different input shapes, and a concatenated call
    would normalise every domain with the statistics of their union in BatchNorm (LibMTL
    runs the encoder once per domain); each task's own `jax.vjp` also gives its row
    without pulling zeros back through the other tasks' inputs.
    """
    names = model.task_names
    inputs = batch["inputs"]
    stats = {"shared": batch_stats["shared"], "tasks": dict(batch_stats["tasks"])}
    reps, pullbacks = {}, {}
    for name in names:
        own_stats = batch_stats["tasks"][name]
        trunk_stats = model.trunk_stats(name, stats)

        def trunk(shared, stem, name=name, trunk_stats=trunk_stats, own_stats=own_stats):
            rep, trunk_out, stem_out = model.apply_input(
                name,
                shared,
                stem,
                trunk_stats,
                model.stem_variables(name, own_stats),
                inputs[name],
                train=train,
                rng=rng,
            )
            return rep, (trunk_out, stem_out)

        reps[name], pullbacks[name], (trunk_out, stem_out) = jax.vjp(
            trunk, params["shared"], model.stem_variables(name, params["tasks"][name]), has_aux=True
        )
        # With input_bn="shared" the next task's forward starts from these statistics.
        stats = model.with_input_stats(name, stats, trunk_out, stem_out)

    heads = _heads_and_losses(model, tasks, batch_stats, batch, train=train, rng=rng)
    head_params = {name: model.head_part(name, params["tasks"][name]) for name in names}
    losses, heads_pullback, (preds, head_stats) = jax.vjp(heads, head_params, reps, has_aux=True)
    head_grads, rep_cotangents = heads_pullback(jnp.ones_like(losses))
    task_grads = {}
    for name in names:
        task_grads[name] = dict(head_grads[name])
        if name in model.stems:  # task-owned: its own unweighted loss gradient
            task_grads[name][STEM] = pullbacks[name](rep_cotangents[name])[1]
    task_stats = {name: {**stats["tasks"][name], **head_stats[name]} for name in names}
    rep_grads = {
        owner: jax.tree.map(
            lambda z, owner=owner: jnp.stack(
                [z if name == owner else jnp.zeros_like(z) for name in names]
            ),
            rep_cotangents[owner],
        )
        for owner in names
    }
    task_pullbacks = {name: (lambda z, name=name: pullbacks[name](z)[0]) for name in names}

    def trunk_pullback(cotangent):
        grads = [task_pullbacks[name](cotangent[name]) for name in names]
        return jax.tree.map(lambda *leaves: sum(leaves[1:], leaves[0]), *grads)

    return TaskPullbacks(
        losses=losses,
        preds=preds,
        rep_grads=rep_grads,
        head_grads=task_grads,
        trunk_pullback=trunk_pullback,
        batch_stats={"shared": stats["shared"], "tasks": task_stats},
        task_pullbacks=task_pullbacks,
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

    With per-task inputs (`pullbacks.task_pullbacks`), row t is task t's own trunk
    pullback of `Z_t`: T different functions, so `strategy` does not apply (they are
    always written out); `chunk_size` bounds memory as above.
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

    if pullbacks.task_pullbacks is not None:
        return _task_input_rows(pullbacks, chunk)
    chunks = []
    for start in range(0, num_tasks, chunk):
        cotangents = jax.tree.map(lambda z, s=start: z[s : s + chunk], pullbacks.rep_grads)
        if chunks:
            cotangents = _after(chunks[-1], cotangents)
        chunks.append(pull_chunk(cotangents))
    if len(chunks) == 1:
        return chunks[0]
    return jax.tree.map(lambda *parts: jnp.concatenate(parts), *chunks)


def _task_input_rows(pullbacks: TaskPullbacks, chunk: int) -> PyTree:
    """`shared_jacobian` with per-task inputs: row t = pullback_t(Z_t), chunked."""
    names = sorted(pullbacks.task_pullbacks)
    rows, previous = [], None
    for start in range(0, len(names), chunk):
        current = []
        for index in range(start, min(start + chunk, len(names))):
            name = names[index]
            cotangent = jax.tree.map(lambda z, i=index: z[i], pullbacks.rep_grads[name])
            if previous is not None:
                cotangent = _after(previous, cotangent)
            current.append(pullbacks.task_pullbacks[name](cotangent))
        previous = current
        rows.extend(current)
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *rows)


def shared_gradient_from_rep(pullbacks: TaskPullbacks, weights: jax.Array) -> PyTree:
    """`∂(Σ_t w_t L_t)/∂θ_shared` by one trunk pullback of `Σ_t w_t Z_t`."""
    return pullbacks.trunk_pullback(combine(weights, pullbacks.rep_grads))
