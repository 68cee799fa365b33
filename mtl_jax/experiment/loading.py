"""Finished runs, read back: `load_run(workdir)` and `evaluate_run(workdir, split)`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import ml_collections

from mtl_jax import data, parallel
from mtl_jax import workdir as wd
from mtl_jax.config import ConfigError
from mtl_jax.experiment.builders import Experiment, build_experiment
from mtl_jax.experiment.run_data import load_data
from mtl_jax.experiment.warm_start import read_variables
from mtl_jax.models import MultiTaskModel
from mtl_jax.train import evaluate, make_eval_step


class LoadedRun(NamedTuple):
    """A finished run.

    Attributes:
      config: the run's config (from its `config.json`).
      experiment: the config's validated pieces (tasks, method, optimizer, dataset spec).
      model: the multi-task model (`experiment.model`).
      variables: `{"params", "batch_stats"}` as host numpy arrays, ready for
        `model.apply(variables, images)`.
      results: the run's `results.json`.
    """

    config: ml_collections.ConfigDict
    experiment: Experiment
    model: MultiTaskModel
    variables: dict[str, Any]
    results: dict[str, Any]


def load_run(workdir: str | Path) -> LoadedRun:
    """The config, model and final variables of the finished run in `workdir`.

    Raises:
      FileNotFoundError: naming the path, when `workdir` holds no finished run.
      ConfigError: when its config no longer builds (e.g. a method renamed since).
    """
    workdir = Path(workdir)
    for name in (wd.CONFIG_FILE, wd.RESULTS_FILE, wd.PARAMS_FILE):
        if not (workdir / name).is_file():
            raise FileNotFoundError(
                f"{str(workdir)!r} holds no {name}: not the workdir of a finished run"
            )
    record = json.loads((workdir / wd.CONFIG_FILE).read_text())
    config = ml_collections.ConfigDict(record)
    for key, value in wd.ADDED_KEYS.items():  # keys added since the run was saved
        parent, _, leaf = key.rpartition(".")
        node = config
        for part in parent.split(".") if parent else ():
            node = node[part]
        if leaf not in node:
            node[leaf] = value
    config.lock()
    results = json.loads((workdir / wd.RESULTS_FILE).read_text())
    try:  # the tasks' data-derived options from the run's own train-split counts
        experiment = build_experiment(config, class_counts=results.get("train_class_counts"))
    except ConfigError as error:
        raise ConfigError(f"the config of {str(workdir)!r} no longer builds: {error}") from error
    return LoadedRun(config, experiment, experiment.model, read_variables(workdir), results)


def evaluate_run(workdir: str | Path, *, split: str = "test") -> dict[str, float]:
    """`{"<task>/<metric>": value}` of the finished run in `workdir` on `split`, computed
    from its saved variables (no training; the same metrics as the run's own evaluation).

    Raises:
      FileNotFoundError: no finished run in `workdir`, or the dataset is not there.
      ValueError: the dataset has no split `split` (naming the valid ones), or its data no
        longer fits the model.
    """
    run = load_run(workdir)
    config, exp = run.config, run.experiment
    _, splits, _ = load_data(config, exp, (split,))
    mesh = parallel.make_mesh(config.parallel.num_devices)
    eval_step = make_eval_step(exp.model, exp.tasks)  # jitted already
    batches = data.eval_batches(splits[split], exp.task_names, batch_size=config.eval_batch_size)
    return evaluate(
        eval_step,
        run.variables["params"],
        run.variables["batch_stats"],
        (parallel.shard_batch(b, mesh) for b in batches),
        exp.tasks,
    )
