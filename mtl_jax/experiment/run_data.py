"""A run's data: the prepared dataset's splits, loaded and checked against the model;
what the config takes from the train split; the training batches."""

from __future__ import annotations

from collections.abc import Mapping

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mtl_jax import data
from mtl_jax.experiment.builders import (
    Experiment,
    build_experiment,
    default_data_dir,
    needs_steps_per_epoch,
)
from mtl_jax.tasks import Classification


def load_data(config: ml_collections.ConfigDict, exp: Experiment, splits: tuple[str, ...]):
    """The prepared dataset, the loaded `splits` (checked against the model) and the
    image shape. A multi-input dataset's splits keep the run's tasks only."""
    builder = data.prepare(
        exp.spec,
        config=config.dataset.config,
        data_dir=config.dataset.data_dir or default_data_dir(),
    )
    arrays = {split: data.load_split(builder, split) for split in splits}
    if exp.spec.multi_input:
        arrays = {split: _run_tasks(builder, split, a, exp) for split, a in arrays.items()}
        return builder, arrays, check_multi_input_data(builder, arrays, exp)
    return builder, arrays, check_data(builder, arrays, exp)


def _run_tasks(builder, split: str, arrays, exp: Experiment) -> dict:
    missing = sorted(set(exp.task_names) - set(arrays))
    if missing:
        raise ValueError(
            f"{split} split of {builder.name!r} has no examples for task(s) {missing}; "
            f"model tasks {sorted(exp.task_names)}, data tasks {sorted(arrays)}"
        )
    return {name: arrays[name] for name in exp.task_names}


def _check_predictions(exp: Experiment, example, described: str) -> None:
    """Traces the model on `example` (an image or `{task: image}` struct) and checks each
    task's prediction shape."""
    try:
        preds = jax.eval_shape(
            lambda x: exp.model.apply(exp.model.init(jax.random.PRNGKey(0), x), x)[0], example
        )
    except Exception as error:
        raise ValueError(
            f"the model cannot take {described}: {type(error).__name__}: {error}"
        ) from error
    for name, task in exp.tasks.items():
        if tuple(preds[name].shape[1:]) != tuple(task.output_shape):
            raise ValueError(
                f"task {name!r}: the model predicts shape {tuple(preds[name].shape[1:])} per "
                f"example on {described}, the task needs {tuple(task.output_shape)}"
            )


def check_multi_input_data(
    builder: data.DatasetSource, splits: Mapping[str, Mapping[str, Mapping]], exp: Experiment
) -> tuple[int, ...]:
    """`check_data` for a multi-input dataset: splits `{task: {"image", "label"}}`.
    Returns the image shape [H, W, C] (the same for every task).

    Raises:
      ValueError: naming the split, task and shapes or dtypes, for a task with no
        examples, images that are not uint8 or float32 [N, H, W, C] of the declared
        shape, labels not one per image or out of range (`Task.check_targets`), or
        model predictions whose shape differs from the task's.
    """
    declared = tuple(builder.image_shape)
    for split, per_task in splits.items():
        for name, task in exp.tasks.items():
            where = f"{split} split of {builder.name!r}, task {name!r}"
            arrays = per_task[name]
            missing = [key for key in ("image", "label") if key not in arrays]
            if missing:
                raise ValueError(f"{where} has no {missing}; it has {sorted(arrays)}")
            image, label = arrays["image"], np.asarray(arrays["label"])
            if len(image) == 0:
                raise ValueError(f"{where} has no examples")
            if image.dtype not in (np.uint8, np.float32) or image.ndim != 4:
                raise ValueError(
                    f"{where}: images are {image.dtype} with shape {image.shape}, expected "
                    "uint8 or float32 [N, H, W, C]"
                )
            if tuple(image.shape[1:]) != declared:
                raise ValueError(
                    f"{where}: images have shape {tuple(image.shape[1:])}, the dataset "
                    f"declares {declared}"
                )
            if len(label) != len(image):
                raise ValueError(f"{where} has {len(label)} labels for {len(image)} images")
            try:
                task.check_targets(label)
            except ValueError as error:
                raise ValueError(f"{split} split: {error}") from error
    example = {name: jax.ShapeDtypeStruct((2, *declared), jnp.float32) for name in exp.task_names}
    _check_predictions(exp, example, f"per-task images of shape {declared}")
    return declared


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
    _check_predictions(exp, example, f"images of shape {image_shape}")
    return image_shape


def _targets(train: Mapping, name: str) -> np.ndarray:
    """Task `name`'s train-split targets: `train[name]`, or a multi-input split's
    `train[name]["label"]`."""
    targets = train[name]
    return targets["label"] if isinstance(targets, Mapping) else targets


