"""Multi-input batching: one dataset per task, of different sizes, one step counter.

In the multi-input setting (Office-31, Office-Home; DESIGN.md) every task has its own
images and labels, `{task: {"image": [N_t, H, W, C], "label": [N_t]}}` (`TaskArrays`),
and each training step takes one batch of every task:

    {"inputs": {task: float32 [B_t, H, W, C]}, "targets": {task: int32 [B_t]}}

Task t reads an endless stream of its examples: stream position `p` is example
`perm_t(c)[p mod N_t]` of cycle `c = p // N_t`, where `perm_t(c)` is a permutation of
`N_t` drawn from `default_rng([s_t, c])` and `s_t` is derived from `(seed, t)` (a hash of
the task's name, not Python's salted `hash()`). Batch `b` of task t holds positions
`b·B_t, ..., b·B_t + B_t − 1`. So each task is reshuffled every time it is exhausted,
with a permutation stream of its own; every example appears exactly once per cycle of
its task (a batch may span two cycles, as in `pipeline.EpochPermutation`, which this
reuses per task); and batch `b` is a pure function of `(seed, b)`: resuming at any batch
index is exact, with no iterator state beyond the index.

An epoch is `steps_per_epoch = max_t ⌊N_t / B_t⌋` steps: defined by the task with the
most batches (the largest dataset for one shared batch size), rounded down as the
single-input experiment counts `N // batch_size` steps per epoch, and the number of
steps an epoch of LibMTL's multi-input trainer takes (`max` over the tasks of
`len(DataLoader(..., drop_last=True))`, `LibMTL/trainer.py`). Smaller tasks cycle
several times per epoch. Unlike torch's `drop_last`, no example is skipped: the
remainder of a cycle starts the next batch; when `B_t` divides `N_t` the largest task
sees each example exactly once per epoch.

A batch size larger than a task's dataset is an error (a batch would hold the same
example twice), as in `pipeline.train_batches`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Mapping

import grain
import numpy as np

from mtl_jax.data.pipeline import Arrays, EpochPermutation, batch_iterator

TaskArrays = Mapping[str, Arrays]

IMAGE = "image"
LABEL = "label"

# Second entry of a task's seed sequence, apart from pipeline's streams (1, 2).
_TASK_STREAM = 3


def name_words(name: str) -> list[int]:
    """Four uint32 words of SHA-256 of the task name (stable across processes)."""
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]


def task_seed(seed: int, task: str) -> int:
    """The seed of task `task`'s permutation stream, derived from `(seed, task)`.

    A 64-bit integer from `SeedSequence([seed, 3, *sha256(task)[:16]])`; cycle `c` of the
    task is then `default_rng([task_seed, c]).permutation(N_t)`.
    """
    words = np.random.SeedSequence([seed, _TASK_STREAM, *name_words(task)]).generate_state(2)
    return int(words[0]) | (int(words[1]) << 32)


def check_task_arrays(arrays: TaskArrays) -> dict[str, int]:
    """`{task: N_t}` of per-task arrays, after checking them.

    Raises:
      ValueError: no task; a task without `image` or `label`, with no example, or whose
        images and labels differ in number (the message names the task).
    """
    if not arrays:
        raise ValueError("multi-input data needs at least one task; got none")
    sizes = {}
    for task in sorted(arrays):
        features = arrays[task]
        missing = [key for key in (IMAGE, LABEL) if key not in features]
        if missing:
            raise ValueError(f"task {task!r}: arrays have no {missing}; keys: {sorted(features)}")
        num_images, num_labels = len(features[IMAGE]), len(features[LABEL])
        if num_images != num_labels:
            raise ValueError(
                f"task {task!r}: {num_images} images but {num_labels} labels; they must match"
            )
        if num_images == 0:
            raise ValueError(f"task {task!r}: the dataset is empty")
        sizes[task] = num_images
    return sizes


def batch_sizes(tasks: Mapping[str, object], batch_size: int | Mapping[str, int]) -> dict[str, int]:
    """`{task: B_t}` from one batch size for all tasks or one per task.

    Raises:
      ValueError: a batch size below 1, or a per-task mapping whose keys are not the tasks.
    """
    if isinstance(batch_size, Mapping):
        if set(batch_size) != set(tasks):
            raise ValueError(
                f"batch_size has tasks {sorted(batch_size)}; the data has {sorted(tasks)}"
            )
        sizes = {task: batch_size[task] for task in sorted(tasks)}
    else:
        sizes = dict.fromkeys(sorted(tasks), batch_size)
    for task, size in sizes.items():
        if not (isinstance(size, int | np.integer) and size >= 1):
            raise ValueError(f"task {task!r}: batch size must be an integer >= 1, got {size!r}")
    return {task: int(size) for task, size in sizes.items()}


class CycledPermutations:
    """Per-task example indices of training batch `b` (see the module docstring).

    Random access and stateless: `self(b)` depends on `(seed, b)` only.

    Args:
      sizes: `{task: N_t}`.
      batch_sizes: `{task: B_t}`, each in `[1, N_t]`.
      seed: the run's data seed.

    Raises:
      ValueError: a batch size larger than its task's dataset (naming the task).
    """

    def __init__(self, sizes: Mapping[str, int], batch_sizes: Mapping[str, int], seed: int):
        for task in sorted(sizes):
            if batch_sizes[task] > sizes[task]:
                raise ValueError(
                    f"task {task!r}: batch size {batch_sizes[task]} is larger than its "
                    f"{sizes[task]} training examples"
                )
        self.seed = seed
        self.sizes = {task: sizes[task] for task in sorted(sizes)}
        self.batch_sizes = {task: batch_sizes[task] for task in self.sizes}
        self._streams = {
            task: EpochPermutation(size, self.batch_sizes[task], task_seed(seed, task))
            for task, size in self.sizes.items()
        }

    @property
    def steps_per_epoch(self) -> int:
        """`max_t ⌊N_t / B_t⌋` (≥ 1)."""
        return max(n // self.batch_sizes[t] for t, n in self.sizes.items())

    def permutation(self, task: str, cycle: int) -> np.ndarray:
        """[N_t] the order in which cycle `cycle` of task `task` visits its examples."""
        return self._streams[task].permutation(cycle)

    def __call__(self, batch_index: int) -> dict[str, np.ndarray]:
        return {task: stream(batch_index) for task, stream in self._streams.items()}


def steps_per_epoch(arrays: TaskArrays, *, batch_size: int | Mapping[str, int]) -> int:
    """Training steps per epoch, `max_t ⌊N_t / B_t⌋` (see the module docstring).

    Example:
      >>> data = {"a": {"image": np.zeros((10, 1)), "label": np.zeros(10)},
      ...         "b": {"image": np.zeros((3, 1)), "label": np.zeros(3)}}
      >>> steps_per_epoch(data, batch_size=3)
      3
    """
    sizes = check_task_arrays(arrays)
    per_task = batch_sizes(sizes, batch_size)
    return CycledPermutations(sizes, per_task, seed=0).steps_per_epoch


def _image(image: np.ndarray) -> np.ndarray:
    """float32 images: uint8 scaled to [0, 1] (as `pipeline.to_batch`), floats kept."""
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    return image.astype(np.float32, copy=False)


def _label(label: np.ndarray) -> np.ndarray:
    if np.issubdtype(label.dtype, np.signedinteger):
        return label.astype(np.int32, copy=False)
    return label


def gather(arrays: TaskArrays, indices: Mapping[str, np.ndarray]) -> dict:
    """The multi-input batch of examples `indices[task]` of every task.

    Returns:
      `{"inputs": {task: float32 [B_t, ...]}, "targets": {task: [B_t, ...]}}`, integer
      labels as int32, tasks in sorted order.
    """
    inputs, targets = {}, {}
    for task in sorted(indices):
        index = indices[task]
        inputs[task] = _image(arrays[task][IMAGE][index])
        targets[task] = _label(np.asarray(arrays[task][LABEL][index]))
    return {"inputs": inputs, "targets": targets}


def train_batches(
    arrays: TaskArrays,
    *,
    batch_size: int | Mapping[str, int],
    seed: int,
    start: int = 0,
    end: int | None = None,
    num_threads: int = 0,
) -> grain.DatasetIterator:
    """Iterator of multi-input training batches `start, start + 1, ..., end − 1`.

    Batch `b` is `gather(arrays, CycledPermutations(...)(b))` (see the module docstring),
    so `train_batches(..., start=k)` continues the stream of `start=0` exactly from batch
    `k`. As `pipeline.train_batches`, grain iterates over batch numbers (synchronously, or
    assembling batches ahead in `num_threads` threads) and the iterator supports
    `get_state` / `set_state` (a state is the position relative to `start`: restore it
    into an iterator built with the same `start`).

    Args:
      arrays: `{task: {"image": [N_t, H, W, C], "label": [N_t]}}`; uint8 images are
        scaled to [0, 1], float images (e.g. already normalised) are kept.
      batch_size: examples per task and batch: one for all tasks, or `{task: B_t}`.
        Each `B_t` must be at most `N_t`.
      seed: shuffling seed.
      start: the first batch index.
      end: one past the last batch index; None for an endless iterator.
      num_threads: grain threads assembling batches ahead (0: in the calling thread);
        the batches are the same either way.

    Returns:
      An iterator of `{"inputs": {task: float32 [B_t, H, W, C]}, "targets": {task: int32
      [B_t]}}`.

    Raises:
      ValueError: see `check_task_arrays` and `batch_sizes`; a batch size larger than a
        task's dataset; `start` < 0 or `end` < `start`.

    Example:
      >>> data = {"a": {"image": np.zeros((4, 2, 2, 1), np.uint8), "label": np.arange(4)},
      ...         "b": {"image": np.zeros((2, 2, 2, 1), np.uint8), "label": np.arange(2)}}
      >>> batch = next(train_batches(data, batch_size=2, seed=0))
      >>> batch["inputs"]["a"].shape, batch["targets"]["b"].dtype
      ((2, 2, 2, 1), dtype('int32'))
    """
    sizes = check_task_arrays(arrays)
    indices = CycledPermutations(sizes, batch_sizes(sizes, batch_size), seed)
    stop = np.iinfo(np.int64).max if end is None else end
    if start < 0 or stop < start:
        raise ValueError(f"need 0 <= start <= end, got start={start}, end={end}")

    def make_batch(batch_index: int) -> dict:
        return gather(arrays, indices(batch_index))

    return batch_iterator(make_batch, start=start, stop=stop, num_threads=num_threads)


def eval_batches(
    arrays: TaskArrays, *, batch_size: int | Mapping[str, int], per_task: bool = False
) -> Iterator[dict]:
    """Every example of every task once, in order, in full batches padded with `valid`.

    As `pipeline.eval_batches`: a task's last batch is filled up with copies of its last
    example and `valid` marks the real ones (padding gets no loss and no metric, see
    `jacobian.loss_vector`); every batch has the same shapes, so an evaluation step
    compiles once.

    Args:
      arrays: `{task: {"image": [N_t, ...], "label": [N_t]}}`.
      batch_size: per task and batch, one for all tasks or `{task: B_t}` (may exceed
        `N_t`: the batch is padded).
      per_task: False: batch `k` holds batch `k` of every task, `max_t ⌈N_t / B_t⌉`
        batches in all (a task already exhausted is all padding, `valid` all false).
        True: each task's batches in turn, tasks in sorted order, each batch holding that
        task only (`⌈N_t / B_t⌉` per task; no all-padding batches, one compile per task).

    Returns:
      An iterator of `{"inputs": {task: float32 [B_t, ...]}, "targets": {task: [B_t]},
      "valid": {task: bool [B_t]}}`.

    Raises:
      ValueError: see `check_task_arrays` and `batch_sizes`.
    """
    sizes = check_task_arrays(arrays)
    per_size = batch_sizes(sizes, batch_size)  # checked here, not at the first next()
    if per_task:
        plan = [
            ([task], k)
            for task in sorted(sizes)
            for k in range(math.ceil(sizes[task] / per_size[task]))
        ]
    else:
        num_batches = max(math.ceil(n / per_size[t]) for t, n in sizes.items())
        plan = [(sorted(sizes), k) for k in range(num_batches)]
    return (_eval_batch(arrays, sizes, per_size, tasks, k) for tasks, k in plan)


def _eval_batch(
    arrays: TaskArrays,
    sizes: Mapping[str, int],
    per_size: Mapping[str, int],
    tasks: list[str],
    k: int,
) -> dict:
    """Batch `k` of each of `tasks`' evaluation sets, padded, with `valid`."""
    indices, valid = {}, {}
    for task in tasks:
        index = k * per_size[task] + np.arange(per_size[task])
        valid[task] = index < sizes[task]
        indices[task] = np.minimum(index, sizes[task] - 1)
    return {**gather(arrays, indices), "valid": valid}
