"""`train_and_evaluate(config, workdir)`: one experiment from a config, end to end, resumable.

Every check of the config, the workdir and the data happens before anything is compiled.
Training runs data-parallel on a mesh of all devices (`mtl_jax.parallel`), checkpoints the
whole `TrainState` and the data iterator's position (`mtl_jax.checkpointing`), and logs one
JSON line per logged step and per evaluation to `metrics.jsonl`. Rerunning the same
config in the same workdir resumes from the latest complete checkpoint and reproduces
the uninterrupted run bit for bit on the same machine and device count (see the README's
"Guarantees" section).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import flax.serialization
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.experimental import multihost_utils
from tqdm import tqdm

from mtl_jax import data, parallel, provenance, weighting
from mtl_jax import workdir as wd
from mtl_jax.checkpointing import Checkpointer
from mtl_jax.config import ConfigError
from mtl_jax.jacobian import STRATEGIES
from mtl_jax.models import ARCHITECTURES, TRUNKS, MultiTaskModel, build_model
from mtl_jax.tasks import Task
from mtl_jax.train import HEAD_GRADS, TrainState, create_train_state, evaluate, make_eval_step

SCHEDULES = ("constant", "cosine", "step")
OPTIMIZERS = ("adam", "adamw", "sgd")
# Activation dtypes; parameters, optimizer state, losses and Gramians stay float32.
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

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
    "weighting.jacobian_chunk_size",
    "optimizer.decay_every_steps",
)


class NonFiniteError(FloatingPointError):
    """Training stopped on a non-finite loss, gradient or state (after logging the step)."""


class Preempted(Exception):
    """Training stopped on SIGTERM after saving a checkpoint of `step`."""

    def __init__(self, step: int, path: str):
        super().__init__(f"stopped by SIGTERM after saving the checkpoint of step {step} ({path})")
        self.step = step


def default_data_dir() -> str:
    """`$MTL_JAX_DATA_DIR`, else `~/.cache/mtl_jax/tensorflow_datasets`."""
    return os.environ.get(
        "MTL_JAX_DATA_DIR", str(Path.home() / ".cache" / "mtl_jax" / "tensorflow_datasets")
    )


@dataclasses.dataclass(frozen=True)
class Experiment:
    """The validated pieces of a config."""

    spec: data.DatasetSpec
    tasks: dict[str, Task]
    model: MultiTaskModel
    weighting: weighting.Weighting
    tx: optax.GradientTransformation

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


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """The optax transformation of `config.optimizer` over `config.num_steps` steps."""
    opt = config.optimizer
    _choice(opt.name, OPTIMIZERS, "optimizer.name")
    _choice(opt.schedule, SCHEDULES, "optimizer.schedule")
    if not opt.learning_rate > 0:
        raise ConfigError(
            f"config key 'optimizer.learning_rate' must be > 0, got {opt.learning_rate}"
        )
    if opt.schedule == "constant":
        lr = optax.constant_schedule(opt.learning_rate)
    elif opt.schedule == "step":
        # The MTAN protocol's StepLR: multiply by `decay_factor` every `decay_every_steps`.
        if opt.decay_every_steps < 1 or not 0 < opt.decay_factor <= 1:
            raise ConfigError(
                "schedule 'step' needs optimizer.decay_every_steps >= 1 and "
                f"0 < optimizer.decay_factor <= 1, got {opt.decay_every_steps}, "
                f"{opt.decay_factor}"
            )
        lr = optax.exponential_decay(
            opt.learning_rate,
            transition_steps=opt.decay_every_steps,
            decay_rate=opt.decay_factor,
            staircase=True,
        )
    else:
        lr = optax.warmup_cosine_decay_schedule(
            0.0,
            opt.learning_rate,
            warmup_steps=max(opt.warmup_steps, 1),
            decay_steps=max(config.num_steps, opt.warmup_steps + 1),
            end_value=opt.learning_rate * opt.final_lr_fraction,
        )
    if opt.name == "adam":
        return optax.adam(lr)
    if opt.name == "adamw":
        return optax.adamw(lr, weight_decay=opt.weight_decay)
    return optax.sgd(lr, momentum=opt.momentum or None)


def _build_model(config: ml_collections.ConfigDict, tasks: Mapping[str, Task]) -> MultiTaskModel:
    model = config.model
    _choice(model.trunk, TRUNKS, "model.trunk")
    _choice(model.architecture, ARCHITECTURES, "model.architecture")
    try:
        return build_model(
            model.trunk,
            tasks,
            architecture=model.architecture,
            head_hidden=model.head_hidden,
            dense_head_hidden=model.dense_head_hidden,
            dtype=COMPUTE_DTYPES[config.dtype],
            width_multiplier=model.width_multiplier,
            num_experts=model.num_experts,
            aspp_dropout=model.aspp_dropout,
        )
    except ValueError as error:
        raise ConfigError(f"config key 'model': {error}") from error


def _needs_steps_per_epoch(config: ml_collections.ConfigDict) -> bool:
    """Whether the method counts epochs (DWA, STCH) and the config leaves the length to us."""
    factory = getattr(weighting, config.weighting.name, None)
    return (
        config.weighting.name in weighting.METHODS
        and "steps_per_epoch" in inspect.signature(factory).parameters
        and "steps_per_epoch" not in config.weighting.kwargs
    )


def build_experiment(
    config: ml_collections.ConfigDict, *, steps_per_epoch: int | None = None
) -> Experiment:
    """Validates `config` and builds its pieces; nothing is compiled.

    Methods that count epochs (`dwa`, `stch`) get `steps_per_epoch` — the number of full
    training batches per epoch — unless the config sets it under `weighting.kwargs`
    (before the data is loaded, a placeholder of 1 validates the other options).

    Raises:
      ConfigError: naming the key and the valid choices, for any invalid setting.
    """
    spec = data.DATASETS.get(config.dataset.name)
    if spec is None:
        raise ConfigError(
            f"config key 'dataset.name': unknown dataset {config.dataset.name!r}; "
            f"valid: {sorted(data.DATASETS)}"
        )
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
    _choice(config.dtype, COMPUTE_DTYPES, "dtype")
    _choice(config.weighting.head_grads, HEAD_GRADS, "weighting.head_grads")
    _choice(config.weighting.jacobian_strategy, STRATEGIES, "weighting.jacobian_strategy")
    try:
        kwargs = config.weighting.kwargs.to_dict()
        if _needs_steps_per_epoch(config):
            kwargs["steps_per_epoch"] = steps_per_epoch or 1
        method = weighting.create(config.weighting.name, **kwargs)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"config key 'weighting': {error}") from error
    if config.weighting.rep_grad and method.kind == weighting.LOSS:
        raise ConfigError(
            f"config key 'weighting.rep_grad': method {config.weighting.name!r} does not use "
            "per-task gradients"
        )
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
    if config.weighting.rep_grad and method.blocks != "whole":
        raise ConfigError(
            f"config key 'weighting.rep_grad': method {config.weighting.name!r} with blocks="
            f"{method.blocks!r} partitions the shared parameters; it needs parameter mode"
        )
    if not method.needs_row:
        try:
            method.init(tuple(tasks))
        except ValueError as error:
            raise ConfigError(f"config key 'weighting': {error}") from error
    model = _build_model(config, tasks)
    return Experiment(spec, tasks, model, method, make_optimizer(config))


def check_data(
    builder, splits: Mapping[str, Mapping[str, np.ndarray]], exp: Experiment
) -> tuple[int, ...]:
    """Checks the loaded splits against the dataset's declared features and the model,
    by tracing only (nothing is compiled). Returns the image shape [H, W, C].

    Raises:
      ValueError: naming the split, task and shapes or dtypes, for an empty split, images
        that are not uint8 [N, H, W, C] of the declared shape, a task with no targets or
        too few, targets of the wrong shape or out of range (`Task.check_targets`), or
        model predictions whose shape differs from the task's.
    """
    if isinstance(builder, data.DatasetSource):
        declared_shape, location = tuple(builder.image_shape), builder.location
    else:
        declared_shape = tuple(builder.info.features["image"].shape)
        location = builder.data_dir
    image_shape = None
    for split, arrays in splits.items():
        missing = sorted(set(exp.task_names) - set(arrays))
        if missing:
            raise ValueError(
                f"{split} split of {builder.name!r} has no targets for task(s) {missing}; "
                f"model tasks {sorted(exp.task_names)}, data features {sorted(arrays)}"
            )
        image = arrays["image"]
        if len(image) == 0:
            raise ValueError(f"{split} split of {builder.name!r} is empty")
        if image.dtype != np.uint8 or image.ndim != 4:
            raise ValueError(
                f"{split} split of {builder.name!r}: images are {image.dtype} with shape "
                f"{image.shape}, expected uint8 [N, H, W, C]"
            )
        if tuple(image.shape[1:]) != declared_shape:
            raise ValueError(
                f"{split} split of {builder.name!r}: images have shape {tuple(image.shape[1:])}, "
                f"the dataset declares {declared_shape} (a stale build? delete "
                f"{location!r} to rebuild it)"
            )
        image_shape = tuple(image.shape[1:])
        for name, task in exp.tasks.items():
            if len(arrays[name]) != len(image):
                raise ValueError(
                    f"{split} split: task {name!r} has {len(arrays[name])} targets for "
                    f"{len(image)} images"
                )
            try:
                task.check_targets(arrays[name])
            except ValueError as error:
                raise ValueError(f"{split} split: {error}") from error
    example = jax.ShapeDtypeStruct((2, *image_shape), jnp.float32)
    try:
        preds = jax.eval_shape(
            lambda x: exp.model.apply(exp.model.init(jax.random.PRNGKey(0), x), x)[0], example
        )
    except Exception as error:
        raise ValueError(
            f"the model cannot take images of shape {image_shape}: {type(error).__name__}: {error}"
        ) from error
    for name, task in exp.tasks.items():
        if tuple(preds[name].shape[1:]) != tuple(task.output_shape):
            raise ValueError(
                f"task {name!r}: the model predicts shape {tuple(preds[name].shape[1:])} per "
                f"example on {image_shape} images, the task needs {tuple(task.output_shape)}"
            )
    return image_shape


def _record(step: int, metrics: Mapping[str, Any], names) -> dict:
    """One metrics.jsonl line: per-task vectors become {task: value} mappings."""
    record: dict[str, Any] = {"step": step}
    for key, value in metrics.items():
        value = np.asarray(value)
        if value.ndim == 1 and value.shape[0] == len(names):
            record[key] = {n: float(v) for n, v in zip(names, value, strict=True)}
        else:
            record[key] = value.tolist()
    return record


def format_results(results: Mapping[str, float]) -> str:
    """A per-task table of `{"<task>/<metric>": value}`."""
    rows: dict[str, dict[str, float]] = {}
    for key, value in results.items():
        task, metric = key.split("/", 1)
        rows.setdefault(task, {})[metric] = value
    lines = [f"{'task':<12} metrics"]
    for task in sorted(rows):
        cells = "  ".join(f"{m}={v:.4f}" for m, v in sorted(rows[task].items()))
        lines.append(f"{task:<12} {cells}")
    return "\n".join(lines)


class _StopFlag:
    """Set by SIGTERM; the loop checks it between steps."""

    def __init__(self):
        self.set = False


@contextlib.contextmanager
def _sigterm_flag() -> Iterator[_StopFlag]:
    flag = _StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag  # signal handlers can only be installed from the main thread
        return

    def handler(signum, frame):
        del signum, frame
        flag.set = True

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGTERM, previous)


def _note(message: str) -> None:
    if jax.process_index() == 0:
        print(message, file=sys.stderr, flush=True)


def _non_finite_message(step: int, names, per_task) -> str:
    bad = [n for n, ok in zip(names, per_task, strict=True) if not ok]
    if bad:
        return f"non-finite loss or gradient for task(s) {bad} at step {step}"
    return (
        f"non-finite update of the shared parameters, optimizer or weighting state at step "
        f"{step} (every task's loss and gradient norm is finite)"
    )


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    *,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Trains `config` for `config.num_steps` steps in `workdir`, evaluates, saves.

    A workdir holding an unfinished run of the same config is resumed from its latest
    complete checkpoint; one holding a finished run returns its saved results.

    Returns:
      The contents written to `results.json`.

    Raises:
      ConfigError, ValueError, FileNotFoundError: invalid config, workdir or data (before
        any compilation; the message names the key, path, task or shape).
      CheckpointError: the latest checkpoint cannot be restored (naming its path).
      NonFiniteError: a step produced a non-finite value (after logging it; the last
        checkpoint is kept).
      Preempted: SIGTERM arrived; a checkpoint of the current step was written first.
    """
    with _sigterm_flag() as stop:
        return _train_and_evaluate(config, Path(workdir), stop, progress, overwrite)


