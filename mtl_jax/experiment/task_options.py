"""`config.task_options`: per-task field overrides, some computed from the train split.

`{task: {field: value}}` replaces fields of the dataset's tasks (`dataclasses.replace`;
the task validates them). `class_weights="balanced"` and `class_prior="train"` are
computed from the train split's class counts (`balanced_class_weights`,
`class_frequencies`); `class_prior` is also what `loss_type` "logit_adjusted" or
"balanced_softmax" gets when the task has none.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np

from mtl_jax.config import ConfigError, did_you_mean
from mtl_jax.tasks import Classification, Task

# `task_options.<task>.class_weights` value computed from the train split.
BALANCED = "balanced"
# `task_options.<task>.class_prior` value computed from the train split (also the
# default of the losses below when no prior is given).
TRAIN_PRIOR = "train"
PRIOR_LOSSES = ("logit_adjusted", "balanced_softmax")


def _settable_fields(task: Task) -> list[str]:
    return sorted(f.name for f in dataclasses.fields(task) if f.init and f.name != "name")


def _plain(value):
    """A config value as plain Python: groups as dicts, lists as tuples (task fields are
    frozen dataclass fields)."""
    if isinstance(value, ml_collections.ConfigDict):
        value = value.to_dict()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return tuple(_plain(v) for v in value)
    return value


def _jsonable(value):
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def balanced_class_weights(counts: Sequence[int]) -> tuple[float, ...]:
    """scikit-learn's "balanced" class weights, `w_c = N / (C · n_c)`, with `N = Σ n_c`.

    So `Σ_c π_c w_c = 1` for the class frequencies `π_c = n_c / N`: the weighted loss
    keeps the unweighted scale on average over the train split.

    Raises:
      ValueError: when a class has no example (naming it).

    Example:
      >>> balanced_class_weights([3, 1])
      (0.6666666666666666, 2.0)
    """
    frequencies = np.asarray(class_frequencies(counts))
    return tuple(float(w) for w in 1.0 / (len(frequencies) * frequencies))


def class_frequencies(counts: Sequence[int]) -> tuple[float, ...]:
    """The class prior `π_c = n_c / N` of the logit-adjusted losses.

    A class with no example is an error rather than smoothed: its log-prior would be
    −∞, and any smoothing constant would be an unrecorded hyper-parameter; give
    `class_prior` explicitly instead.

    Raises:
      ValueError: when a class has no example (naming it).
    """
    counts = np.asarray(counts, np.float64)
    if np.any(counts == 0):
        raise ValueError(f"class(es) {np.flatnonzero(counts == 0).tolist()} have no example")
    return tuple(float(p) for p in counts / counts.sum())


def apply_task_options(
    config: ml_collections.ConfigDict,
    tasks: dict[str, Task],
    class_counts: Mapping[str, Sequence[int]] | None,
) -> tuple[dict[str, Task], dict[str, dict[str, Any]], tuple[str, ...]]:
    """`config.task_options` applied to `tasks` with `dataclasses.replace`.

    Returns the new tasks, the effective options (JSON values) and the tasks whose
    train-split class counts are needed. Without `class_counts` (before the data is
    loaded), the values computed from them are placeholders that validate the rest.
    """
    options = config.task_options
    out, effective, counted = dict(tasks), {}, []
    for name in sorted(options):
        key = f"task_options.{name}"
        if name not in tasks:
            raise ConfigError(
                f"config key {key!r}: {name!r} is not a task of this run; its tasks: "
                f"{sorted(tasks)}" + did_you_mean(name, tasks)
            )
        group = options[name]
        if not isinstance(group, ml_collections.ConfigDict):
            raise ConfigError(
                f"config key {key!r} must be a group of task fields, {key}.FIELD=VALUE, "
                f"got {group!r}"
            )
        task = tasks[name]
        valid = _settable_fields(task)
        fields = {field: _plain(value) for field, value in group.items()}
        for field in fields:
            if field not in valid:
                raise ConfigError(
                    f"config key '{key}.{field}': {type(task).__name__} task {name!r} has no "
                    f"field {field!r}; valid fields: {valid}" + did_you_mean(field, valid)
                )
        fields, derived = _data_derived(key, task, fields, class_counts)
        if derived:
            counted.append(name)
        try:
            out[name] = dataclasses.replace(task, **fields)
        except (ValueError, TypeError) as error:
            raise ConfigError(f"config key {key!r}: {error}") from error
        # Before the data is loaded, the computed fields are recorded by their symbol.
        shown = fields if class_counts is not None else {**fields, **derived}
        effective[name] = _jsonable(shown)
    return out, effective, tuple(counted)


def _data_derived(
    key: str,
    task: Task,
    fields: dict[str, Any],
    class_counts: Mapping[str, Sequence[int]] | None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """Fills in the fields computed from the train split's class counts.

    Returns the fields and `{field: symbolic value}` of those computed (empty when none).
    """
    weights = fields.get("class_weights")
    prior = fields.get("class_prior")
    for field, value, symbol in (
        ("class_weights", weights, BALANCED),
        ("class_prior", prior, TRAIN_PRIOR),
    ):
        if isinstance(value, str) and value != symbol:
            raise ConfigError(
                f"config key '{key}.{field}': {value!r} is neither {symbol!r} (from the train "
                "split) nor a tuple of numbers, one per class"
            )
    loss_type = fields.get("loss_type", getattr(task, "loss_type", None))
    derived = {}
    if weights == BALANCED:
        derived["class_weights"] = BALANCED
    if prior == TRAIN_PRIOR or (
        prior is None and loss_type in PRIOR_LOSSES and not getattr(task, "class_prior", ())
    ):
        derived["class_prior"] = TRAIN_PRIOR
    if not derived:
        return fields, derived
    if not isinstance(task, Classification):
        field = next(iter(derived))
        raise ConfigError(
            f"config key '{key}.{field}': {derived[field]!r} is computed from the class "
            f"counts of a Classification task; {task.name!r} is a {type(task).__name__}"
        )
    fields = dict(fields)
    counts = None if class_counts is None else counts_of(class_counts, task.name)
    for field in derived:
        if counts is None:  # placeholders until the data is loaded
            fields[field] = (1.0,) * task.num_classes
            continue
        compute = balanced_class_weights if field == "class_weights" else class_frequencies
        try:
            fields[field] = compute(counts)
        except ValueError as error:
            raise ConfigError(
                f"config key '{key}.{field}' = {derived[field]!r}: task {task.name!r}: "
                f"{error} in the train split (class counts {list(counts)}); set "
                f"{key}.{field} explicitly"
            ) from error
    return fields, derived


def counts_of(class_counts: Mapping[str, Sequence[int]], name: str) -> Sequence[int]:
    if name not in class_counts:
        raise ValueError(f"class_counts has no train-split counts for task {name!r}")
    return class_counts[name]
