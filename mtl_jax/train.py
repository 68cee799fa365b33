"""`TrainState` and the jitted multi-task train and eval steps."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mtl_jax import jacobian, param_blocks, row_math
from mtl_jax.errors import OptionError
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


class SharedGradient(NamedTuple):
    """What a method kind's gradient path hands back to the train step.

    Attributes:
      grads: the shared-parameter gradient (the update direction before the optimizer).
      weights: [T] task weights, or None for jacobian methods (no task weights).
      weighting_state: the method's next state.
      method_metrics: the method's own metrics (logged under `weighting/<name>`).
      diagnostics: `grad_norm`, `grad_cosine` (and `block_weights`) for methods with
        per-task gradients; empty for loss methods.
    """

    grads: PyTree
    weights: jax.Array | None
    weighting_state: PyTree
    method_metrics: dict[str, jax.Array]
    diagnostics: dict[str, jax.Array]


def step_keys(rng: jax.Array, step: jax.Array) -> StepKeys:
    """The keys of step `step` of a run whose base key is `rng`: `fold_in(rng, step)`,
    split by purpose. The run's seed and the step decide every random draw of the step."""
    return StepKeys(*jax.random.split(jax.random.fold_in(rng, step)))


def create_train_state(
    model: MultiTaskModel,
    tx: optax.GradientTransformation,
    weighting: Weighting,
    image: jax.Array | Mapping[str, jax.Array],
    *,
    seed: int,
    rep_grad: bool = False,
) -> TrainState:
    """Initialises the model from an example image batch, the optimizer and the method.

    `image` is an example image batch [B, H, W, C], or, for per-task inputs, one example
    input per task `{task: [B_t, ...]}` (a batch's `"inputs"`; the batch sizes used here
    do not have to be the training batches'). `rep_grad` must match the train step's: a
    jacobian-kind method's state is shaped like one task's gradient, of the shared
    parameters or of the representation (with per-task inputs, `{task: r_t}`).
    """
    check_step_options(weighting, rep_grad=rep_grad)
    init_rng, rng = jax.random.split(jax.random.PRNGKey(seed))
    variables = model.init(init_rng, image)
    row = None
    if weighting.needs_row:
        if rep_grad and isinstance(image, Mapping):
            row, _ = jax.eval_shape(
                lambda v: model.apply_inputs(v["params"], v["batch_stats"], image, train=False),
                variables,
            )
        elif rep_grad:
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


