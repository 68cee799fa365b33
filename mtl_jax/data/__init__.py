"""Datasets: in-repo TFDS builders stored as array_record and datasets read from local
files or prepared TFDS datasets, all batched through grain.

`DATASETS` maps a dataset name to its `DatasetSpec`: how to get it (an in-repo builder
or a loader), the tasks it supports and its training augmentation.

| name | tasks | source |
| --- | --- | --- |
| `multi_mnist` | `left`, `right`, `boundary` | in-repo builder (offline) |
| `shapes` | `shape`, `colour`, `boundary`, `segmentation`, `depth`, `normal` | in-repo builder |
| `nyuv2` | `segmentation` (13), `depth`, `normal` | MTAN layout in `<data_dir>/nyuv2` |
| `cityscapes` | `segmentation` (7), `depth` | MTAN layout in `<data_dir>/cityscapes` |
| `celeb_a` | the 40 attributes by name, or `attributes` (40 labels) | prepared TFDS `celeb_a` |
"""

from __future__ import annotations

from mtl_jax.data import celeb_a, cityscapes, mtan, multi_mnist, nyuv2, shapes
from mtl_jax.data.pipeline import (
    DatasetSource,
    DatasetSpec,
    SourceConfig,
    eval_batches,
    load_split,
    prepare,
    to_batch,
    train_batches,
)

DATASETS: dict[str, DatasetSpec] = {
    "multi_mnist": DatasetSpec(
        builder=multi_mnist.MultiMnist,
        tasks=multi_mnist.tasks,
        resolve_config=multi_mnist.resolve_config,
    ),
    "shapes": DatasetSpec(builder=shapes.Shapes, tasks=shapes.tasks),
    "nyuv2": DatasetSpec(
        loader=nyuv2.load,
        tasks=nyuv2.tasks,
        resolve_config=mtan.resolve_config,
        augment=nyuv2.AUGMENT,
    ),
    "cityscapes": DatasetSpec(
        loader=cityscapes.load,
        tasks=cityscapes.tasks,
        resolve_config=mtan.resolve_config,
        augment=cityscapes.AUGMENT,
    ),
    "celeb_a": DatasetSpec(
        loader=celeb_a.load, tasks=celeb_a.tasks, resolve_config=celeb_a.resolve_config
    ),
}

__all__ = [
    "DATASETS",
    "DatasetSource",
    "DatasetSpec",
    "SourceConfig",
    "eval_batches",
    "load_split",
    "prepare",
    "to_batch",
    "train_batches",
]
