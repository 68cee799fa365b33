"""`TrainState` and the jitted multi-task train and eval steps."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mtl_jax import jacobian, param_blocks, row_math
from mtl_jax.losses import masked_sum
from mtl_jax.models import MultiTaskModel
from mtl_jax.tasks import Task
from mtl_jax.weighting import GRAMIAN, JACOBIAN, KINDS, LOSS, Weighting

PyTree = Any

# How task heads are trained (see `make_train_step`).
HEAD_GRADS = ("unweighted", "weighted")


class TrainState(NamedTuple):
    """Everything a training run carries from step to step; arrays only.

    Attributes:
      step: int32 scalar, the number of steps taken.
      params: `{"shared": ..., "tasks": {name: ...}}`.
      batch_stats: BatchNorm statistics, split like `params`.
      opt_state: the optax state of `params`.
      weighting_state: the weighting method's state.
      rng: the run's base PRNG key (uint32 [2]); step `s` draws from `fold_in(rng, s)`
        (`step_keys`), so a resumed run draws the same numbers.
    """

    step: jax.Array
    params: PyTree
    batch_stats: PyTree
    opt_state: PyTree
    weighting_state: PyTree
    rng: jax.Array


class StepKeys(NamedTuple):
    """The PRNG keys of one train step, one per purpose."""

    model: jax.Array  # dropout (split further per trunk and head by the model)
    weighting: jax.Array  # the weighting method's draws (`Weighting.update`'s `key`)


def step_keys(rng: jax.Array, step: jax.Array) -> StepKeys:
    """The keys of step `step` of a run whose base key is `rng`: `fold_in(rng, step)`,
    split by purpose. The run's seed and the step decide every random draw of the step."""
    return StepKeys(*jax.random.split(jax.random.fold_in(rng, step)))


def create_train_state(
    model: MultiTaskModel,
    tx: optax.GradientTransformation,
    weighting: Weighting,
    image: jax.Array,
    *,
    seed: int,
    rep_grad: bool = False,
) -> TrainState:
    """Initialises the model from an example image batch, the optimizer and the method.

    `rep_grad` must match the train step's: a jacobian-kind method's state is shaped like
    one task's gradient, of the shared parameters or of the representation.
    """
    _check_blocks(weighting, rep_grad)
    init_rng, rng = jax.random.split(jax.random.PRNGKey(seed))
    variables = model.init(init_rng, image)
    row = None
    if weighting.needs_row:
        if rep_grad:
            rep, _ = jax.eval_shape(
                lambda v: model.apply_shared(
                    v["params"]["shared"], v["batch_stats"]["shared"], image, train=False
                ),
                variables,
            )
            row = rep
        else:
            row = jax.eval_shape(lambda p: p, variables["params"]["shared"])
    return TrainState(
        step=jnp.asarray(0, jnp.int32),
        params=variables["params"],
        batch_stats=variables["batch_stats"],
        opt_state=tx.init(variables["params"]),
        weighting_state=weighting.init_for(model.task_names, row),
        rng=rng,
    )


def _check_blocks(weighting: Weighting, rep_grad: bool) -> None:
    """Blocks partition shared parameters: Gramian methods only, in parameter mode."""
    param_blocks.check(weighting.blocks, "weighting")
    if weighting.blocks == "whole":
        return
    if weighting.kind != GRAMIAN:
        raise ValueError(
            f"blocks={weighting.blocks!r} is for gramian-kind methods, not {weighting.kind!r}"
        )
    if rep_grad:
        raise ValueError(
            f"blocks={weighting.blocks!r} partitions the shared parameters; it needs "
            "parameter mode (rep_grad=False)"
        )


