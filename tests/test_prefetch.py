"""`DevicePrefetcher`: the same batches in the same order for every size, the state of
the batches consumed (not of those queued), and errors raised where the batch is taken."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from mtl_jax.data import train_batches
from mtl_jax.data.prefetch import DevicePrefetcher


def _arrays(n=40):
    rng = np.random.default_rng(0)
    return {"image": rng.integers(0, 255, (n, 4, 4, 1), np.uint8), "a": np.arange(n)}


def _iterator():
    return train_batches(_arrays(), ("a",), batch_size=8, seed=3)


@pytest.mark.parametrize("size", [0, 1, 3])
def test_batches_and_states_equal_the_iterator_alone(size):
    plain = _iterator()
    expected = []
    for _ in range(12):
        expected.append((next(plain)["targets"]["a"], plain.get_state()))
    with DevicePrefetcher(_iterator(), lambda b: b["targets"]["a"] * 10, size) as batches:
        for targets, state in expected:
            np.testing.assert_array_equal(next(batches), targets * 10)
            assert batches.get_state() == state


@pytest.mark.parametrize("size", [0, 2])
def test_resuming_from_its_state_continues_after_the_last_batch_taken(size):
    with DevicePrefetcher(_iterator(), lambda b: b["targets"]["a"], 2) as batches:
        taken = [next(batches) for _ in range(5)]
        state = batches.get_state()
        after = [next(batches) for _ in range(4)]
    np.testing.assert_array_equal(np.concatenate(taken)[:8], next(_iterator())["targets"]["a"])
    resumed = DevicePrefetcher(_iterator(), lambda b: b["targets"]["a"], size)
    resumed.set_state(state)
    with resumed:
        for expected in after:
            np.testing.assert_array_equal(next(resumed), expected)


def test_placement_runs_in_the_background_thread_only_when_prefetching():
    threads = []

    def put(batch):
        threads.append(threading.current_thread())
        return batch

    with DevicePrefetcher(_iterator(), put, 0) as batches:
        next(batches)
    with DevicePrefetcher(_iterator(), put, 2) as batches:
        next(batches)
    assert threads[0] is threading.main_thread()
    assert threads[1] is not threading.main_thread()


def test_an_error_in_the_thread_is_raised_by_next_after_the_good_batches():
    calls = []

    def put(batch):
        calls.append(1)
        if len(calls) == 3:
            raise ValueError("bad batch 3")
        return batch

    with DevicePrefetcher(_iterator(), put, 4) as batches:
        next(batches), next(batches)
        with pytest.raises(ValueError, match="bad batch 3"):
            next(batches)
        with pytest.raises(RuntimeError, match="closed"):
            next(batches)


def test_the_end_of_a_finite_iterator_ends_the_iteration():
    class Finite:
        def __init__(self):
            self.items, self.position = [1, 2, 3], 0

        def __next__(self):
            if self.position == len(self.items):
                raise StopIteration
            self.position += 1
            return self.items[self.position - 1]

        def get_state(self):
            return self.position

    with DevicePrefetcher(Finite(), lambda x: x, 2) as batches:
        assert list(batches) == [1, 2, 3]


def test_close_stops_a_producer_blocked_on_a_full_queue():
    batches = DevicePrefetcher(_iterator(), lambda b: b, 1)
    next(batches)
    batches.close()
    assert not batches._thread.is_alive()


def test_set_state_after_prefetching_and_negative_sizes_are_refused():
    with pytest.raises(ValueError, match="prefetch size"):
        DevicePrefetcher(_iterator(), lambda b: b, -1)
    with DevicePrefetcher(_iterator(), lambda b: b, 1) as batches:
        next(batches)
        with pytest.raises(RuntimeError, match="set_state"):
            batches.set_state(batches.get_state())


def test_grain_threads_give_the_same_batches_and_states():
    plain = _iterator()
    threaded = train_batches(_arrays(), ("a",), batch_size=8, seed=3, num_threads=2)
    for _ in range(7):
        np.testing.assert_array_equal(next(threaded)["image"], next(plain)["image"])
        assert threaded.get_state() == plain.get_state()
    with pytest.raises(ValueError, match="num_threads"):
        train_batches(_arrays(), ("a",), batch_size=8, seed=3, num_threads=-1)
