"""`train_and_evaluate(config, workdir)`: one experiment from a config, end to end.

Every check of the config and the data happens before anything is compiled. The
workdir receives `metrics.jsonl` (one JSON line per logged step), `results.json` and
`params.msgpack` (the final `{"params", "batch_stats"}`, flax msgpack); a non-empty
workdir is refused, so nothing saved is ever overwritten.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import flax.serialization
import jax
import ml_collections
import numpy as np
import optax
from tqdm import tqdm

from mtl_jax import data, weighting
from mtl_jax.config import ConfigError
from mtl_jax.jacobian import STRATEGIES
from mtl_jax.models import TRUNKS, MultiTaskModel, build_model
from mtl_jax.tasks import Task
from mtl_jax.train import HEAD_GRADS, create_train_state, evaluate, make_eval_step, make_train_step

SCHEDULES = ("constant", "cosine")
OPTIMIZERS = ("adam", "adamw", "sgd")


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


def build_experiment(config: ml_collections.ConfigDict) -> Experiment:
    """Validates `config` and builds its pieces; nothing is compiled.

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
    _choice(config.model.trunk, TRUNKS, "model.trunk")
    _choice(config.weighting.head_grads, HEAD_GRADS, "weighting.head_grads")
    _choice(config.weighting.jacobian_strategy, STRATEGIES, "weighting.jacobian_strategy")
    try:
        method = weighting.create(config.weighting.name, **config.weighting.kwargs.to_dict())
    except (ValueError, TypeError) as error:
        raise ConfigError(f"config key 'weighting': {error}") from error
    if config.weighting.rep_grad and method.kind != weighting.GRAMIAN:
        raise ConfigError(
            f"config key 'weighting.rep_grad': method {config.weighting.name!r} does not use "
            "per-task gradients"
        )
    for key in ("batch_size", "eval_batch_size", "num_steps", "log_every_steps"):
        if config[key] < 1:
            raise ConfigError(f"config key {key!r} must be >= 1, got {config[key]}")
    try:
        method.init(tuple(tasks))
    except ValueError as error:
        raise ConfigError(f"config key 'weighting': {error}") from error
    model = build_model(
        config.model.trunk,
        tasks,
        head_hidden=config.model.head_hidden,
        dense_head_hidden=config.model.dense_head_hidden,
    )
    return Experiment(spec, tasks, model, method, make_optimizer(config))


def _check_split(arrays: Mapping[str, np.ndarray], tasks: Mapping[str, Task], split: str):
    for name, task in tasks.items():
        try:
            task.check_targets(arrays[name])
        except ValueError as error:
            raise ValueError(f"{split} split: {error}") from error


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


def _atomic_write(path: Path, content: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(content)
    os.replace(tmp, path)


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


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str | Path, *, progress: bool = True
) -> dict[str, Any]:
    """Trains `config` for `config.num_steps` steps, evaluates on the test split, saves.

    Returns:
      The contents written to `results.json`.

    Raises:
      ConfigError: invalid config (before any compilation).
      FileExistsError: `workdir` exists and is not empty.
      FloatingPointError: a logged task loss is not finite (the message names the task and
        step; metrics logged so far are kept).
    """
    start = time.perf_counter()
    workdir = Path(workdir)
    results_path = workdir / "results.json"
    if workdir.exists() and any(workdir.iterdir()):
        raise FileExistsError(
            f"workdir {str(workdir)!r} is not empty (it holds an earlier run); nothing was "
            "overwritten: choose another --workdir"
        )
    exp = build_experiment(config)
    names = exp.task_names
    builder = data.prepare(
        exp.spec,
        config=config.dataset.config,
        data_dir=config.dataset.data_dir or default_data_dir(),
    )
    train_arrays = data.load_split(builder, "train")
    test_arrays = data.load_split(builder, "test")
    _check_split(train_arrays, exp.tasks, "train")
    _check_split(test_arrays, exp.tasks, "test")
    workdir.mkdir(parents=True, exist_ok=True)

    train_iter = data.train_batches(
        train_arrays, names, batch_size=config.batch_size, seed=config.seed
    )
    batch = next(train_iter)
    state = create_train_state(exp.model, exp.tx, exp.weighting, batch["image"], seed=config.seed)
    train_step = make_train_step(
        exp.model,
        exp.tasks,
        exp.tx,
        exp.weighting,
        rep_grad=config.weighting.rep_grad,
        head_grads=config.weighting.head_grads,
        jacobian_strategy=config.weighting.jacobian_strategy,
    )
    train_start = time.perf_counter()
    with (
        open(workdir / "metrics.jsonl", "w") as log,
        tqdm(total=config.num_steps, disable=not progress, desc="train") as bar,
    ):
        for step in range(1, config.num_steps + 1):
            state, metrics = train_step(state, batch)
            batch = next(train_iter)
            if step % config.log_every_steps == 0 or step == config.num_steps:
                record = _record(step, jax.device_get(metrics), names)
                log.write(json.dumps(record) + "\n")
                log.flush()
                bad = [n for n, v in record["loss"].items() if not math.isfinite(v)]
                if bad:
                    raise FloatingPointError(f"non-finite loss for task(s) {bad} at step {step}")
                bar.set_postfix({n: f"{v:.3f}" for n, v in record["loss"].items()})
            bar.update(1)
    jax.block_until_ready(state)
    train_wall_s = time.perf_counter() - train_start

    eval_step = make_eval_step(exp.model, exp.tasks)
    final = evaluate(
        eval_step,
        state.params,
        state.batch_stats,
        data.eval_batches(test_arrays, names, batch_size=config.eval_batch_size),
        exp.tasks,
    )
    variables = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
    _atomic_write(workdir / "params.msgpack", flax.serialization.to_bytes(variables))
    results = {
        "config": config.to_dict(),
        "dataset": {"name": builder.name, "config": builder.builder_config.name},
        "final": final,
        "steps": config.num_steps,
        "train_wall_s": train_wall_s,
        "wall_s": time.perf_counter() - start,
    }
    _atomic_write(results_path, json.dumps(results, indent=2).encode())
    return results
