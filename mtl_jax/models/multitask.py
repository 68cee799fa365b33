"""`MultiTaskModel`: one shared trunk and one head per task, as pure functions.

Variables are split by ownership::

    {"params":      {"shared": trunk params,      "tasks": {name: head params}},
     "batch_stats": {"shared": trunk statistics,  "tasks": {name: head statistics}}}

"shared" always means "used by every task"; whatever only one task uses lives under
`tasks[name]`. Task vectors (losses, weights) follow sorted task-name order, which is
also JAX's flatten order for the `tasks` dict.

Tied head modules. Some architectures run a module *inside every task's branch* with one
set of weights: MTAN's attention blocks (the 3×3 "f" convolutions between attention
masks) are applied to each task's attended features. Those weights are used by every task,
so they belong under "shared", yet they run after the split into per-task heads. The model
handles this exactly: the names in `tied` are top-level submodules of every head whose
parameters are stored once, under `params["shared"][name]`, and `apply_shared` returns
them inside the representation::

    rep = {"features": trunk output, "tied": {name: params["shared"][name]}}

`apply_head` merges `rep["tied"]` into the head's parameters, so each task's gradient
w.r.t. its copy of the representation includes its gradient w.r.t. the tied weights, and
the trunk pullback (an identity on those leaves) adds them to the shared gradient — the
per-task Jacobian of `mtl_jax.jacobian` covers them with no special case. Their BatchNorm
running statistics are kept per task (under `batch_stats["tasks"][name]`): in training
mode BatchNorm normalises each task's features with that task's batch statistics, as the
reference code does, and the running averages used at evaluation then describe the same
features (torch instead keeps one average over the three tasks' batches in turn).

Per-task inputs (multi-input MTL: Office-31/Office-Home, where each task is a domain with
its own images). `apply` and `init` accept either one image batch [B, H, W, C] for every
task, or a dict `{task: [B_t, ...]}` of one input per task (batch sizes may differ). With
per-task inputs the trunk runs once per task input, in sorted task order, and task t's
head reads only the representation of its own input. Two options shape that path:

* `stems={task: module}`: a task's own input stem (another modality or channel count),
  applied to its input before the shared trunk. It is task-owned: its variables are
  `params["tasks"][t]["stem"]` and `batch_stats["tasks"][t]["stem"]` (next to the head's
  own top-level modules, so a head may not have a submodule named "stem").
* `input_bn`, the trunk's BatchNorm running statistics (in training mode each task's input
  is normalised with its own batch statistics either way; the option decides what the
  running averages used at evaluation describe):

  - `"shared"` (default): one set, `batch_stats["shared"]`, updated once per task input
    in sorted task order within a step (`r ← m·r + (1 − m)·μ_t` for t in sorted order), and
    used for every task at evaluation. This is LibMTL's behaviour with
    `multi_input=True`: one encoder, and `Trainer.forward4loss` (LibMTL/trainer.py) runs
    `model(inputs[task], task)` for each task in turn in training mode, so torch's
    BatchNorm updates its running statistics once per domain, in `task_name` order.
  - `"per_task"`: one set per task, `batch_stats["tasks"][t]["trunk"]` (task-owned; then
    `batch_stats["shared"]` is empty and a head may not have a submodule named "trunk"):
    each domain is normalised with its own statistics at evaluation.

Nothing else changes: `params["shared"]` is the trunk (plus tied modules), used by every
task's forward.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

PyTree = Any


def _apply(module: nn.Module, params, batch_stats, x, *, train: bool, rng, where: str):
    """Applies a Linen module; returns (output, updated batch statistics)."""
    variables = {"params": params, "batch_stats": batch_stats}
    rngs = None if rng is None else {"dropout": rng}
    if not train:
        return module.apply(variables, x, train=False, rngs=rngs), batch_stats
    try:
        out, updates = module.apply(variables, x, train=True, mutable=["batch_stats"], rngs=rngs)
    except flax.errors.InvalidRngError as error:
        raise ValueError(
            f"{where} uses dropout: training needs a PRNG key, pass rng=... ({error})"
        ) from error
    return out, updates.get("batch_stats", {})


# The trunk's BatchNorm statistics with per-task inputs (see the module docstring).
INPUT_BN = ("shared", "per_task")
# Keys of `params["tasks"][t]` / `batch_stats["tasks"][t]` that are not the head's.
STEM = "stem"
TRUNK_STATS = "trunk"


def _shapes(tree):
    return jax.tree.map(lambda leaf: leaf.shape, tree)


def _to_float32(tree):
    return jax.tree.map(lambda leaf: leaf.astype(jnp.float32), tree)


@dataclasses.dataclass(frozen=True)
class MultiTaskModel:
    """Shared trunk, one head per task: `head_t(trunk(x))` for every task t.

    Attributes:
      trunk: Linen module mapping images [B, H, W, C] to the shared representation (an
        array or a pytree of arrays, e.g. MTAN's encoder and decoder features).
      heads: Linen module per task name, mapping the representation to the prediction.
      tied: names of top-level submodules present in every head whose parameters are
        shared by all tasks (see the module docstring); empty for hard parameter sharing.
      stems: Linen module per task (some or none) applied to that task's own input before
        the trunk (per-task inputs only; variables under `params["tasks"][t]["stem"]`).
      input_bn: `"shared"` (default) or `"per_task"`: the trunk's BatchNorm running
        statistics with per-task inputs (see the module docstring).

    Randomness: `apply_shared`, `apply_head` and `apply` take an optional `rng` used for
    dropout in training; pass the same key to all calls of one step, the model derives an
    independent stream for the trunk and for each head from it.
    """

    trunk: nn.Module
    heads: Mapping[str, nn.Module]
    tied: tuple[str, ...] = ()
    stems: Mapping[str, nn.Module] = dataclasses.field(default_factory=dict)
    input_bn: str = "shared"

    def __post_init__(self):
        if self.input_bn not in INPUT_BN:
            raise ValueError(f"input_bn must be one of {list(INPUT_BN)}, got {self.input_bn!r}")
        unknown = sorted(set(self.stems) - set(self.heads))
        if unknown:
            raise ValueError(f"stems for unknown tasks {unknown}; tasks: {sorted(self.heads)}")

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(sorted(self.heads))

    @property
    def needs_task_inputs(self) -> bool:
        """Whether batches must carry one input per task (stems or per-task statistics)."""
        return bool(self.stems) or self.input_bn == "per_task"

    def check_single_input(self) -> None:
        """Raises a ValueError if the model cannot take one image for every task."""
        if self.needs_task_inputs:
            why = (
                f"tasks {sorted(self.stems)} have input stems"
                if self.stems
                else 'input_bn="per_task" keeps trunk statistics per task input'
            )
            raise ValueError(
                f"{why}: give one input per task ({{task: [B_t, ...]}}), not one image"
            )

    def _input_stream(self, rng: jax.Array | None, name: str):
        """Dropout key of task `name`'s stem and trunk forward (per-task inputs): distinct
        from the single-input trunk's (0) and the heads' (1 + index) streams."""
        if rng is None:
            return None
        return jax.random.fold_in(rng, 1 + len(self.heads) + self.task_names.index(name))

    def head_part(self, name: str, tree: Mapping[str, PyTree]) -> Mapping[str, PyTree]:
        """Task `name`'s params or statistics without its stem and trunk statistics: the
        head's own variables. The same object when the task has neither."""
        reserved = self._reserved(name)
        if not reserved:
            return tree
        return {k: v for k, v in tree.items() if k not in reserved}

    def _reserved(self, name: str) -> tuple[str, ...]:
        return ((STEM,) if name in self.stems else ()) + (
            (TRUNK_STATS,) if self.input_bn == "per_task" else ()
        )

    def trunk_stats(self, name: str, batch_stats: Mapping[str, PyTree]) -> PyTree:
        """The trunk statistics that task `name`'s input uses, from the full statistics."""
        if self.input_bn == "per_task":
            return batch_stats["tasks"][name][TRUNK_STATS]
        return batch_stats["shared"]

    def stem_variables(self, name: str, tree: Mapping[str, PyTree]) -> PyTree:
        """Task `name`'s stem params or statistics from its task tree (`{}` without a stem)."""
        return tree[STEM] if name in self.stems else {}

    def _stream(self, rng: jax.Array | None, name: str | None):
        """Independent dropout key per component: 0 for the trunk, 1 + index per head."""
        if rng is None:
            return None
        index = 0 if name is None else 1 + self.task_names.index(name)
        return jax.random.fold_in(rng, index)

    def init(self, rng: jax.Array, image: jax.Array | Mapping[str, jax.Array]) -> dict[str, PyTree]:
        """Initialises all variables from an example image batch [B, H, W, C], or from one
        example input per task `{task: [B_t, ...]}` (per-task inputs, module docstring).

        With per-task inputs, each stem is built on its task's input and the trunk on the
        first task's (sorted order) trunk input; every other task's trunk input must fit
        those trunk parameters.

        Raises:
          ValueError: naming the task, if a head cannot be built on the representation
            (e.g. an output size the architecture cannot produce), or if a tied module is
            missing from a head, differs between heads or clashes with a trunk name; with
            per-task inputs, if the inputs' tasks are not the model's, a task's trunk input
            does not fit the shared trunk, or a head owns a module named "stem"/"trunk".
        """
        trunk_rng, *head_rngs = jax.random.split(rng, 1 + len(self.heads))
        if isinstance(image, Mapping):
            trunk_vars, features, task_vars = self._init_inputs(trunk_rng, image)
        else:
            self.check_single_input()
            trunk_vars = self.trunk.init(trunk_rng, image, train=False)
            features = self.trunk.apply(trunk_vars, image, train=False)
            task_vars = None
        shared = dict(trunk_vars["params"])
        clash = sorted(set(self.tied) & set(shared))
        if clash:
            raise ValueError(f"tied head modules {clash} clash with trunk parameter names")
        params = {"shared": shared, "tasks": {}}
        stats = {"shared": trunk_vars.get("batch_stats", {}), "tasks": {}}
        for name, head_rng in zip(self.task_names, head_rngs, strict=True):
            task_features = features if task_vars is None else features[name]
            try:
                head_vars = self.heads[name].init(head_rng, task_features, train=False)
            except ValueError as error:
                raise ValueError(f"task {name!r}: {error}") from error
            head_params = dict(head_vars["params"])
            for key in self.tied:
                if key not in head_params:
                    raise ValueError(f"task {name!r}: head has no tied module {key!r}")
                tied_params = head_params.pop(key)
                # The first task (sorted order) initialises the tied weights.
                reference = shared.setdefault(key, tied_params)
                if _shapes(reference) != _shapes(tied_params):
                    raise ValueError(f"task {name!r}: tied module {key!r} differs between heads")
            head_stats = dict(head_vars.get("batch_stats", {}))
            if task_vars is not None:
                own_params, own_stats = task_vars[name]
                for key, tree in (
                    (STEM, head_params),
                    (STEM, head_stats),
                    (TRUNK_STATS, head_stats),
                ):
                    if key in self._reserved(name) and key in tree:
                        raise ValueError(
                            f"task {name!r}: the head has a module named {key!r}, which is "
                            f"where the task's {'stem' if key == STEM else 'trunk statistics'} live"
                        )
                head_params.update(own_params)
                head_stats.update(own_stats)
            params["tasks"][name] = head_params
            stats["tasks"][name] = head_stats
        if task_vars is not None and self.input_bn == "per_task":
            stats["shared"] = {}
        return {"params": params, "batch_stats": stats}

    def _init_inputs(self, rng: jax.Array, inputs: Mapping[str, jax.Array]):
        """Trunk variables, {task: representation} and {task: (own params, own statistics)}
        (the stem's, and the per-task trunk statistics) from one example input per task."""
        check_task_keys(self.task_names, inputs, "inputs")
        stem_rngs = jax.random.split(jax.random.fold_in(rng, 1), len(self.heads))
        trunk_inputs, task_vars = {}, {}
        for name, stem_rng in zip(self.task_names, stem_rngs, strict=True):
            own_params, own_stats = {}, {}
            x = inputs[name]
            if name in self.stems:
                try:
                    stem_vars = self.stems[name].init(stem_rng, x, train=False)
                    x = self.stems[name].apply(stem_vars, x, train=False)
                except (ValueError, TypeError, flax.errors.FlaxError) as error:
                    raise ValueError(f"task {name!r}: its stem: {error}") from error
                own_params[STEM] = dict(stem_vars.get("params", {}))
                own_stats[STEM] = dict(stem_vars.get("batch_stats", {}))
            trunk_inputs[name] = x
            task_vars[name] = (own_params, own_stats)
        first = self.task_names[0]
        trunk_vars = self.trunk.init(rng, trunk_inputs[first], train=False)
        features = {}
        for name in self.task_names:
            try:
                features[name] = self.trunk.apply(trunk_vars, trunk_inputs[name], train=False)
            except (ValueError, TypeError, flax.errors.FlaxError) as error:
                raise ValueError(
                    f"task {name!r}: its trunk input {trunk_inputs[name].shape} does not fit "
                    f"the shared trunk (built on task {first!r}'s, "
                    f"{trunk_inputs[first].shape}): {error}"
                ) from error
            if self.input_bn == "per_task":
                # A copy per task: the train state is donated, and one buffer may not be
                # donated twice.
                task_vars[name][1][TRUNK_STATS] = jax.tree.map(
                    jnp.copy, trunk_vars.get("batch_stats", {})
                )
        return trunk_vars, features, task_vars

    def apply_shared(self, params, batch_stats, image, *, train: bool, rng=None):
        """Trunk forward: returns (representation, updated shared batch statistics)."""
        trunk_params = params
        if self.tied:
            trunk_params = {k: v for k, v in params.items() if k not in self.tied}
        features, stats = _apply(
            self.trunk,
            trunk_params,
            batch_stats,
            image,
            train=train,
            rng=self._stream(rng, None),
            where="the trunk",
        )
        if not self.tied:
            return features, stats
        return {"features": features, "tied": {k: params[k] for k in self.tied}}, stats

    def apply_head(self, name: str, params, batch_stats, rep, *, train: bool, rng=None):
        """Head forward of task `name`: returns (float32 prediction, updated head statistics).

        `params`/`batch_stats` may be the whole task trees: a stem and per-task trunk
        statistics there are left out (`head_part`) and not returned."""
        params, batch_stats = self.head_part(name, params), self.head_part(name, batch_stats)
        if self.tied:
            params = {**params, **rep["tied"]}
            rep = rep["features"]
        pred, stats = _apply(
            self.heads[name],
            params,
            batch_stats,
            rep,
            train=train,
            rng=self._stream(rng, name),
            where=f"the head of task {name!r}",
        )
        return _to_float32(pred), stats

    def apply_stem(self, name: str, params, batch_stats, x, *, train: bool, rng=None):
        """Task `name`'s input stem (identity without one): returns (output, statistics).

        `params`/`batch_stats` are the stem's own (`stem_variables`)."""
        if name not in self.stems:
            return x, batch_stats
        return _apply(
            self.stems[name],
            params,
            batch_stats,
            x,
            train=train,
            rng=rng,
            where=f"the stem of task {name!r}",
        )

    def apply_input(
        self,
        name: str,
        shared_params,
        stem_params,
        trunk_stats,
        stem_stats,
        x,
        *,
        train: bool,
        rng=None,
    ):
        """Task `name`'s own input through its stem and the shared trunk.

        Args:
          name: the task.
          shared_params: `params["shared"]`.
          stem_params: the task's stem parameters (`stem_variables`; `{}` without a stem).
          trunk_stats: the trunk statistics this input uses (`trunk_stats`).
          stem_stats: the stem's statistics.
          x: the task's input [B_t, ...].
          train: BatchNorm (and dropout) mode.
          rng: the step's model key; the task's stem and trunk forward get their own stream.

        Returns:
          (representation, updated trunk statistics, updated stem statistics).
        """
        stream = self._input_stream(rng, name)
        stem_rng = None if stream is None else jax.random.fold_in(stream, 1)
        x, stem_stats = self.apply_stem(name, stem_params, stem_stats, x, train=train, rng=stem_rng)
        rep, trunk_stats = self.apply_shared(shared_params, trunk_stats, x, train=train, rng=stream)
        return rep, trunk_stats, stem_stats

    def apply_inputs(
        self, params, batch_stats, inputs: Mapping[str, jax.Array], *, train: bool, rng=None
    ):
        """Every task's input through its stem and the trunk, in sorted task order.

        Args:
          params: the full `{"shared", "tasks"}` parameters.
          batch_stats: the full `{"shared", "tasks"}` BatchNorm statistics.
          inputs: `{task: [B_t, ...]}`, one input per task (or per task of a non-empty
            subset, e.g. an evaluation batch of one task: only those tasks run).

        Returns:
          ({task: representation}, updated full batch statistics, heads' untouched): with
          `input_bn="shared"` the trunk statistics are threaded through the tasks in
          sorted order, each forward updating the previous one's.
        """
        check_task_keys(self.task_names, inputs, "inputs", subset=True)
        reps = {}
        for name in sorted(inputs):
            reps[name], trunk_out, stem_out = self.apply_input(
                name,
                params["shared"],
                self.stem_variables(name, params["tasks"][name]),
                self.trunk_stats(name, batch_stats),
                self.stem_variables(name, batch_stats["tasks"][name]),
                inputs[name],
                train=train,
                rng=rng,
            )
            batch_stats = self.with_input_stats(name, batch_stats, trunk_out, stem_out)
        return reps, batch_stats

    def with_input_stats(self, name: str, batch_stats, trunk_stats, stem_stats):
        """The full statistics with task `name`'s input forward's trunk and stem statistics
        (from `apply_input`) written back: the trunk's to `batch_stats["shared"]`
        (`input_bn="shared"`) or to the task's own, the stem's to the task's own."""
        shared = batch_stats["shared"]
        own = dict(batch_stats["tasks"][name])
        if self.input_bn == "shared":
            shared = trunk_stats
        else:
            own[TRUNK_STATS] = trunk_stats
        if name in self.stems:
            own[STEM] = stem_stats
        return {"shared": shared, "tasks": {**batch_stats["tasks"], name: own}}

    def apply(self, variables: Mapping[str, PyTree], image, *, train: bool = False, rng=None):
        """Full forward: returns ({task: prediction}, updated batch statistics).

        `image` is one batch for every task, or `{task: [B_t, ...]}` (per-task inputs; the
        predictions are then those of the tasks given, see `apply_inputs`)."""
        params, stats = variables["params"], variables["batch_stats"]
        if isinstance(image, Mapping):
            reps, stats = self.apply_inputs(params, stats, image, train=train, rng=rng)
            preds, task_stats = {}, dict(stats["tasks"])
            for name in sorted(reps):
                preds[name], head_stats = self.apply_head(
                    name,
                    params["tasks"][name],
                    stats["tasks"][name],
                    reps[name],
                    train=train,
                    rng=rng,
                )
                task_stats[name] = {**stats["tasks"][name], **head_stats}
            return preds, {"shared": stats["shared"], "tasks": task_stats}
        self.check_single_input()
        rep, shared_stats = self.apply_shared(
            params["shared"], stats["shared"], image, train=train, rng=rng
        )
        preds, task_stats = {}, {}
        for name in self.task_names:
            preds[name], task_stats[name] = self.apply_head(
                name, params["tasks"][name], stats["tasks"][name], rep, train=train, rng=rng
            )
        return preds, {"shared": shared_stats, "tasks": task_stats}


def check_task_keys(
    names: tuple[str, ...], tree: Mapping[str, Any], what: str, *, subset: bool = False
) -> None:
    """Raises a ValueError naming the task if `tree`'s keys are not exactly `names` (with
    `subset`: a non-empty subset of them)."""
    missing = [name for name in names if name not in tree]
    if missing and not (subset and len(missing) < len(names)):
        raise ValueError(f"{what}: no entry for task {missing[0]!r} (tasks: {list(names)})")
    unknown = sorted(set(tree) - set(names))
    if unknown:
        raise ValueError(f"{what}: entry for unknown task {unknown[0]!r} (tasks: {list(names)})")
