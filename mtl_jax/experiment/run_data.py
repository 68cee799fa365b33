"""A run's data: the prepared dataset's splits, loaded and checked against the model."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mtl_jax import data
from mtl_jax.experiment.builders import Experiment, default_data_dir


def load_data(config: ml_collections.ConfigDict, exp: Experiment, splits: tuple[str, ...]):
    """The prepared dataset, the loaded `splits` (checked against the model) and the
    image shape."""
    builder = data.prepare(
        exp.spec,
        config=config.dataset.config,
        data_dir=config.dataset.data_dir or default_data_dir(),
    )
    arrays = {split: data.load_split(builder, split) for split in splits}
    return builder, arrays, check_data(builder, arrays, exp)


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
