"""Preparing a dataset, reading a split into host arrays, and grain batching.

A split is read once into host arrays: through its TFDS data source for the in-repo
builders (tens of MB), or by a `DatasetSource` for datasets read from local files
(NYUv2 and CityScapes in the MTAN layout, a few GB) or prepared TFDS datasets (CelebA);
grain then iterates over batch numbers
(deterministic, reshuffled every epoch, checkpointable iterator state) and each batch is
gathered with one vectorised index. This keeps the input pipeline far below the step
time on two CPU cores, where per-record decoding in the training loop would not be.

Which examples batch `b` holds is a pure function of `(seed, b)`: an epoch permutation
(`EpochPermutation`, the default) or, for a re-balancing sampler (`SAMPLERS`), a draw with
replacement from per-example weights (`WeightedDraw`). Either way grain's iterator state
is just the batch number, so a restored iterator continues bit for bit.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator, Mapping, Sequence

import grain
import numpy as np
import tensorflow_datasets as tfds

from mtl_jax.tasks import Task

Arrays = dict[str, np.ndarray]


Augment = Callable[[Arrays, np.random.Generator], Arrays]

# `config.dataset.augment` value that turns a dataset's default augmentation off.
NO_AUGMENT = "none"


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
      image_shape: the declared shape [H, W, C] of one image (uint8, as in the builders;
        a multi-input dataset's images may also be float32, already normalised).
      read: `read(split) -> {feature: [N, ...]}`, the whole split as host arrays; for a
        multi-input dataset (`DatasetSpec.multi_input`) `{task: {"image": [N_t, H, W, C],
        "label": [N_t]}}`, one set of examples per task (`multi_input.TaskArrays`).
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
        every training batch (see `train_batches`); None for no augmentation. The
        default, used when `config.dataset.augment` is "".
      augmentations: the augmentations `config.dataset.augment` may name, by name (the
        default may be one of them; "none" is reserved for no augmentation).
      multi_input: every task has its own examples (a domain: Office-31, Office-Home,
        `digit_domains`): a split is `{task: {"image", "label"}}` and training batches
        are `{"inputs": {task: x_t}, "targets": {task: y_t}}` (`multi_input`). Such a
        dataset is a loader dataset without augmentation.
    """

    tasks: Callable[[], dict[str, Task]]
    builder: type[tfds.core.GeneratorBasedBuilder] | None = None
    loader: Callable[[str, str], DatasetSource] | None = None
    resolve_config: Callable[[str, str], str] = lambda name, data_dir: name
    augment: Augment | None = None
    augmentations: Mapping[str, Augment] = dataclasses.field(default_factory=dict)
    multi_input: bool = False

    def __post_init__(self):
        if (self.builder is None) == (self.loader is None):
            raise ValueError("a DatasetSpec needs exactly one of `builder` and `loader`")
        if self.multi_input and (self.builder is not None or self.augment or self.augmentations):
            raise ValueError(
                "a multi-input DatasetSpec is a `loader` dataset without augmentation "
                "(the augmentations take one image batch for every task)"
            )
        if NO_AUGMENT in self.augmentations or "" in self.augmentations:
            raise ValueError(f"augmentation names {NO_AUGMENT!r} and '' are reserved")

    def choose_augment(self, name: str) -> Augment | None:
        """The augmentation `config.dataset.augment = name` selects: "" the default
        (`augment`), "none" none, else `augmentations[name]`.

        Raises:
          ValueError: for a name the dataset does not have (listing the valid ones).
        """
        if name == "":
            return self.augment
        if name == NO_AUGMENT:
            return None
        if name not in self.augmentations:
            valid = ["", NO_AUGMENT, *sorted(self.augmentations)]
            raise ValueError(f"unknown augmentation {name!r}; valid: {valid}")
        return self.augmentations[name]


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


