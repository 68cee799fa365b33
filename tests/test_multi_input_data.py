"""Multi-input batching: per-task cycles, exact resume, epochs, padding, errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from mtl_jax.data import multi_input

SIZES = {"big": 23, "mid": 10, "small": 4}


def make_arrays(sizes=SIZES, shape=(2, 3, 1)):
    """Per-task arrays whose image pixels and label are the example's index."""
    out = {}
    for task, n in sizes.items():
        index = np.arange(n)
        image = np.broadcast_to(index[:, None, None, None], (n, *shape)).astype(np.uint8)
        out[task] = {"image": image, "label": index.astype(np.int64)}
    return out


def take(iterator, n):
    return list(itertools.islice(iterator, n))


def stream(batches, task):
    """The example indices task `task` visited, in order, over `batches`."""
    return np.concatenate([b["targets"][task] for b in batches])


def test_batch_structure_and_dtypes():
    arrays = make_arrays()
    batch = next(multi_input.train_batches(arrays, batch_size=3, seed=0))
    assert sorted(batch) == ["inputs", "targets"]
    assert list(batch["inputs"]) == sorted(SIZES) == list(batch["targets"])
    for task in SIZES:
        assert batch["inputs"][task].shape == (3, 2, 3, 1)
        assert batch["inputs"][task].dtype == np.float32
        assert batch["targets"][task].shape == (3,) and batch["targets"][task].dtype == np.int32
        # The image and the label come from the same example (uint8 scaled to [0, 1]).
        np.testing.assert_array_equal(
            batch["inputs"][task][:, 0, 0, 0] * 255.0, batch["targets"][task]
        )


def test_float_images_are_kept():
    arrays = make_arrays()
    arrays["big"]["image"] = arrays["big"]["image"].astype(np.float32) - 5.0  # normalised
    batch = next(multi_input.train_batches(arrays, batch_size=2, seed=0))
    np.testing.assert_array_equal(batch["inputs"]["big"][:, 0, 0, 0], batch["targets"]["big"] - 5.0)


def test_deterministic_and_seed_dependent():
    arrays = make_arrays()
    a = take(multi_input.train_batches(arrays, batch_size=3, seed=7), 12)
    b = take(multi_input.train_batches(arrays, batch_size=3, seed=7), 12)
    c = take(multi_input.train_batches(arrays, batch_size=3, seed=8), 12)
    for task in SIZES:
        np.testing.assert_array_equal(stream(a, task), stream(b, task))
        np.testing.assert_array_equal(
            np.concatenate([x["inputs"][task] for x in a]),
            np.concatenate([x["inputs"][task] for x in b]),
        )
    assert any(not np.array_equal(stream(a, t), stream(c, t)) for t in SIZES)


@pytest.mark.parametrize("start", [1, 5, 13, 29])
def test_resume_at_any_index_equals_the_uninterrupted_stream(start):
    arrays = make_arrays()
    sizes = {"big": 3, "mid": 2, "small": 3}
    full = take(multi_input.train_batches(arrays, batch_size=sizes, seed=3), 40)
    resumed = list(multi_input.train_batches(arrays, batch_size=sizes, seed=3, start=start, end=40))
    assert len(resumed) == 40 - start
    for x, y in zip(full[start:], resumed, strict=True):
        for task in SIZES:
            np.testing.assert_array_equal(x["targets"][task], y["targets"][task])
            np.testing.assert_array_equal(x["inputs"][task], y["inputs"][task])


def test_grain_state_restores_the_stream():
    arrays = make_arrays()
    it = multi_input.train_batches(arrays, batch_size=3, seed=1)
    take(it, 6)
    state = it.get_state()
    expected = take(it, 4)
    restored = multi_input.train_batches(arrays, batch_size=3, seed=1)
    restored.set_state(state)
    for x, y in zip(expected, take(restored, 4), strict=True):
        for task in SIZES:
            np.testing.assert_array_equal(x["targets"][task], y["targets"][task])


def test_each_task_cycles_through_its_own_reshuffled_permutations():
    arrays = make_arrays()
    batch = 3
    num_batches = 40  # 120 positions: 5 cycles of big (23), 12 of mid, 30 of small
    batches = list(multi_input.train_batches(arrays, batch_size=batch, seed=0, end=num_batches))
    sampler = multi_input.CycledPermutations(SIZES, dict.fromkeys(SIZES, batch), seed=0)
    cycles = {}
    for task, n in SIZES.items():
        seen = stream(batches, task)
        full = len(seen) // n
        cycles[task] = seen[: full * n].reshape(full, n)
        for c, row in enumerate(cycles[task]):
            # Every example exactly once per cycle, in the cycle's own permutation.
            assert sorted(row) == list(range(n))
            np.testing.assert_array_equal(row, sampler.permutation(task, c))
        # Reshuffled each time the task is exhausted.
        orders = {tuple(row) for row in cycles[task]}
        if n > 4:
            assert len(orders) == len(cycles[task])
        else:  # 30 cycles of only 4! = 24 possible orders: some repeat
            assert len(orders) > len(cycles[task]) / 2
    # Tasks of the same size do not share a permutation stream.
    twins = multi_input.CycledPermutations({"x": 10, "y": 10}, {"x": 2, "y": 2}, seed=0)
    assert not np.array_equal(twins.permutation("x", 0), twins.permutation("y", 0))
    # A task's stream depends on its name and the seed only, not on the other tasks.
    alone = multi_input.CycledPermutations({"mid": 10}, {"mid": 3}, seed=0)
    np.testing.assert_array_equal(alone.permutation("mid", 2), cycles["mid"][2])


