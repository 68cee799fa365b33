"""Datasets: in-repo TFDS builders stored as array_record and datasets read from local
files or prepared TFDS datasets, all batched through grain.

`DATASETS` maps a dataset name to its `DatasetSpec`: how to get it (an in-repo builder
or a loader), the tasks it supports and its training augmentations (the default, and
those `config.dataset.augment` may name).

| name | tasks | source |
| --- | --- | --- |
| `multi_mnist` | `left`, `right`, `boundary` | in-repo builder (offline) |
| `shapes` | `shape`, `colour`, `boundary`, `segmentation`, `depth`, `normal` | in-repo builder |
| `nyuv2` | `segmentation` (13), `depth`, `normal` | MTAN layout in `<data_dir>/nyuv2` |
| `cityscapes` | `segmentation` (7), `depth` | MTAN layout in `<data_dir>/cityscapes` |
| `celeb_a` | the 40 attributes by name, or `attributes` (40 labels) | prepared TFDS `celeb_a` |

Augmentation (`config.dataset.augment`): NYUv2 and CityScapes default to the MTAN
protocol's `rescale_crop_flip`; the others to none, and `multi_mnist` offers `translate`
(image and boundary map shifted together by up to ±2 pixels). Training batches visit
each example once per epoch, or are drawn with replacement to re-balance the classes of
one classification task (`SAMPLERS`, `sampler_weights`).
"""

from __future__ import annotations

from mtl_jax.data import celeb_a, cityscapes, mtan, multi_mnist, nyuv2, shapes
from mtl_jax.data.pipeline import (
    NO_AUGMENT,
    SAMPLERS,
    DatasetSource,
    DatasetSpec,
    SourceConfig,
    eval_batches,
    load_split,
    prepare,
    sampler_weights,
    to_batch,
    train_batches,
)

DATASETS: dict[str, DatasetSpec] = {
    "multi_mnist": DatasetSpec(
        builder=multi_mnist.MultiMnist,
        tasks=multi_mnist.tasks,
        resolve_config=multi_mnist.resolve_config,
        augmentations=multi_mnist.AUGMENTATIONS,
    ),
    "shapes": DatasetSpec(builder=shapes.Shapes, tasks=shapes.tasks),
    "nyuv2": DatasetSpec(
        loader=nyuv2.load,
        tasks=nyuv2.tasks,
        resolve_config=mtan.resolve_config,
        augment=nyuv2.AUGMENT,
        augmentations={"rescale_crop_flip": nyuv2.AUGMENT},
    ),
    "cityscapes": DatasetSpec(
        loader=cityscapes.load,
        tasks=cityscapes.tasks,
        resolve_config=mtan.resolve_config,
        augment=cityscapes.AUGMENT,
        augmentations={"rescale_crop_flip": cityscapes.AUGMENT},
    ),
    "celeb_a": DatasetSpec(
        loader=celeb_a.load, tasks=celeb_a.tasks, resolve_config=celeb_a.resolve_config
    ),
}

__all__ = [
    "DATASETS",
    "NO_AUGMENT",
    "SAMPLERS",
    "DatasetSource",
    "DatasetSpec",
    "SourceConfig",
    "eval_batches",
    "load_split",
    "prepare",
    "sampler_weights",
    "to_batch",
    "train_batches",
]
