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
| `digit_domains` | `colour`, `inverted`, `plain` (multi-input, 10 classes) | generated (offline) |
| `office_31` | `amazon`, `dslr`, `webcam` (multi-input, 31 classes) | `office-31` |
| `office_home` | `Art`, `Clipart`, `Product`, `Real_World` (multi-input, 65) | `office-home` |

Multi-input datasets (`DatasetSpec.multi_input`) give every task its own examples and
batches `{"inputs": {task: x_t}, "targets": {task: y_t}}` (`multi_input`); the Office
configs (their files under `<data_dir>/office-31` and `<data_dir>/office-home`) are
`seeded` (LibMTL's stratified 60/20/20 rule, seed 0) and `libmtl_lists`
(LibMTL's own split lists, copied to `<root>/data_txt`).

Augmentation (`config.dataset.augment`): NYUv2 and CityScapes default to the MTAN
protocol's `rescale_crop_flip`; the others to none, and `multi_mnist` offers `translate`
(image and boundary map shifted together by up to ±2 pixels). Training batches visit
each example once per epoch, or are drawn with replacement to re-balance the classes of
one classification task (`SAMPLERS`, `sampler_weights`).
"""

from __future__ import annotations

import functools

from mtl_jax.data import (
    celeb_a,
    cityscapes,
    digit_domains,
    mtan,
    multi_input,
    multi_mnist,
    nyuv2,
    office,
    shapes,
)
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
    "digit_domains": DatasetSpec(
        loader=digit_domains.source,
        tasks=digit_domains.tasks,
        resolve_config=digit_domains.resolve_config,
        multi_input=True,
    ),
    **{
        name: DatasetSpec(
            loader=functools.partial(office.source, dataset),
            tasks=functools.partial(office.tasks, dataset),
            resolve_config=lambda config, data_dir: office.SEEDED if config == "auto" else config,
            multi_input=True,
        )
        for name, dataset in (("office_31", office.OFFICE_31), ("office_home", office.OFFICE_HOME))
    },
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
    "multi_input",
    "prepare",
    "sampler_weights",
    "to_batch",
    "train_batches",
]
