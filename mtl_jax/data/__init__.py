"""Datasets: in-repo TFDS builders stored as array_record, read through grain.

`DATASETS` maps a dataset name to its builder class and the tasks it supports.
"""

from __future__ import annotations

from mtl_jax.data import multi_mnist, shapes
from mtl_jax.data.pipeline import (
    DatasetSpec,
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
}

__all__ = [
    "DATASETS",
    "DatasetSpec",
    "eval_batches",
    "load_split",
    "prepare",
    "to_batch",
    "train_batches",
]
