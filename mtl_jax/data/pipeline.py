"""Preparing a builder, reading a split through `tfds.data_source`, and grain batching.

Splits of the in-repo datasets are small (tens of MB), so a split is read once through
its TFDS data source into host arrays; grain then iterates over batch numbers
(deterministic, reshuffled every epoch, checkpointable iterator state) and each batch is
gathered with one vectorised index. This keeps the input pipeline far below the step
time on two CPU cores, where per-record decoding in the training loop would not be.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator, Sequence

import grain
import numpy as np
import tensorflow_datasets as tfds

from mtl_jax.tasks import Task

Arrays = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """A dataset: its TFDS builder class, `tasks() -> {name: Task}`, and optionally
    `resolve_config(name, data_dir) -> builder config name` for symbolic config names
    such as `"auto"`."""

    builder: type[tfds.core.GeneratorBasedBuilder]
    tasks: Callable[[], dict[str, Task]]
    resolve_config: Callable[[str, str], str] = lambda name, data_dir: name


def prepare(spec: DatasetSpec, *, config: str, data_dir: str) -> tfds.core.DatasetBuilder:
    """Returns the builder with config `config`, generating it into `data_dir` if needed.

    Generation is offline (the builders synthesise their data) and written as array_record.

    Raises:
      ValueError: for a config name the builder does not have (the message lists them).
    """
    config = spec.resolve_config(config, data_dir)
    known = [c.name for c in spec.builder.BUILDER_CONFIGS]
    if config not in known:
        raise ValueError(
            f"dataset {spec.builder.name!r} has no config {config!r}; valid configs: {known}"
        )
    builder = spec.builder(config=config, data_dir=data_dir, file_format="array_record")
    if not builder.is_prepared():
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(try_download_gcs=False)
        )
    return builder


def load_split(builder: tfds.core.DatasetBuilder, split: str, *, chunk: int = 4096) -> Arrays:
    """Reads a whole split through its TFDS data source into `{feature: [N, ...]}` arrays.

    Raises:
      ValueError: if the split is missing or empty (the message names the dataset and split).
    """
    if split not in builder.info.splits:
        raise ValueError(
            f"dataset {builder.name!r} has no split {split!r}; splits: {list(builder.info.splits)}"
        )
    source = builder.as_data_source(split)
    if len(source) == 0:
        raise ValueError(f"split {split!r} of dataset {builder.name!r} is empty")
    columns: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(source), chunk):
        records = source.__getitems__(list(range(start, min(start + chunk, len(source)))))
        for key in records[0]:
            columns.setdefault(key, []).append(np.stack([r[key] for r in records]))
    return {key: np.concatenate(parts) for key, parts in columns.items()}


def to_batch(arrays: Arrays, task_names: Sequence[str]) -> dict:
    """Model batch from raw feature arrays: image in [0, 1] float32, targets by task name."""
    image = arrays["image"].astype(np.float32) / 255.0
    targets = {}
    for name in task_names:
        target = arrays[name]
        targets[name] = target.astype(np.int32) if target.dtype == np.int64 else target
    return {"image": image, "targets": targets}


class EpochPermutation:
    """Example indices of training batch `b`: epoch `e` visits `permutation(seed, e)`.

    Random access and stateless (epoch permutations are recomputed on demand and the last
    few cached), so grain can index it directly; batches may span an epoch boundary.
    """

    def __init__(self, size: int, batch_size: int, seed: int):
        self.size, self.batch_size, self.seed = size, batch_size, seed

    @functools.lru_cache(maxsize=2)  # noqa: B019 -- a batch spans at most two epochs
    def permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.size)

    def __call__(self, batch_index: int) -> np.ndarray:
        positions = batch_index * self.batch_size + np.arange(self.batch_size)
        epochs, offsets = np.divmod(positions, self.size)
        index = np.empty(self.batch_size, np.int64)
        for epoch in np.unique(epochs):
            here = epochs == epoch
            index[here] = self.permutation(int(epoch))[offsets[here]]
        return index


def train_batches(
    arrays: Arrays, task_names: Sequence[str], *, batch_size: int, seed: int
) -> grain.DatasetIterator:
    """Endless iterator of full training batches, reshuffled every epoch from `seed`.

    Grain iterates over batch numbers (per-element shuffling in Python costs ~70 µs per
    example, more than a LeNet step per batch), and `EpochPermutation` maps each to its
    example indices. The iterator supports grain's `get_state` / `set_state`.
    Batches are produced synchronously (no prefetch threads): gathering one costs ~1 ms,
    and threads would compete with XLA for the cores.
    """
    size = len(arrays["image"])
    if size < batch_size:
        raise ValueError(f"training split has {size} examples, fewer than batch_size={batch_size}")
    indices = EpochPermutation(size, batch_size, seed)
    dataset = (
        grain.MapDataset.range(np.iinfo(np.int64).max)
        .map(indices)
        .map(lambda index: to_batch({k: v[index] for k, v in arrays.items()}, task_names))
    )
    return iter(dataset.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)))


def eval_batches(arrays: Arrays, task_names: Sequence[str], *, batch_size: int) -> Iterator[dict]:
    """All examples once, in order, in full batches; the last one padded, with `valid` [B]."""
    size = len(arrays["image"])
    for start in range(0, size, batch_size):
        index = np.arange(start, start + batch_size)
        valid = index < size
        batch = to_batch({k: v[np.minimum(index, size - 1)] for k, v in arrays.items()}, task_names)
        batch["valid"] = valid
        yield batch
