"""Config → objects: the dataset spec, tasks, model, weighting method and optimizer.

Every rule lives once, in the library function that owns the option (`build_model`,
`weighting.create`, `train.check_step_options`, ...); this module calls those and turns
their errors into a `ConfigError` naming the config key. Nothing is compiled.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from optax.contrib import ReduceLROnPlateauState as _PlateauState

from mtl_jax import data, import_path, weighting
from mtl_jax.config import ConfigError, did_you_mean
from mtl_jax.errors import OptionError
from mtl_jax.experiment import task_options
from mtl_jax.models import MultiTaskModel, build_model
from mtl_jax.models.multitask import INPUT_BN
from mtl_jax.tasks import Classification, Task
from mtl_jax.train import check_step_options

SCHEDULES = ("constant", "cosine", "plateau", "step")
OPTIMIZERS = ("adam", "adamw", "sgd")

_POSITIVE_KEYS = (
    "batch_size",
    "eval_batch_size",
    "num_steps",
    "log_every_steps",
    "keep_checkpoints",
)
_NON_NEGATIVE_KEYS = (
    "checkpoint_every_steps",
    "eval_every_steps",
    "max_non_finite_skips",
    "parallel.num_devices",
    "parallel.shard_params_min_size",
    "optimizer.decay_every_steps",
)
# The config key of each option of `build_model` and `check_step_options`.
_MODEL_KEYS = {"dtype": "dtype"}
_STEP_KEYS = {"weighting": "weighting.name"}


def default_data_dir() -> str:
    """`$MTL_JAX_DATA_DIR`, else `~/.cache/mtl_jax/tensorflow_datasets`."""
    return os.environ.get(
        "MTL_JAX_DATA_DIR", str(Path.home() / ".cache" / "mtl_jax" / "tensorflow_datasets")
    )


@dataclasses.dataclass(frozen=True)
class Experiment:
    """The validated pieces of a config.

    Attributes:
      spec: the dataset.
      tasks: the run's tasks by name, `config.task_options` applied.
      model: the model.
      weighting: the weighting method.
      tx: the optimizer.
      augment: the training augmentation `config.dataset.augment` selects (or None).
      task_options: the effective `config.task_options`, `{task: {field: value}}` as
        JSON values, with the values computed from the train split filled in (before
        the data is loaded they read "balanced" / "train"). For results.json.
      class_counts: `{task: [n_c]}`, the train-split class counts the tasks' options and
        the sampler were computed from (labels equal to the ignore label not counted);
        empty before the data is loaded or when nothing needs them.
      counted_tasks: the tasks whose train-split class counts the config needs, for
        their options or the sampler (`class_counts`' keys once the data is loaded).
    """

    spec: data.DatasetSpec
    tasks: dict[str, Task]
    model: MultiTaskModel
    weighting: weighting.Weighting
    tx: optax.GradientTransformation
    augment: data.pipeline.Augment | None = None
    task_options: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    class_counts: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    counted_tasks: tuple[str, ...] = ()

    @property
    def task_names(self) -> tuple[str, ...]:
        return self.model.task_names


def _choice(value: str, valid, key: str) -> str:
    if value not in valid:
        raise ConfigError(f"config key {key!r}: unknown value {value!r}; valid: {sorted(valid)}")
    return value


def _get(config: ml_collections.ConfigDict, key: str):
    node = config
    for part in key.split("."):
        node = node[part]
    return node


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
    """The learning rate of `config.optimizer` as a function of the step.

    For `schedule="plateau"` this is the constant base rate: the rate an update uses is
    that times the plateau scale in the optimizer state (`plateau_scale`)."""
    opt = config.optimizer
    _choice(opt.schedule, SCHEDULES, "optimizer.schedule")
    if not opt.learning_rate > 0:
        raise ConfigError(
            f"config key 'optimizer.learning_rate' must be > 0, got {opt.learning_rate}"
        )
    if opt.schedule in ("constant", "plateau"):
        return optax.constant_schedule(opt.learning_rate)
    if opt.schedule == "step":
        # The MTAN protocol's StepLR: multiply by `decay_factor` every `decay_every_steps`.
        if opt.decay_every_steps < 1 or not 0 < opt.decay_factor <= 1:
            raise ConfigError(
                "schedule 'step' needs optimizer.decay_every_steps >= 1 and "
                f"0 < optimizer.decay_factor <= 1, got {opt.decay_every_steps}, "
                f"{opt.decay_factor}"
            )
        return optax.exponential_decay(
            opt.learning_rate,
            transition_steps=opt.decay_every_steps,
            decay_rate=opt.decay_factor,
            staircase=True,
        )
    warmup = max(opt.warmup_steps, 1)
    return optax.warmup_cosine_decay_schedule(
        0.0,
        opt.learning_rate,
        warmup_steps=warmup,
        decay_steps=max(config.num_steps, warmup + 1),
        end_value=opt.learning_rate * opt.final_lr_fraction,
    )


def _plateau(opt: ml_collections.ConfigDict) -> optax.GradientTransformationExtraArgs:
    """`optax.contrib.reduce_on_plateau` of the `optimizer.plateau_*` keys."""
    integers = {
        "optimizer.plateau_patience": (opt.plateau_patience, 1),
        "optimizer.plateau_cooldown": (opt.plateau_cooldown, 0),
        "optimizer.plateau_accumulation_steps": (opt.plateau_accumulation_steps, 1),
    }
    for key, (value, least) in integers.items():
        if value < least:
            raise ConfigError(f"config key {key!r} must be >= {least}, got {value}")
    if not 0 < opt.plateau_factor < 1:
        raise ConfigError(
            f"config key 'optimizer.plateau_factor' must be in (0, 1), got {opt.plateau_factor}"
        )
    if not 0 < opt.plateau_rtol <= 1:
        raise ConfigError(
            f"config key 'optimizer.plateau_rtol' must be in (0, 1], got {opt.plateau_rtol}"
        )
    plateau = optax.contrib.reduce_on_plateau(
        factor=opt.plateau_factor,
        patience=opt.plateau_patience,
        rtol=opt.plateau_rtol,
        cooldown=opt.plateau_cooldown,
        accumulation_size=opt.plateau_accumulation_steps,
    )

    def init(params) -> _PlateauState:
        # optax starts `best_value` at inf, which the train step's guard would take for
        # a failed step (`parallel.finite_flags` checks the optimizer state); the largest
        # finite value is beaten by every finite first window alike.
        state = plateau.init(params)
        best = jnp.full_like(state.best_value, jnp.finfo(state.best_value.dtype).max)
        return state._replace(best_value=best)

    return optax.GradientTransformationExtraArgs(init, plateau.update)


def monitors_loss(config: ml_collections.ConfigDict) -> bool:
    """Whether the optimizer of `config` reads the training loss (`tx.update(...,
    value=)`): the `plateau` schedule."""
    return config.optimizer.schedule == "plateau"


def plateau_scale(opt_state: Any) -> jax.Array | None:
    """The learning-rate scale of the `reduce_on_plateau` state in `opt_state` (what the
    update of the step that produced `opt_state` multiplied the base rate by), or None
    when the optimizer has none."""
    found = [
        s
        for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, _PlateauState))
        if isinstance(s, _PlateauState)
    ]
    return found[0].scale if found else None


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """The optax transformation of `config.optimizer` over `config.num_steps` steps.

    `[clip_by_global_norm(clip_global_norm)] → [add_decayed_weights(weight_decay)] →
    optimizer(learning rate) → [reduce_on_plateau]`: `weight_decay` is decoupled for
    `adamw` (inside optax's adamw) and an L2 term added to the gradient for `adam` and
    `sgd`, as torch.optim.Adam / SGD's `weight_decay` (after clipping, as torch's
    `clip_grad_norm_` before `step()`). Without clipping, decay and plateau the bare
    optimizer, so that its
    state has the structure of runs saved before these options existed. The plateau
    transformation scales the optimizer's update, i.e. its learning rate (weight decay of
    `adamw` included, as PyTorch's ReduceLROnPlateau does); it needs `value=` in
    `tx.update` (`monitors_loss`), which the train step passes as `Σ_t L_t`.
    """
    opt = config.optimizer
    _choice(opt.name, OPTIMIZERS, "optimizer.name")
    lr = learning_rate_schedule(config)
    clip = opt.clip_global_norm
    if not clip >= 0:
        raise ConfigError(
            f"config key 'optimizer.clip_global_norm' must be >= 0 (0 = off), got {clip}"
        )
    if not opt.weight_decay >= 0:
        raise ConfigError(
            f"config key 'optimizer.weight_decay' must be >= 0 (0 = off), got {opt.weight_decay}"
        )
    if opt.name == "adam":
        tx = optax.adam(lr)
    elif opt.name == "adamw":
        tx = optax.adamw(lr, weight_decay=opt.weight_decay)
    else:
        tx = optax.sgd(lr, momentum=opt.momentum or None)
    parts = [tx]
    if opt.weight_decay > 0 and opt.name != "adamw":
        # L2 as torch.optim.Adam / SGD's `weight_decay`: `g + wd·θ` enters the optimizer.
        parts.insert(0, optax.add_decayed_weights(opt.weight_decay))
    if clip > 0:
        parts.insert(0, optax.clip_by_global_norm(clip))
    if opt.schedule == "plateau":
        parts.append(_plateau(opt))
    return tx if len(parts) == 1 else optax.chain(*parts)


def _build_model(
    config: ml_collections.ConfigDict, tasks: Mapping[str, Task], *, multi_input: bool
) -> MultiTaskModel:
    """The model of `config`, with `model.input_bn` for a multi-input dataset."""
    model = _model_of(config, tasks)
    input_bn = config.model.input_bn
    if input_bn not in INPUT_BN:
        raise ConfigError(
            f"config key 'model.input_bn': unknown value {input_bn!r}; valid: {list(INPUT_BN)}"
        )
    if input_bn == model.input_bn:
        return model
    if not multi_input:
        raise ConfigError(
            f"config key 'model.input_bn' is {input_bn!r}, but dataset "
            f"{config.dataset.name!r} has one input for every task (the option is for "
            "multi-input datasets; leave it 'shared')"
        )
    return dataclasses.replace(model, input_bn=input_bn)


def _model_of(config: ml_collections.ConfigDict, tasks: Mapping[str, Task]) -> MultiTaskModel:
    """The model of `config.model`: a built-in trunk and architecture, or a user's model
    builder `builder(tasks, *, dtype) -> MultiTaskModel` named by import path in
    `model.trunk` (then `model.architecture` stays "hps": the builder makes the heads;
    it may give tasks their own input stems, `MultiTaskModel.stems`)."""
    model = config.model
    if import_path.is_import_path(model.trunk):
        if model.architecture != "hps":
            raise ConfigError(
                f"config key 'model.architecture': {model.architecture!r} composes built-in "
                f"trunks; the user model {model.trunk!r} builds its own heads (leave 'hps')"
            )
        try:
            builder = import_path.load(model.trunk, what="model builder")
            built = builder(tasks, dtype=config.dtype)
        except (ValueError, TypeError) as error:
            raise ConfigError(f"config key 'model.trunk': {error}") from error
        if not isinstance(built, MultiTaskModel):
            raise ConfigError(
                f"config key 'model.trunk': {model.trunk!r} returned {type(built).__name__}, "
                "not a mtl_jax.models.MultiTaskModel"
            )
        return built
    try:
        return build_model(
            model.trunk,
            tasks,
            architecture=model.architecture,
            head_hidden=model.head_hidden,
            dense_head_hidden=model.dense_head_hidden,
            dtype=config.dtype,
            width_multiplier=model.width_multiplier,
            num_experts=model.num_experts,
            aspp_dropout=model.aspp_dropout,
            num_shared_experts=model.num_shared_experts,
            num_task_experts=model.num_task_experts,
            ple_levels=model.ple_levels,
            dselect_k=model.dselect_k,
            dselect_gamma=model.dselect_gamma,
            ltb_levels=model.ltb_levels,
            ltb_temperature=model.ltb_temperature,
        )
    except OptionError as error:
        key = _MODEL_KEYS.get(error.option, f"model.{error.option}")
        raise ConfigError(f"config key {key!r}: {error}") from error
    except ValueError as error:
        raise ConfigError(f"config key 'model': {error}") from error


def dataset_spec(name: str) -> data.DatasetSpec:
    """The dataset `config.dataset.name` names: a built-in (`data.DATASETS`) or a user's
    `DatasetSpec` by import path."""
    if import_path.is_import_path(name):
        try:
            spec = import_path.load(name, what="dataset")
        except ValueError as error:
            raise ConfigError(f"config key 'dataset.name': {error}") from error
        if not isinstance(spec, data.DatasetSpec):
            raise ConfigError(
                f"config key 'dataset.name': {name!r} is a {type(spec).__name__}, not a "
                "mtl_jax.data.DatasetSpec"
            )
        return spec
    if name not in data.DATASETS:
        raise ConfigError(
            "config key 'dataset.name': "
            + import_path.unknown_name(name, data.DATASETS, what="dataset")
        )
    return data.DATASETS[name]


def _check_sampler(
    config: ml_collections.ConfigDict, tasks: Mapping[str, Task], spec: data.DatasetSpec
) -> None:
    sampler = _choice(config.dataset.sampler, data.SAMPLERS, "dataset.sampler")
    task = config.dataset.sampler_task
    if spec.multi_input and sampler != data.pipeline.UNIFORM:
        raise ConfigError(
            f"config key 'dataset.sampler': {sampler!r} is not available for the multi-input "
            f"dataset {config.dataset.name!r} (each task's examples are cycled, "
            "mtl_jax.data.multi_input); use 'uniform'"
        )
    if sampler == data.pipeline.UNIFORM:
        if task:
            raise ConfigError(
                f"config key 'dataset.sampler_task' is {task!r}, but sampler 'uniform' "
                "balances no task (leave it '' or choose another dataset.sampler)"
            )
        return
    valid = sorted(n for n, t in tasks.items() if isinstance(t, Classification))
    if task not in valid:
        raise ConfigError(
            f"config key 'dataset.sampler_task': sampler {sampler!r} re-balances the classes "
            f"of a Classification task of the run; got {task!r}, valid: {valid}"
            + did_you_mean(task, valid)
        )


def needs_steps_per_epoch(config: ml_collections.ConfigDict) -> bool:
    """Whether the method counts epochs (DWA, STCH) and the config leaves the length to us."""
    try:
        factory = weighting.factory(config.weighting.name)
    except ValueError as error:
        raise ConfigError(f"config key 'weighting.name': {error}") from error
    return (
        "steps_per_epoch" in inspect.signature(factory).parameters
        and "steps_per_epoch" not in config.weighting.kwargs
    )


def pipeline_options(config: ml_collections.ConfigDict) -> tuple[int, int]:
    """`(grain threads, batches prefetched to the devices)` of `config.pipeline`, with
    `-1` (auto) resolved for the backend: on a CPU both are 0 (the host threads would take
    cores from XLA's own: measured in `benchmarks/results/README.md`), on an accelerator
    `min(8, CPUs)` threads and 2 batches ahead.

    Raises:
      ConfigError: naming the key, for a value below -1.
    """
    on_cpu = jax.default_backend() == "cpu"
    auto = {
        "num_threads": 0 if on_cpu else min(8, os.cpu_count() or 1),
        "prefetch_to_device": 0 if on_cpu else 2,
    }
    values = []
    for key, default in auto.items():
        value = config.pipeline[key]
        if value < -1:
            raise ConfigError(f"config key 'pipeline.{key}' is {value}; use -1 (auto) or >= 0")
        values.append(default if value == -1 else value)
    return values[0], values[1]


def step_options(config: ml_collections.ConfigDict) -> dict:
    """The keyword options of `make_train_step` that the config sets."""
    w = config.weighting
    return {
        "rep_grad": w.rep_grad,
        "head_grads": w.head_grads,
        "jacobian_strategy": w.jacobian_strategy,
        "jacobian_chunk_size": w.jacobian_chunk_size or None,
        "loss_value": monitors_loss(config),
    }


def build_experiment(
    config: ml_collections.ConfigDict,
    *,
    steps_per_epoch: int | None = None,
    class_counts: Mapping[str, Sequence[int]] | None = None,
) -> Experiment:
    """Validates `config` and builds its pieces; nothing is compiled.

    Methods that count epochs (`dwa`, `stch`) get `steps_per_epoch` — the number of full
    training batches per epoch — unless the config sets it under `weighting.kwargs`
    (before the data is loaded, a placeholder of 1 validates the other options).
    `weighting.name`, `model.trunk` and `dataset.name` may name a user's own method, model
    builder or `DatasetSpec` by import path (`"package.module:name"`).

    `config.task_options` (`{task: {field: value}}`) replaces fields of the dataset's
    tasks (`dataclasses.replace`; the task validates them). Two values come from the
    train split's class counts `class_counts` (`{task: [n_c]}`, labels equal to the
    ignore label not counted): `class_weights="balanced"` (`balanced_class_weights`)
    and `class_prior="train"` (`class_frequencies`), which is also what `loss_type`
    "logit_adjusted" or "balanced_softmax" gets when the task has no prior. Without
    `class_counts` (before the data is loaded), placeholders validate the other options;
    `mtl_jax.experiment.run_data.with_train_data` rebuilds with the counts. The model
    does not depend on these options.

    Raises:
      ConfigError: naming the key and the valid choices, for any invalid setting.
      ValueError: `class_counts` lacks a task whose counts the config needs.
    """
    spec = dataset_spec(config.dataset.name)
    available = spec.tasks()
    requested = [t.strip() for t in config.tasks.split(",") if t.strip()]
    if not requested or len(set(requested)) != len(requested):
        raise ConfigError(f"config key 'tasks' must list distinct task names, got {config.tasks!r}")
    unknown = sorted(set(requested) - set(available))
    if unknown:
        raise ConfigError(
            f"config key 'tasks': {unknown} not provided by dataset {config.dataset.name!r}; "
            f"requested {sorted(requested)}, available {sorted(available)}"
        )
    tasks = {name: available[name] for name in sorted(requested)}
    tasks, effective, counted = task_options.apply_task_options(config, tasks, class_counts)
    _check_sampler(config, tasks, spec)
    pipeline_options(config)
    try:
        augment = spec.choose_augment(config.dataset.augment)
    except ValueError as error:
        raise ConfigError(f"config key 'dataset.augment': {error}") from error
    kwargs = config.weighting.kwargs.to_dict()
    if needs_steps_per_epoch(config):  # also checks the name
        kwargs["steps_per_epoch"] = steps_per_epoch or 1
    try:
        method = weighting.create(config.weighting.name, **kwargs)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"config key 'weighting': {error}") from error
    try:
        check_step_options(method, **step_options(config))
    except OptionError as error:
        key = _STEP_KEYS.get(error.option, f"weighting.{error.option}")
        raise ConfigError(
            f"config key {key!r} (method {config.weighting.name!r}): {error}"
        ) from error
    if config.select_split == "test":
        raise ConfigError(
            "config key 'select_split': choosing the evaluation on the test split is not "
            "allowed (BENCHMARKS.md); use a validation split"
        )
    for key in _POSITIVE_KEYS:
        if _get(config, key) < 1:
            raise ConfigError(f"config key {key!r} must be >= 1, got {_get(config, key)}")
    for key in _NON_NEGATIVE_KEYS:
        if _get(config, key) < 0:
            raise ConfigError(f"config key {key!r} must be >= 0, got {_get(config, key)}")
    every = config.conflict_every_steps
    if every < 0 or every % config.log_every_steps:
        raise ConfigError(
            "config key 'conflict_every_steps' must be 0 (off) or a multiple of "
            f"log_every_steps ({config.log_every_steps}), got {every}"
        )
    if every and (spec.multi_input or method.batches > 1):
        raise ConfigError(
            "config key 'conflict_every_steps': the per-layer conflict diagnostics take one "
            "image batch for every task and one batch per step; "
            + (
                f"dataset {config.dataset.name!r} has per-task inputs"
                if spec.multi_input
                else f"method {config.weighting.name!r} takes {method.batches} batches per step"
            )
            + " (set it to 0)"
        )
    if every and len(tasks) < 2:
        raise ConfigError(
            "config key 'conflict_every_steps': the gradient conflict needs two tasks or more, "
            f"the config has {sorted(tasks)}"
        )
    if not method.needs_row:
        try:
            method.init(tuple(tasks))
        except ValueError as error:
            raise ConfigError(f"config key 'weighting': {error}") from error
    model = _build_model(config, tasks, multi_input=spec.multi_input)
    if config.dataset.sampler != data.pipeline.UNIFORM:
        counted = tuple(sorted({*counted, config.dataset.sampler_task}))
    used_counts = {}
    if class_counts is not None:
        used_counts = {
            name: [int(c) for c in task_options.counts_of(class_counts, name)] for name in counted
        }
    return Experiment(
        spec,
        tasks,
        model,
        method,
        make_optimizer(config),
        augment=augment,
        task_options=effective,
        class_counts=used_counts,
        counted_tasks=counted,
    )
