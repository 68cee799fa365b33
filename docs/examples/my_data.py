"""A dataset from plain arrays, written outside mtl_jax (the guide "Your own dataset").

`SPEC` is what an experiment uses for `--config.dataset.name=my_data:SPEC`. The images
are generated here; a real dataset would read its files in `read` instead.
"""

from __future__ import annotations

import numpy as np
from my_task import Regression

from mtl_jax.data import DatasetSource, DatasetSpec, SourceConfig
from mtl_jax.tasks import Classification

SIZE = 16
SPLITS = {"train": 1024, "test": 256}


def tasks():
    """Task records keyed by name; each name is also the feature holding its targets."""
    return {"count": Classification("count", num_classes=4), "brightness": Regression("brightness")}


def _generate(split: str) -> dict[str, np.ndarray]:
    """0 to 3 horizontal bars of one random brightness on a noisy background."""
    num = SPLITS[split]
    rng = np.random.default_rng([0, list(SPLITS).index(split)])
    count = rng.integers(0, 4, num)
    brightness = rng.uniform(0.3, 1.0, num).astype(np.float32)
    images = rng.uniform(0.0, 0.2, (num, SIZE, SIZE, 1))
    for i in range(num):
        rows = rng.choice(SIZE // 2, count[i], replace=False) * 2
        images[i, rows, 2:-2, 0] = brightness[i]
    return {
        "image": np.round(images * 255).astype(np.uint8),  # uint8 [N, H, W, C]
        "count": count.astype(np.int32),  # [N] class labels
        "brightness": brightness[:, None],  # [N, 1] float targets
    }


def load(config: str, data_dir: str) -> DatasetSource:
    """The dataset for a config name (this one has a single config) and a data dir."""
    del data_dir  # nothing on disk; a file-backed dataset would look here
    return DatasetSource(
        name="bars",
        builder_config=SourceConfig(config),
        location="generated in memory",
        splits=tuple(SPLITS),
        image_shape=(SIZE, SIZE, 1),
        read=_generate,
    )


SPEC = DatasetSpec(loader=load, tasks=tasks)