@dataclasses.dataclass
class _Run:
    """One training run in a workdir: everything validated, nothing compiled yet."""

    config: ml_collections.ConfigDict
    workdir: Path
    exp: Experiment
    builder: Any
    splits: dict[str, dict[str, np.ndarray]]
    image_shape: tuple[int, ...]
    mesh: jax.sharding.Mesh

    @property
    def writer(self) -> bool:
        """Only process 0 writes the workdir's files (orbax coordinates checkpoints)."""
        return jax.process_index() == 0

    @property
    def step_options(self) -> dict[str, Any]:
        w = self.config.weighting
        return {
            "rep_grad": w.rep_grad,
            "head_grads": w.head_grads,
            "jacobian_strategy": w.jacobian_strategy,
            "jacobian_chunk_size": w.jacobian_chunk_size or None,
        }

    def init_state(self, image: jax.Array) -> TrainState:
        return create_train_state(
            self.exp.model,
            self.exp.tx,
            self.exp.weighting,
            image,
            seed=self.config.seed,
            rep_grad=self.config.weighting.rep_grad,
        )

    def evaluation(self, eval_step, state: TrainState, step: int) -> dict[str, Any]:
        """One entry of results.json's `evals`: the test metrics and, with
        `config.select_split`, that split's metrics (for choosing an evaluation)."""
        select = None
        if self.config.select_split:
            select = self.evaluate(eval_step, state, self.config.select_split)
        return _eval_entry(step, self.evaluate(eval_step, state), select)

    def evaluate(self, eval_step, state: TrainState, split: str = "test") -> dict[str, float]:
        """Metrics of `state` on `split`, batches split over the mesh."""
        batches = data.eval_batches(
            self.splits[split], self.exp.task_names, batch_size=self.config.eval_batch_size
        )
        return evaluate(
            eval_step,
            state.params,
            state.batch_stats,
            (parallel.shard_batch(b, self.mesh) for b in batches),
            self.exp.tasks,
        )