def check_step_options(
    weighting: Weighting,
    *,
    rep_grad: bool = False,
    head_grads: str = "unweighted",
    jacobian_strategy: str = "unrolled",
    jacobian_chunk_size: int | None = None,
    loss_value: bool = False,
) -> None:
    """Checks the options of `make_train_step` (see there) against each other and the method.

    Raises:
      OptionError: naming the option: an unknown `head_grads` or `jacobian_strategy`, a
        chunk size below 1, `rep_grad` with a loss method (no per-task gradients),
        `head_grads="weighted"` with a jacobian method (no task weights), or a blocked
        method (`weighting.blocks`) that is not gramian-kind or runs in `rep_grad` mode.
    """
    del loss_value  # any bool goes with any method
    if weighting.kind not in KINDS:
        raise OptionError(
            "weighting", f"unsupported weighting kind {weighting.kind!r}; known: {list(KINDS)}"
        )
    if head_grads not in HEAD_GRADS:
        raise OptionError(
            "head_grads", f"head_grads must be one of {list(HEAD_GRADS)}, got {head_grads!r}"
        )
    if jacobian_strategy not in jacobian.STRATEGIES:
        raise OptionError(
            "jacobian_strategy",
            f"jacobian_strategy must be one of {list(jacobian.STRATEGIES)}, "
            f"got {jacobian_strategy!r}",
        )
    if jacobian_chunk_size is not None and jacobian_chunk_size < 1:
        raise OptionError(
            "jacobian_chunk_size",
            f"jacobian_chunk_size must be positive or None, got {jacobian_chunk_size}",
        )
    if rep_grad and weighting.kind == LOSS:
        raise OptionError(
            "rep_grad", f"rep_grad: {weighting.kind}-kind methods do not use per-task gradients"
        )
    if head_grads == "weighted" and weighting.kind == JACOBIAN:
        raise OptionError(
            "head_grads", 'head_grads="weighted" needs task weights; jacobian methods have none'
        )
    if weighting.batches != 1:
        if weighting.batches < 2 or weighting.kind != GRAMIAN or weighting.blocks != "whole":
            raise OptionError(
                "weighting",
                f"batches={weighting.batches}: multi-batch methods are gramian-kind over the "
                "whole shared parameters and take 2 or more batches",
            )
        if rep_grad:
            raise OptionError(
                "rep_grad",
                f"a multi-batch method ({weighting.batches} batches per step) needs parameter "
                "mode (rep_grad=False)",
            )
    param_blocks.check(weighting.blocks, "weighting")
    if weighting.blocks == "whole":
        return
    if weighting.kind != GRAMIAN:
        raise OptionError(
            "weighting",
            f"blocks={weighting.blocks!r} is for gramian-kind methods, not {weighting.kind!r}",
        )
    if rep_grad:
        raise OptionError(
            "rep_grad",
            f"blocks={weighting.blocks!r} partitions the shared parameters; it needs "
            "parameter mode (rep_grad=False)",
        )


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
    loss_value: bool = False,
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

    Multi-batch methods (`weighting.batches` = k > 1: SDMGrad, MoDo) take a batch
    `{"0": batch_0, ..., "k-1": batch_k-1}` of k independent mini-batches: k forwards in
    turn (BatchNorm statistics updated by each, as k training-mode forwards in torch;
    dropout keys split per batch), the per-task rows of each, the cross-Gramian `J_0 J_1ᵀ`
    for the method, the shared gradient `Σ_t w_t g_t` from the last batch's rows, every
    head the mean of its own gradients over the k batches, and `loss` the mean over the
    k batches (cost: k forwards and k·T trunk pullbacks).

    Then one optax update of all parameters. Methods with an `after_update` hook (FAMO)
    get the losses of the same batch under the new parameters, from one extra forward
    (BatchNorm in training mode; its statistics from that forward are not kept).

    Args:
      model: the multi-task model.
      tasks: its tasks, keyed by the model's task names.
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
      jacobian_strategy: layout of the per-task trunk pullbacks in parameter mode
        (`strategy` of `jacobian.shared_jacobian`).
      jacobian_chunk_size: tasks per pullback chunk (`chunk_size` of
        `jacobian.shared_jacobian`).
      loss_value: pass `value=Σ_t L_t` (the unweighted sum of the task losses of the
        batch) to `tx.update`, for a `tx` that monitors the loss
        (`optax.contrib.reduce_on_plateau`); off, `tx.update` gets no extra argument.
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
    check_step_options(
        weighting,
        rep_grad=rep_grad,
        head_grads=head_grads,
        jacobian_strategy=jacobian_strategy,
        jacobian_chunk_size=jacobian_chunk_size,
    )
    names = model.task_names
    # The unweighted sum, not Σ_t w_t L_t: it does not move with the method's weights
    # (learned ones, such as uncertainty weighting's, can lower it without progress) and
    # jacobian methods have no weights.
    extra_args = (lambda losses: {"value": jnp.sum(losses)}) if loss_value else (lambda _: {})

    def trunk_example(state, batch):
        """(trunk statistics, trunk input) of one forward, to trace the trunk's call order:
        the image, or the first task's input after its stem (per-task inputs)."""
        if "image" in batch:
            return state.batch_stats["shared"], batch["image"]
        name = names[0]
        task_params, task_stats = state.params["tasks"][name], state.batch_stats["tasks"][name]
        stem_out, _ = jax.eval_shape(
            lambda p, s, x: model.apply_stem(name, p, s, x, train=False),
            model.stem_variables(name, task_params),
            model.stem_variables(name, task_stats),
            batch["inputs"][name],
        )
        return model.trunk_stats(name, state.batch_stats), stem_out

    def leaf_blocks(state, batch):
        """Each shared leaf's block and the block count (static, found while tracing)."""
        last = None
        if weighting.blocks == "last_layer":
            trunk_stats, trunk_input = trunk_example(state, batch)
            order = param_blocks.call_order(
                lambda p, s, x: model.apply_shared(p, s, x, train=False),
                state.params["shared"],
                trunk_stats,
                trunk_input,
            )
            last = param_blocks.last_layer(state.params["shared"], order)
        return param_blocks.assign(state.params["shared"], weighting.blocks, last=last)

    def task_rows(pullbacks, state, batch):
        """The per-task rows, their Gramian for the diagnostics, the method's Gramian
        (per block for a blocked method) and each leaf's block (None when unblocked)."""
        if rep_grad:
            rows = pullbacks.rep_grads
        else:
            rows = jacobian.shared_jacobian(
                pullbacks, strategy=jacobian_strategy, chunk_size=jacobian_chunk_size
            )
        if weighting.blocks == "whole":
            gram = row_math.gramian(rows)
            return rows, gram, gram, None
        blocks, num_blocks = leaf_blocks(state, batch)
        method_gramian = row_math.block_gramians(rows, blocks, num_blocks)
        return rows, jnp.sum(method_gramian, axis=0), method_gramian, blocks

    def diagnostics_of(gram):
        norms, cosines = row_math.gramian_norms_and_cosines(gram)
        return {"grad_norm": norms, "grad_cosine": cosines}

    def loss_method_gradient(pullbacks, state, batch, key) -> SharedGradient:
        """Loss methods: weights from the losses, one trunk pullback of `Σ_t w_t Z_t`."""
        del batch
        weights, weighting_state, method_metrics = weighting.update(
            pullbacks.losses, state.weighting_state, key=key
        )
        grads = jacobian.shared_gradient_from_rep(pullbacks, weights)
        return SharedGradient(grads, weights, weighting_state, method_metrics, {})

    def gramian_method_gradient(pullbacks, state, batch, key) -> SharedGradient:
        """Gramian methods: weights [T] (or per block [B, T]) combine the rows."""
        rows, gram, method_gramian, blocks = task_rows(pullbacks, state, batch)
        weights, weighting_state, method_metrics = weighting.update(
            pullbacks.losses, state.weighting_state, key=key, gramian=method_gramian, rows=rows
        )
        diagnostics = diagnostics_of(gram)
        if weights.ndim == 2:  # per-block weights [B, T]
            diagnostics["block_weights"] = weights
            grads = row_math.combine(weights, rows, blocks)
            weights = jnp.mean(weights, axis=0)
        elif rep_grad:
            grads = jacobian.shared_gradient_from_rep(pullbacks, weights)
        else:
            grads = row_math.combine(weights, rows)
        return SharedGradient(grads, weights, weighting_state, method_metrics, diagnostics)

    def jacobian_method_gradient(pullbacks, state, batch, key) -> SharedGradient:
        """Jacobian methods: the method returns the direction itself (no task weights)."""
        rows, gram, method_gramian, _ = task_rows(pullbacks, state, batch)
        direction, weighting_state, method_metrics = weighting.update(
            pullbacks.losses, state.weighting_state, key=key, gramian=method_gramian, rows=rows
        )
        grads = pullbacks.trunk_pullback(direction) if rep_grad else direction
        return SharedGradient(grads, None, weighting_state, method_metrics, diagnostics_of(gram))

    shared_gradient = {
        LOSS: loss_method_gradient,
        GRAMIAN: gramian_method_gradient,
        JACOBIAN: jacobian_method_gradient,
    }[weighting.kind]
    batch_names = tuple(str(i) for i in range(weighting.batches))

    def one_batch(state: TrainState, batch: dict, keys: StepKeys):
        """(shared gradient, head gradients, losses, batch statistics, the update's batch)."""
        pullbacks = jacobian.forward_with_pullbacks(
            model, tasks, state.params, state.batch_stats, batch, train=True, rng=keys.model
        )
        # The step is not differentiated: losses and weights are plain values here.
        gradient = shared_gradient(pullbacks, state, batch, keys.weighting)
        return gradient, pullbacks.head_grads, pullbacks.losses, pullbacks.batch_stats, batch

    def multi_batch(state: TrainState, batches: dict, keys: StepKeys):
        """`one_batch` for a multi-batch method (see the docstring)."""
        if not isinstance(batches, Mapping) or tuple(sorted(batches)) != batch_names:
            found = sorted(batches) if isinstance(batches, Mapping) else type(batches).__name__
            raise ValueError(
                f"a {weighting.batches}-batch method takes a batch {{'0': ..., "
                f"'{weighting.batches - 1}': ...}} of {weighting.batches} mini-batches; got "
                f"{found}"
            )
        stats, pulls, rows = state.batch_stats, [], []
        model_keys = jax.random.split(keys.model, weighting.batches)
        for name, model_key in zip(batch_names, model_keys, strict=True):
            pullbacks = jacobian.forward_with_pullbacks(
                model, tasks, state.params, stats, batches[name], train=True, rng=model_key
            )
            stats = pullbacks.batch_stats
            pulls.append(pullbacks)
            # (rows, their Gramian): parameter mode, whole (`check_step_options`).
            rows.append(task_rows(pullbacks, state, batches[name])[:2])
        gram = rows[-1][1]  # the update batch's, for the diagnostics
        rows = [r for r, _ in rows]
        losses = jnp.mean(jnp.stack([p.losses for p in pulls]), axis=0)
        weights, weighting_state, method_metrics = weighting.update(
            losses,
            state.weighting_state,
            key=keys.weighting,
            gramian=row_math.cross_gramian(rows[0], rows[1]),
            rows=rows[-1],
        )
        gradient = SharedGradient(
            row_math.combine(weights, rows[-1]),
            weights,
            weighting_state,
            method_metrics,
            diagnostics_of(gram),
        )
        heads = jax.tree.map(lambda *g: sum(g) / len(g), *(p.head_grads for p in pulls))
        return gradient, heads, losses, stats, batches[batch_names[-1]]

    def step(state: TrainState, batch: dict):
        # The step's randomness (dropout, the method's draws) is a function of (seed, step).
        keys = step_keys(state.rng, state.step)
        gradient, task_grads, losses, batch_stats, batch = (
            one_batch if weighting.batches == 1 else multi_batch
        )(state, batch, keys)
        shared_grads, weights, weighting_state, method_metrics, diagnostics = gradient
        if head_grads == "weighted":
            task_grads = {
                name: jax.tree.map(lambda g, w=weights[i]: w * g, task_grads[name])
                for i, name in enumerate(names)
            }
        grads = {"shared": shared_grads, "tasks": task_grads}
        updates, opt_state = tx.update(grads, state.opt_state, state.params, **extra_args(losses))
        params = optax.apply_updates(state.params, updates)
        if weighting.after_update is not None:
            preds, _ = model.apply(
                {"params": params, "batch_stats": state.batch_stats},
                jacobian.model_input(batch),
                train=True,
                rng=keys.model,
            )
            losses_after = jacobian.loss_vector(tasks, preds, batch)
            weighting_state, after_metrics = weighting.after_update(
                losses, losses_after, weighting_state
            )
            method_metrics = {**method_metrics, **after_metrics}
        new_state = TrainState(
            step=state.step + 1,
            params=params,
            batch_stats=batch_stats,
            opt_state=opt_state,
            weighting_state=weighting_state,
            rng=state.rng,
        )
        metrics = {"loss": losses, **diagnostics}
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
    for nothing. A batch is `{"image", "targets", "valid": [B]}` or, with per-task inputs,
    `{"inputs": {task: x_t}, "targets": {task: y_t}}` with optional `"valid": {task: [B_t]}`
    (all valid without it); each task's statistics read only its own input and targets.
    Such a batch may also hold only some of the tasks (e.g. one domain's test set at a
    time): it returns those tasks' statistics, and `accumulate_stats` sums each task's
    over the batches that hold it (one compile per set of tasks).
    """

    def eval_step(params, batch_stats, batch):
        jacobian.check_batch(model, batch, subset=True)
        preds, _ = model.apply(
            {"params": params, "batch_stats": batch_stats}, jacobian.model_input(batch)
        )
        stats = {}
        for name in sorted(preds):
            valid = jacobian.task_valid(batch, name) if "inputs" in batch else batch["valid"]
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


def accumulate_stats(
    eval_step: Callable, params: PyTree, batch_stats: PyTree, batches
) -> dict[str, dict[str, np.ndarray]]:
    """`{task: statistics}` of `eval_step` summed over `batches` (int64 / float64); each
    task's over the batches that hold it (per-task-input batches may hold some tasks)."""
    totals = None
    for batch in batches:
        stats = jax.tree.map(_widen, jax.device_get(eval_step(params, batch_stats, batch)))
        if totals is None:
            totals = dict(stats)
            continue
        for name, task_stats in stats.items():
            totals[name] = (
                jax.tree.map(np.add, totals[name], task_stats) if name in totals else task_stats
            )
    if totals is None:
        raise ValueError("evaluation got no batches (empty split?)")
    return totals


def metrics_from_stats(
    totals: Mapping[str, Mapping[str, np.ndarray]], tasks: Mapping[str, Task]
) -> dict[str, float]:
    """`{"<task>/<metric>": value}` (the mean loss included) from `accumulate_stats`."""
    results = {}
    for name in sorted(totals):
        task_stats = totals[name]
        results[f"{name}/loss"] = float(task_stats["loss_sum"] / max(task_stats["loss_count"], 1))
        for metric, value in tasks[name].compute_metrics(task_stats).items():
            results[f"{name}/{metric}"] = value
    return results


def evaluate(
    eval_step: Callable,
    params: PyTree,
    batch_stats: PyTree,
    batches,
    tasks: Mapping[str, Task],
) -> dict[str, float]:
    """Runs `eval_step` over `batches` and returns `{"<task>/<metric>": value}`."""
    return metrics_from_stats(accumulate_stats(eval_step, params, batch_stats, batches), tasks)