def test_task_seed_is_stable_and_name_dependent():
    assert multi_input.task_seed(0, "amazon") == multi_input.task_seed(0, "amazon")
    seeds = {multi_input.task_seed(s, t) for s in (0, 1) for t in ("amazon", "dslr", "webcam")}
    assert len(seeds) == 6
    # Golden values: the stream must not change with the Python process (no hash()).
    assert multi_input.task_seed(0, "dslr") == 5129245974240583608
    perm = multi_input.CycledPermutations({"dslr": 6}, {"dslr": 2}, seed=0).permutation("dslr", 0)
    assert perm.tolist() == [4, 5, 2, 3, 1, 0]


def test_epoch_is_defined_by_the_largest_dataset():
    sizes = {"big": 24, "mid": 10, "small": 4}
    arrays = make_arrays(sizes)
    assert multi_input.steps_per_epoch(arrays, batch_size=4) == 6
    floor = {"big": 5, "mid": 5, "small": 4}
    assert multi_input.steps_per_epoch(arrays, batch_size=floor) == 4  # floor(24 / 5)
    # Per-task batch sizes: the task with the most batches defines the epoch.
    per_task = {"big": 12, "mid": 1, "small": 2}
    assert multi_input.steps_per_epoch(arrays, batch_size=per_task) == 10
    steps = multi_input.steps_per_epoch(arrays, batch_size=4)
    batches = list(multi_input.train_batches(arrays, batch_size=4, seed=5, end=3 * steps))
    big = stream(batches, "big").reshape(3, 24)
    for epoch in big:  # the largest dataset: every example exactly once per epoch
        assert sorted(epoch) == list(range(24))
    assert len({tuple(e) for e in big}) == 3


def test_eval_batches_zip_tasks_with_padding():
    arrays = make_arrays()
    batches = list(multi_input.eval_batches(arrays, batch_size=4))
    assert len(batches) == 6  # ceil(23 / 4)
    for task, n in SIZES.items():
        valid = np.concatenate([b["valid"][task] for b in batches])
        labels = stream(batches, task)
        assert valid.sum() == n
        np.testing.assert_array_equal(labels[valid], np.arange(n))  # in order, once
        assert np.all(labels[~valid] == n - 1)  # padding repeats the last example
        for b in batches:
            assert b["inputs"][task].shape == (4, 2, 3, 1) and b["valid"][task].dtype == bool
    assert not batches[-1]["valid"]["small"].any()


def test_eval_batches_per_task():
    arrays = make_arrays()
    batches = list(
        multi_input.eval_batches(arrays, batch_size={"big": 5, "mid": 4, "small": 8}, per_task=True)
    )
    tasks = [next(iter(b["inputs"])) for b in batches]
    assert tasks == ["big"] * 5 + ["mid"] * 3 + ["small"]
    for b in batches:
        assert len(b["inputs"]) == len(b["targets"]) == len(b["valid"]) == 1
    small = batches[-1]
    assert small["valid"]["small"].tolist() == [True] * 4 + [False] * 4
    assert small["inputs"]["small"].shape == (8, 2, 3, 1)


def test_errors_name_the_task():
    arrays = make_arrays()
    with pytest.raises(ValueError, match="'small'.*empty"):
        empty = {**arrays, "small": {"image": np.zeros((0, 2, 3, 1)), "label": np.zeros(0)}}
        multi_input.train_batches(empty, batch_size=2, seed=0)
    with pytest.raises(ValueError, match="'mid'.*10 images but 9 labels"):
        bad = {**arrays, "mid": {"image": arrays["mid"]["image"], "label": np.zeros(9)}}
        multi_input.train_batches(bad, batch_size=2, seed=0)
    with pytest.raises(ValueError, match="'small'.*batch size 5 is larger than its 4"):
        multi_input.train_batches(arrays, batch_size=5, seed=0)
    with pytest.raises(ValueError, match="'mid'.*no \\['label'\\]"):
        multi_input.eval_batches({"mid": {"image": np.zeros(3)}}, batch_size=2)
    with pytest.raises(ValueError, match="batch_size has tasks"):
        multi_input.train_batches(arrays, batch_size={"big": 2}, seed=0)
    with pytest.raises(ValueError, match="'big'.*integer >= 1"):
        multi_input.train_batches(arrays, batch_size=0, seed=0)
    with pytest.raises(ValueError, match="at least one task"):
        multi_input.train_batches({}, batch_size=2, seed=0)
    # Evaluation may use a batch larger than a task's dataset (it is padded).
    (batch,) = multi_input.eval_batches(arrays, batch_size=30)
    assert batch["valid"]["small"].sum() == 4