def class_counts(train: Mapping, tasks: Mapping[str, Classification]) -> dict[str, list[int]]:
    """`{task: [n_c]}`: each Classification task's class counts on the train split
    (single- or multi-input), labels equal to its ignore label not counted."""
    counts = {}
    for name, task in tasks.items():
        labels = np.asarray(_targets(train, name)).astype(np.int64)
        labels = labels[labels != task.ignore_label]
        counts[name] = np.bincount(labels, minlength=task.num_classes).tolist()
    return counts


def _short(values) -> str:
    return "[" + ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in values) + "]"


def with_train_data(
    config: ml_collections.ConfigDict, exp: Experiment, train: Mapping[str, np.ndarray]
) -> tuple[Experiment, list[str]]:
    """`exp` rebuilt with what `config` takes from the loaded (and checked) train split,
    and notes saying what that was, for the run's log.

    Two things come from the data: the epoch length of methods that count epochs
    (`steps_per_epoch`, N // batch_size, also with a re-balancing sampler; with per-task
    inputs `max_t N_t // batch_size`, `multi_input.steps_per_epoch`), and the
    class counts behind `task_options`' "balanced" class weights and train-split class
    priors, and the sampler's (`Experiment.class_counts`, recorded with the effective
    options `Experiment.task_options`). Both are pure functions of the data, so a
    resumed run rebuilds the same experiment. Returns `exp` itself when nothing is needed.

    Raises:
      ConfigError: a value cannot be computed from the data (e.g. "balanced" weights for
        a class with no train example), naming the key.
    """
    notes = []
    steps_per_epoch = None
    if needs_steps_per_epoch(config):
        if exp.spec.multi_input:
            steps_per_epoch = data.multi_input.steps_per_epoch(train, batch_size=config.batch_size)
        else:
            steps_per_epoch = max(len(train["image"]) // config.batch_size, 1)
        notes.append(f"{config.weighting.name}: {steps_per_epoch} steps per epoch")
    if steps_per_epoch is None and not exp.counted_tasks:
        return exp, notes
    counts = class_counts(train, {name: exp.tasks[name] for name in exp.counted_tasks})
    exp = build_experiment(config, steps_per_epoch=steps_per_epoch, class_counts=counts)
    for name, count in exp.class_counts.items():
        notes.append(f"task {name!r}: train-split class counts {count}")
    if config.dataset.sampler != data.pipeline.UNIFORM:
        count = np.asarray(exp.class_counts[config.dataset.sampler_task], np.float64)
        mass = (
            (count > 0)
            if config.dataset.sampler == data.pipeline.CLASS_BALANCED
            else np.sqrt(count)
        )
        notes.append(
            f"sampler {config.dataset.sampler!r} on task {config.dataset.sampler_task!r}: "
            f"class probabilities {_short((mass / mass.sum()).tolist())}"
        )
    for name, options in exp.task_options.items():
        for field in ("class_weights", "class_prior"):
            value = config.task_options[name].get(field)
            if field in options and (value is None or isinstance(value, str)):
                notes.append(
                    f"task {name!r}: {field} = {_short(options[field])} (from the train split)"
                )
    return exp, notes


def make_train_batches(
    config: ml_collections.ConfigDict,
    exp: Experiment,
    train: Mapping[str, np.ndarray],
    *,
    num_threads: int = 0,
) -> grain.DatasetIterator:
    """The run's endless training batches (`data.train_batches`): reshuffled every epoch,
    or drawn by `config.dataset.sampler` to re-balance `dataset.sampler_task`'s classes
    (`data.sampler_weights`), with the augmentation `config.dataset.augment` selects,
    assembled in `num_threads` grain threads (`builders.pipeline_options`).
    Batch `b` is a pure function of `(config.seed, b)`, so a restored iterator resumes it.
    A multi-input dataset's batches are `data.multi_input.train_batches` (every task's
    examples cycled with their own reshuffles, `config.batch_size` per task)."""
    if exp.spec.multi_input:
        return data.multi_input.train_batches(
            train, batch_size=config.batch_size, seed=config.seed, num_threads=num_threads
        )
    weights = None
    if config.dataset.sampler != data.pipeline.UNIFORM:
        task = exp.tasks[config.dataset.sampler_task]
        weights = data.sampler_weights(
            train[task.name],
            config.dataset.sampler,
            num_classes=task.num_classes,
            ignore_label=task.ignore_label,
        )
    return data.train_batches(
        train,
        exp.task_names,
        batch_size=config.batch_size,
        seed=config.seed,
        augment=exp.augment,
        example_weights=weights,
        num_threads=num_threads,
    )
