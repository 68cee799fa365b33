"""Preparing a dataset, reading a split into host arrays, and grain batching.

A split is read once into host arrays: through its TFDS data source for the in-repo
builders (tens of MB), or by a `DatasetSource` for datasets read from local files
(NYUv2 and CityScapes in the MTAN layout, a few GB) or prepared TFDS datasets (CelebA);
grain then iterates over batch numbers
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


Augment = Callable[[Arrays, np.random.Generator], Arrays]


@dataclasses.dataclass(frozen=True)
class SourceConfig:
    """The config of a `DatasetSource` (mirrors `builder.builder_config.name`)."""

    name: str


@dataclasses.dataclass(frozen=True)
class DatasetSource:
    """A prepared dataset that is not read through a TFDS builder's data source.

    It offers what the experiment code uses of a TFDS builder: `name`,
    `builder_config.name`, and its splits, read by `load_split`.

    Attributes:
      name: the dataset name.
      builder_config: the resolved config.
      location: where the data lives (for messages and results).
      splits: the split names `read` accepts.
      image_shape: the declared shape [H, W, C] of one image (uint8, as in the builders).
      read: `read(split) -> {feature: [N, ...]}`, the whole split as host arrays.
      version: the data's version when its source states one (None otherwise; recorded
        in results.json like a TFDS builder's version).
    """

    name: str
    builder_config: SourceConfig
    location: str
    splits: tuple[str, ...]
    image_shape: tuple[int, int, int]
    read: Callable[[str], Arrays] = dataclasses.field(repr=False)
    version: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class DatasetSpec:
    """A dataset and how to get it.

    Attributes:
      tasks: `tasks() -> {name: Task}`; task names are feature names.
      builder: an in-repo TFDS builder class, generated into the data dir by `prepare`.
      loader: for datasets not built here, `loader(config, data_dir) -> DatasetSource`;
        it raises FileNotFoundError (naming the dataset, the directory and how to get
        the data) when the data is missing. Exactly one of `builder` and `loader`.
      resolve_config: `resolve_config(name, data_dir) -> config name`, for symbolic
        config names such as `"auto"`.
      augment: `augment(arrays, rng) -> arrays`, applied to the raw feature arrays of
        every training batch (see `train_batches`); None for no augmentation.
    """

    tasks: Callable[[], dict[str, Task]]
    builder: type[tfds.core.GeneratorBasedBuilder] | None = None
    loader: Callable[[str, str], DatasetSource] | None = None
    resolve_config: Callable[[str, str], str] = lambda name, data_dir: name
    augment: Augment | None = None

    def __post_init__(self):
        if (self.builder is None) == (self.loader is None):
            raise ValueError("a DatasetSpec needs exactly one of `builder` and `loader`")


def prepare(
    spec: DatasetSpec, *, config: str, data_dir: str
) -> tfds.core.DatasetBuilder | DatasetSource:
    """Returns the dataset with config `config`, ready for `load_split`.

    For an in-repo builder: the builder, generated into `data_dir` as array_record if
    needed (offline: the builders synthesise their data). For a loader dataset: the
    loader's `DatasetSource` (nothing is generated or downloaded).

    Raises:
      ValueError: for a config name the dataset does not have (the message lists them).
      FileNotFoundError: a loader dataset's data is missing (the message says how to get it).
    """
    config = spec.resolve_config(config, data_dir)
    if spec.loader is not None:
        return spec.loader(config, data_dir)
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


def load_split(
    builder: tfds.core.DatasetBuilder | DatasetSource, split: str, *, chunk: int = 4096
) -> Arrays:
    """Reads a whole split into `{feature: [N, ...]}` host arrays.

    A TFDS builder's split is read through its data source, `chunk` records at a time; a
    `DatasetSource` reads its own.

    Raises:
      ValueError: if the split is missing or empty (the message names the dataset and split).
    """
    if isinstance(builder, DatasetSource):
        if split not in builder.splits:
            raise ValueError(
                f"dataset {builder.name!r} has no split {split!r}; splits: {list(builder.splits)}"
            )
        arrays = builder.read(split)
        if not arrays or len(next(iter(arrays.values()))) == 0:
            raise ValueError(
                f"split {split!r} of dataset {builder.name!r} is empty ({builder.location})"
            )
        return arrays
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
    """Model batch from raw feature arrays: the image and the targets by task name.

    A uint8 image is scaled to [0, 1]; a float image (already in [0, 1], e.g. from the
    augmentation) is kept. Images and float targets become float32, signed integer targets
    int32; other targets (uint8 maps) are passed unchanged.
    """
    image = arrays["image"]
    image = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image
    targets = {}
    for name in task_names:
        target = arrays[name]
        if np.issubdtype(target.dtype, np.signedinteger):
            target = target.astype(np.int32)
        elif np.issubdtype(target.dtype, np.floating):
            target = target.astype(np.float32)
        targets[name] = target
    return {"image": image.astype(np.float32), "targets": targets}


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


# Third entry of the augmentation seed, so its stream differs from the shuffling's.
_AUGMENT_STREAM = 1


def train_batches(
    arrays: Arrays,
    task_names: Sequence[str],
    *,
    batch_size: int,
    seed: int,
    augment: Augment | None = None,
) -> grain.DatasetIterator:
    """Endless iterator of full training batches, reshuffled every epoch from `seed`.

    Grain iterates over batch numbers (per-element shuffling in Python would cost more
    than a LeNet step per batch), and `EpochPermutation` maps each to its example
    indices. The iterator supports grain's `get_state` / `set_state`. Batches are
    produced synchronously (no prefetch threads): gathering one is cheap, and threads
    would compete with XLA for the cores (measured: `benchmarks/results/README.md`).

    Args:
      arrays: the split's features; only `image` and the tasks' features are used.
      task_names: the tasks whose targets the batches carry.
      batch_size: examples per batch.
      seed: shuffling (and augmentation) seed.
      augment: `augment(arrays, rng) -> arrays` on each batch's raw features (e.g. a
        `DatasetSpec.augment`), with `rng = default_rng([seed, b, 1])` for batch number
        `b`, so batch `b` is the same on every run and after a restore.
    """
    size = len(arrays["image"])
    if size < batch_size:
        raise ValueError(f"training split has {size} examples, fewer than batch_size={batch_size}")
    indices = EpochPermutation(size, batch_size, seed)
    used = {key: arrays[key] for key in ("image", *task_names)}

    def make_batch(batch_index: int) -> dict:
        index = indices(batch_index)
        raw = {key: value[index] for key, value in used.items()}
        if augment is not None:
            raw = augment(raw, np.random.default_rng([seed, batch_index, _AUGMENT_STREAM]))
        return to_batch(raw, task_names)

    dataset = grain.MapDataset.range(np.iinfo(np.int64).max).map(make_batch)
    return iter(dataset.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)))


def eval_batches(arrays: Arrays, task_names: Sequence[str], *, batch_size: int) -> Iterator[dict]:
    """All examples once, in order, in full batches; the last one padded, with `valid` [B]."""
    size = len(arrays["image"])
    used = {key: arrays[key] for key in ("image", *task_names)}
    for start in range(0, size, batch_size):
        index = np.arange(start, start + batch_size)
        valid = index < size
        batch = to_batch({k: v[np.minimum(index, size - 1)] for k, v in used.items()}, task_names)
        batch["valid"] = valid
        yield batch