# Third entry of the per-batch seeds, so that each stream differs from the shuffling's
# (`default_rng([seed, epoch])`) and from each other.
_AUGMENT_STREAM = 1
_SAMPLER_STREAM = 2

# Samplers of training examples (`config.dataset.sampler`), see `sampler_weights`.
UNIFORM = "uniform"
CLASS_BALANCED = "class_balanced"
SQRT = "sqrt"
SAMPLERS = (UNIFORM, CLASS_BALANCED, SQRT)


def sampler_weights(
    labels: np.ndarray, sampler: str, *, num_classes: int, ignore_label: int = -1
) -> np.ndarray:
    """Per-example sampling weights that re-balance the classes of one task.

    With `n_c` the number of examples of class `c` (examples labelled `ignore_label`
    are not counted), example `i` of class `c(i)` gets

    * "class_balanced": `p_i ∝ 1 / n_{c(i)}`, so every class present is drawn equally
      often (the class-balanced sampling of Kang et al., "Decoupling Representation and
      Classifier for Long-Tailed Recognition", ICLR 2020, Eq. 1 with q = 0);
    * "sqrt": `p_i ∝ 1 / sqrt(n_{c(i)})`, so class `c` is drawn with probability
      `∝ sqrt(n_c)` (square-root sampling, the same equation with q = 1/2).

    Examples labelled `ignore_label` get weight 0 (they carry no label for the task, so
    they have no class to balance) and are never drawn; a class with no example simply
    gets no draws.

    Args:
      labels: [N] integer class labels of the task on the training split.
      sampler: "class_balanced" or "sqrt" (see `SAMPLERS`; "uniform" needs no weights).
      num_classes: the task's number of classes; labels are in `[0, num_classes)`.
      ignore_label: the label of unlabelled examples.

    Returns:
      [N] float64 weights summing to 1.

    Raises:
      ValueError: for an unknown sampler, labels out of range, or no labelled example.

    Example:
      >>> sampler_weights(np.asarray([0, 0, 0, 1]), "class_balanced", num_classes=2)
      array([0.16666667, 0.16666667, 0.16666667, 0.5       ])
    """
    if sampler not in (CLASS_BALANCED, SQRT):
        raise ValueError(f"sampler {sampler!r} has no weights; valid: {[CLASS_BALANCED, SQRT]}")
    labels = np.asarray(labels)
    labelled = labels != ignore_label
    if not np.any(labelled):
        raise ValueError("no labelled example to sample from (every label is the ignore label)")
    if np.any(labels[labelled] < 0) or np.any(labels[labelled] >= num_classes):
        raise ValueError(f"labels outside [0, {num_classes}) other than ignore_label")
    safe = np.where(labelled, labels, 0).astype(np.int64)
    counts = np.bincount(safe[labelled], minlength=num_classes).astype(np.float64)
    per_class = 1.0 / np.maximum(counts, 1.0)
    if sampler == SQRT:
        per_class = np.sqrt(per_class)
    weights = np.where(labelled, per_class[safe], 0.0)
    return weights / weights.sum()


class WeightedDraw:
    """Example indices of training batch `b`: `batch_size` draws with replacement,
    `P(i) ∝ weights[i]`, from `default_rng([seed, b, 2])`.

    Random access and stateless like `EpochPermutation` (batch `b` depends on `(seed, b)`
    only), so grain's iterator state resumes it exactly; the stream id 2 keeps its draws
    apart from the augmentation's (1). Examples of weight 0 are never drawn.
    """

    def __init__(self, weights: np.ndarray, batch_size: int, seed: int):
        weights = np.asarray(weights, np.float64)
        if weights.ndim != 1 or not np.all(np.isfinite(weights) & (weights >= 0)):
            raise ValueError("sampling weights must be a vector of finite values >= 0")
        if not weights.sum() > 0:
            raise ValueError("sampling weights are all 0")
        self.cdf = np.cumsum(weights)
        self.last = int(np.flatnonzero(weights)[-1])  # where u rounding up to cdf[-1] lands
        self.batch_size, self.seed = batch_size, seed

    def __call__(self, batch_index: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, batch_index, _SAMPLER_STREAM])
        # Inverse-CDF: u in [cdf[i-1], cdf[i]) picks i, an empty interval (weight 0) none.
        u = rng.random(self.batch_size) * self.cdf[-1]
        index = np.searchsorted(self.cdf, u, side="right")
        return np.minimum(index, self.last).astype(np.int64)