def _norms_and_cosines(gram: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Gradient norms [T] and pairwise cosines [T, T] (0 where a gradient is zero)."""
    norms = jnp.sqrt(jnp.maximum(jnp.diagonal(gram), 0.0))
    outer = norms[:, None] * norms[None, :]
    return norms, jnp.where(outer > 0, gram / jnp.where(outer > 0, outer, 1.0), 0.0)


def make_train_step(
    model: MultiTaskModel,
    tasks: Mapping[str, Task],
    tx: optax.GradientTransformation,
    weighting: Weighting,
    *,
    rep_grad: bool = False,
    head_grads: str = "unweighted",
    jacobian_strategy: str = "unrolled",
    jacobian_chunk_size: int | None = None,
    jit: bool = True,
) -> Callable[[TrainState, dict], tuple[TrainState, dict[str, jax.Array]]]:
    """Builds `step(state, batch) -> (new_state, metrics)`, one jitted program.

    The step runs one forward (`jacobian.forward_with_pullbacks`), then only the backward
    work the method needs:

    * loss methods: weights from the losses, then one trunk backward of the weighted
      representation gradients — the work of `jax.value_and_grad(Σ_t w_t L_t)`;
    * Gramian and jacobian methods: per-task gradients by T trunk pullbacks, either of
      the shared parameters (default, exact) or, with `rep_grad`, of the shared
      representation (MGDA-UB's approximation: T head backwards plus one trunk backward);
      Gramian methods get `G` [T, T] and return weights, the shared gradient is
      `Σ_t w_t g_t` (from the rows already computed, or one trunk pullback in `rep_grad`
      mode); jacobian methods return the direction from the rows themselves.

    Then one optax update of all parameters. Methods with an `after_update` hook (FAMO)
    get the losses of the same batch under the new parameters, from one extra forward
    (BatchNorm in training mode; its statistics from that forward are not kept).

    Args:
      model, tasks: the multi-task model and its tasks (same names).
      tx: optax transformation for `{"shared", "tasks"}` gradients.
      weighting: the method (`mtl_jax.weighting`).
      rep_grad: Gramian/jacobian methods use representation gradients instead of
        parameter ones.
      head_grads: `"unweighted"` (default; torchjd, and LibMTL's gradient-manipulation
        methods such as MGDA, PCGrad, CAGrad): each head gets its own task's loss
        gradient; `"weighted"`: it gets `w_t` times it (the Nash-MTL reference code, and
        LibMTL's loss-weighting methods, FairGrad, Nash-MTL and ExcessMTL, which
        back-propagate `Σ_t w_t L_t`). Not available for jacobian methods, which have no
        task weights.
      jacobian_strategy, jacobian_chunk_size: layout of the per-task trunk pullbacks in
        parameter mode (`jacobian.shared_jacobian`).
      jit: return the jitted function with the state donated (set False to inspect or to
        jit with shardings).

    Returns:
      The step. `metrics` holds `loss` [T] and, for loss and Gramian methods, `weights`
      [T] (sorted task order); the method's own metrics under `weighting/<name>`; for
      Gramian and jacobian methods `grad_norm` [T] and `grad_cosine` [T, T] (of the whole
      shared gradient). A blocked method (`weighting.blocks`, e.g.
      `gradvac(blocks="layer")`) gets one Gramian per parameter block; when it returns
      per-block weights [B, T], each block's rows are combined with their own weights,
      `block_weights` [B, T] is logged and `weights` is their mean over blocks (also what
      `head_grads="weighted"` uses).
    """
    if head_grads not in HEAD_GRADS:
        raise ValueError(f"head_grads must be one of {list(HEAD_GRADS)}, got {head_grads!r}")
    if jacobian_strategy not in jacobian.STRATEGIES:
        raise ValueError(
            f"jacobian_strategy must be one of {list(jacobian.STRATEGIES)}, "
            f"got {jacobian_strategy!r}"
        )
    if jacobian_chunk_size is not None and jacobian_chunk_size < 1:
        raise ValueError(f"jacobian_chunk_size must be positive or None, got {jacobian_chunk_size}")
    if weighting.kind not in KINDS:
        raise ValueError(f"unsupported weighting kind {weighting.kind!r}; known: {list(KINDS)}")
    if head_grads == "weighted" and weighting.kind == JACOBIAN:
        raise ValueError('head_grads="weighted" needs task weights; jacobian methods have none')
    _check_blocks(weighting, rep_grad)
    names = model.task_names

    def leaf_blocks(state, image):
        """Each shared leaf's block and the block count (static, found while tracing)."""
        last = None
        if weighting.blocks == "last_layer":
            order = param_blocks.call_order(
                lambda p, s, x: model.apply_shared(p, s, x, train=False),
                state.params["shared"],
                state.batch_stats["shared"],
                image,
            )
            last = param_blocks.last_layer(state.params["shared"], order)
        return param_blocks.assign(state.params["shared"], weighting.blocks, last=last)

    def shared_gradient(pullbacks, state, image, key):
        """(shared gradient, weights or None, weighting state, method metrics, diagnostics)."""
        losses = pullbacks.losses
        rows = gram = method_gramian = None
        diagnostics = {}
        if weighting.kind != LOSS:
            if rep_grad:
                rows = pullbacks.rep_grads
            else:
                rows = jacobian.shared_jacobian(
                    pullbacks, strategy=jacobian_strategy, chunk_size=jacobian_chunk_size
                )
            if weighting.blocks == "whole":
                gram = method_gramian = row_math.gramian(rows)
            else:
                blocks, num_blocks = leaf_blocks(state, image)
                method_gramian = row_math.block_gramians(rows, blocks, num_blocks)
                gram = jnp.sum(method_gramian, axis=0)
            norms, cosines = _norms_and_cosines(gram)
            diagnostics = {"grad_norm": norms, "grad_cosine": cosines}
        output, weighting_state, method_metrics = weighting.update(
            losses, state.weighting_state, key=key, gramian=method_gramian, rows=rows
        )
        if weighting.kind == JACOBIAN:  # the output is the direction itself
            grads = pullbacks.trunk_pullback(output) if rep_grad else output
            return grads, None, weighting_state, method_metrics, diagnostics
        weights = output
        if weights.ndim == 2:  # per-block weights [B, T]
            diagnostics["block_weights"] = weights
            grads = row_math.combine(weights, rows, blocks)
            weights = jnp.mean(weights, axis=0)
        elif rows is None or rep_grad:
            grads = jacobian.shared_gradient_from_rep(pullbacks, weights)
        else:
            grads = row_math.combine(weights, rows)
        return grads, weights, weighting_state, method_metrics, diagnostics

    def step(state: TrainState, batch: dict):
        # The step's randomness (dropout, the method's draws) is a function of (seed, step).
        keys = step_keys(state.rng, state.step)
        pullbacks = jacobian.forward_with_pullbacks(
            model, tasks, state.params, state.batch_stats, batch, train=True, rng=keys.model
        )
        # The step is not differentiated: losses and weights are plain values here.
        shared_grads, weights, weighting_state, method_metrics, diagnostics = shared_gradient(
            pullbacks, state, batch["image"], keys.weighting
        )
        task_grads = pullbacks.head_grads
        if head_grads == "weighted":
            task_grads = {
                name: jax.tree.map(lambda g, w=weights[i]: w * g, task_grads[name])
                for i, name in enumerate(names)
            }
        grads = {"shared": shared_grads, "tasks": task_grads}
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        if weighting.after_update is not None:
            preds, _ = model.apply(
                {"params": params, "batch_stats": state.batch_stats},
                batch["image"],
                train=True,
                rng=keys.model,
            )
            losses_after = jacobian.loss_vector(tasks, preds, batch)
            weighting_state, after_metrics = weighting.after_update(
                pullbacks.losses, losses_after, weighting_state
            )
            method_metrics = {**method_metrics, **after_metrics}
        new_state = TrainState(
            step=state.step + 1,
            params=params,
            batch_stats=pullbacks.batch_stats,
            opt_state=opt_state,
            weighting_state=weighting_state,
            rng=state.rng,
        )
        metrics = {"loss": pullbacks.losses, **diagnostics}
        if weights is not None:
            metrics["weights"] = weights
        metrics.update({f"weighting/{k}": v for k, v in method_metrics.items()})
        return new_state, metrics

    return jax.jit(step, donate_argnums=0) if jit else step


def make_eval_step(
    model: MultiTaskModel, tasks: Mapping[str, Task]
) -> Callable[[PyTree, PyTree, dict], dict[str, dict[str, jax.Array]]]:
    """Builds the jitted `eval_step(params, batch_stats, batch) -> {task: stats}`.

    Statistics are additive (see `mtl_jax.tasks`); besides each task's own, `loss_sum` and
    `loss_count` give the split-level mean loss. Padding examples (`valid` false) count
    for nothing.
    """

    def eval_step(params, batch_stats, batch):
        preds, _ = model.apply({"params": params, "batch_stats": batch_stats}, batch["image"])
        valid = batch["valid"]
        stats = {}
        for name in model.task_names:
            target = batch["targets"][name]
            loss_sum, loss_count = masked_sum(*tasks[name].loss(preds[name], target, valid))
            stats[name] = {
                **tasks[name].metric_stats(preds[name], target, valid),
                "loss_sum": loss_sum,
                "loss_count": loss_count,
            }
        return stats

    return jax.jit(eval_step)


def _widen(x) -> np.ndarray:
    """Host copy in int64/float64, so that sums over a whole split lose no counts."""
    x = np.asarray(x)
    return x.astype(np.float64 if np.issubdtype(x.dtype, np.floating) else np.int64)


def evaluate(
    eval_step: Callable,
    params: PyTree,
    batch_stats: PyTree,
    batches,
    tasks: Mapping[str, Task],
) -> dict[str, float]:
    """Runs `eval_step` over `batches` and returns `{"<task>/<metric>": value}`."""
    totals = None
    for batch in batches:
        stats = jax.tree.map(_widen, jax.device_get(eval_step(params, batch_stats, batch)))
        totals = stats if totals is None else jax.tree.map(np.add, totals, stats)
    if totals is None:
        raise ValueError("evaluation got no batches (empty split?)")
    results = {}
    for name in sorted(totals):
        task_stats = totals[name]
        results[f"{name}/loss"] = float(task_stats["loss_sum"] / max(task_stats["loss_count"], 1))
        for metric, value in tasks[name].compute_metrics(task_stats).items():
            results[f"{name}/{metric}"] = value
    return results