def _eval_entry(step: int, metrics: dict, select: dict | None) -> dict[str, Any]:
    entry = {"step": step, "metrics": metrics}
    if select is not None:
        entry["select"] = select
    return entry


def _eval_record(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The metrics.jsonl line of an evaluation entry."""
    record = {"step": entry["step"], "eval": entry["metrics"]}
    if "select" in entry:
        record["select_eval"] = entry["select"]
    return record


def _prepare(
    config: ml_collections.ConfigDict, exp: Experiment, workdir: Path, status: str
) -> _Run:
    """Loads and checks the data and the device mesh (no compilation)."""
    builder = data.prepare(
        exp.spec,
        config=config.dataset.config,
        data_dir=config.dataset.data_dir or default_data_dir(),
    )
    names = ("train", "test", *([config.select_split] if config.select_split else []))
    splits = {split: data.load_split(builder, split) for split in names}
    image_shape = check_data(builder, splits, exp)
    mesh = parallel.make_mesh(config.parallel.num_devices)
    devices = mesh.shape[parallel.DATA_AXIS]
    for key in ("batch_size", "eval_batch_size"):
        if config[key] % devices:
            raise ConfigError(
                f"config key {key!r} is {config[key]}, not divisible by the {devices} devices "
                "it is split over"
            )
    if jax.process_index() == 0 and status == wd.NEW:
        wd.start_workdir(workdir, config)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("mtl_jax workdir ready")
    return _Run(config, workdir, exp, builder, splits, image_shape, mesh)


def _train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: Path,
    stop: _StopFlag,
    progress: bool,
    overwrite: bool,
) -> dict[str, Any]:
    start = time.perf_counter()
    exp = build_experiment(config)  # config errors first, before the workdir is looked at
    status = wd.inspect_workdir(workdir, config, overwrite=overwrite)
    if status == wd.FINISHED:
        _note(f"workdir {str(workdir)!r} holds this run, finished; nothing to do")
        return json.loads((workdir / wd.RESULTS_FILE).read_text())
    run = _prepare(config, exp, workdir, status)
    if _needs_steps_per_epoch(config):
        steps_per_epoch = max(len(run.splits["train"]["image"]) // config.batch_size, 1)
        _note(f"{config.weighting.name}: {steps_per_epoch} steps per epoch")
        run = dataclasses.replace(
            run, exp=build_experiment(config, steps_per_epoch=steps_per_epoch)
        )
    names = run.exp.task_names
    train_iter = data.train_batches(
        run.splits["train"],
        names,
        batch_size=config.batch_size,
        seed=config.seed,
        augment=run.exp.spec.augment,
    )
    example = jax.ShapeDtypeStruct((config.batch_size, *run.image_shape), jnp.float32)
    abstract = jax.eval_shape(run.init_state, example)
    shardings = parallel.state_shardings(
        abstract, run.mesh, min_size=config.parallel.shard_params_min_size
    )
    abstract = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
    )
    checkpointer = Checkpointer(workdir / wd.CHECKPOINT_DIR, max_to_keep=config.keep_checkpoints)
    metrics_path = workdir / wd.METRICS_FILE
    try:
        # Restore (the state, the data position, the skip count) or start from step 0.
        latest = checkpointer.latest_step()
        skips = 0
        if latest is None:
            if status == wd.RESUME:
                _note(f"no complete checkpoint in {str(checkpointer.directory)!r}: from step 0")
            state = jax.jit(run.init_state, out_shardings=shardings)(
                np.zeros(example.shape, example.dtype)
            )
        else:
            state, meta = checkpointer.restore(latest, abstract)
            train_iter.set_state(meta["data_iterator"])
            skips = meta["non_finite_skips"]
            _note(f"resuming from {str(checkpointer.step_directory(latest))!r}")
        first = (latest or 0) + 1
        # Records past the checkpoint are written again, identically, by this run.
        kept = [r for r in wd.read_metrics(metrics_path) if r["step"] < first]
        if run.writer:
            wd.write_metrics(metrics_path, kept)
        evals = [
            _eval_entry(r["step"], r["eval"], r.get("select_eval")) for r in kept if "eval" in r
        ]

        train_step = parallel.make_parallel_train_step(
            run.exp.model,
            run.exp.tasks,
            run.exp.tx,
            run.exp.weighting,
            mesh=run.mesh,
            state_sharding=shardings,
            **run.step_options,
        )
        # Statistics replicated, so that every process can read them.
        eval_step = jax.jit(
            make_eval_step(run.exp.model, run.exp.tasks),
            out_shardings=parallel.replicated(run.mesh),
        )

        def save(step: int, state: TrainState) -> None:
            meta = {"data_iterator": train_iter.get_state(), "non_finite_skips": skips}
            checkpointer.save(step, state, meta)

        train_start = time.perf_counter()
        with (
            open(metrics_path, "a") if run.writer else contextlib.nullcontext() as log,
            tqdm(
                total=config.num_steps,
                initial=first - 1,
                disable=not progress or not run.writer,
                desc="train",
            ) as bar,
        ):

            def write(record: dict) -> None:
                if run.writer:
                    log.write(json.dumps(record) + "\n")
                    log.flush()

            for step in range(first, config.num_steps + 1):
                state, metrics = train_step(state, parallel.shard_batch(next(train_iter), run.mesh))
                per_task, shared = jax.device_get(
                    (metrics.pop(parallel.FINITE_TASKS), metrics.pop(parallel.FINITE_SHARED))
                )
                finite = bool(np.all(per_task) and shared)
                if not finite or step % config.log_every_steps == 0 or step == config.num_steps:
                    record = _record(step, jax.device_get(metrics), names)
                    if not finite:
                        record["non_finite"] = [
                            n for n, ok in zip(names, per_task, strict=True) if not ok
                        ]
                    write(record)
                    bar.set_postfix({n: f"{v:.3f}" for n, v in record["loss"].items()})
                bar.update(1)
                skips = 0 if finite else skips + 1
                if skips:
                    message = _non_finite_message(step, names, per_task)
                    if skips > config.max_non_finite_skips:
                        raise NonFiniteError(message + _kept(checkpointer))
                    _note(f"{message}: step skipped ({skips} in a row)")
                every = config.eval_every_steps
                if every and step % every == 0 and step != config.num_steps:
                    evals.append(run.evaluation(eval_step, state, step))
                    write(_eval_record(evals[-1]))
                due = config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0
                if due or step == config.num_steps or stop.set:
                    save(step, state)
                if stop.set:
                    raise Preempted(step, str(checkpointer.step_directory(step)))
            jax.block_until_ready(state)
            train_wall_s = time.perf_counter() - train_start
            if not evals or evals[-1]["step"] != config.num_steps:
                evals.append(run.evaluation(eval_step, state, config.num_steps))
                write(_eval_record(evals[-1]))
            final = evals[-1]["metrics"]
    finally:
        checkpointer.close()

    dataset = {
        "name": run.builder.name,
        "config": run.builder.builder_config.name,
        "version": str(run.builder.version),
    }
    results = {
        "config": config.to_dict(),
        "dataset": dataset,
        "provenance": provenance.collect(dataset=dataset),
        "final": final,
        "evals": evals,
        "steps": config.num_steps,
        "devices": run.mesh.shape[parallel.DATA_AXIS],
        "processes": jax.process_count(),
        "resumed_from": latest,
        "train_wall_s": train_wall_s,
        "wall_s": time.perf_counter() - start,
    }
    variables = jax.tree.map(
        parallel.to_host, {"params": state.params, "batch_stats": state.batch_stats}
    )
    if run.writer:
        wd.atomic_write(workdir / wd.PARAMS_FILE, flax.serialization.to_bytes(variables))
        wd.atomic_write(workdir / wd.RESULTS_FILE, json.dumps(results, indent=2).encode())
    return results


def _kept(checkpointer: Checkpointer) -> str:
    last = checkpointer.latest_step()
    if last is None:
        return ""
    return f"; the last checkpoint, {str(checkpointer.step_directory(last))!r}, is kept"