def train_batches(
    arrays: Arrays,
    task_names: Sequence[str],
    *,
    batch_size: int,
    seed: int,
    augment: Augment | None = None,
    example_weights: np.ndarray | None = None,
    num_threads: int = 0,
) -> grain.DatasetIterator:
    """Endless iterator of full training batches, reshuffled every epoch from `seed`.

    Grain iterates over batch numbers (per-element shuffling in Python would cost more
    than a LeNet step per batch), and `EpochPermutation` (or `WeightedDraw`, with
    `example_weights`) maps each to its example indices. The iterator supports grain's
    `get_state` / `set_state`. With `num_threads=0` (the default) batches are produced
    synchronously: gathering one is cheap, and on a CPU threads compete with XLA for the
    cores (measured: `benchmarks/results/README.md`). With `num_threads > 0` grain
    assembles batches in that many threads, up to `2 * num_threads` ahead; the batches and
    the iterator's state (the position of the next batch handed out) are the same.

    Args:
      arrays: the split's features; only `image` and the tasks' features are used.
      task_names: the tasks whose targets the batches carry.
      batch_size: examples per batch.
      seed: shuffling (and augmentation) seed.
      augment: `augment(arrays, rng) -> arrays` on each batch's raw features (e.g. a
        `DatasetSpec.augment`), with `rng = default_rng([seed, b, 1])` for batch number
        `b`, so batch `b` is the same on every run and after a restore.
      example_weights: None to visit every example once per epoch; else [N] weights
        (e.g. `sampler_weights`) and each batch draws its examples with replacement,
        `P(i) ∝ example_weights[i]` (`WeightedDraw`). An "epoch" then has no meaning for
        the iterator; the experiment still counts N // batch_size steps as one.
      num_threads: grain threads assembling batches ahead (0 = in the caller's thread).
    """
    if num_threads < 0:
        raise ValueError(f"num_threads must be >= 0, got {num_threads}")
    size = len(arrays["image"])
    if size < batch_size:
        raise ValueError(f"training split has {size} examples, fewer than batch_size={batch_size}")
    if example_weights is None:
        indices = EpochPermutation(size, batch_size, seed)
    else:
        if np.shape(example_weights) != (size,):
            raise ValueError(
                f"example_weights has shape {np.shape(example_weights)}, the split has "
                f"{size} examples"
            )
        indices = WeightedDraw(example_weights, batch_size, seed)
    used = {key: arrays[key] for key in ("image", *task_names)}

    def make_batch(batch_index: int) -> dict:
        index = indices(batch_index)
        raw = {key: value[index] for key, value in used.items()}
        if augment is not None:
            raw = augment(raw, np.random.default_rng([seed, batch_index, _AUGMENT_STREAM]))
        return to_batch(raw, task_names)

    return batch_iterator(make_batch, num_threads=num_threads)


def batch_iterator(
    make_batch: Callable[[int], dict],
    *,
    start: int = 0,
    stop: int = np.iinfo(np.int64).max,
    num_threads: int = 0,
) -> grain.DatasetIterator:
    """grain's iterator of `make_batch(b)` for batch numbers `b = start, …, stop − 1`:
    assembled in the calling thread (`num_threads=0`) or `num_threads` threads ahead (2
    batches queued per thread); its state (`get_state` / `set_state`) is the position."""
    dataset = grain.MapDataset.range(start, stop).map(make_batch)
    options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=2 * num_threads)
    return iter(dataset.to_iter_dataset(options))


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
