"""Training batches placed on the devices ahead of the step that uses them.

`DevicePrefetcher(iterator, put, size)` wraps a checkpointable batch iterator (grain's
`DatasetIterator`: `next`, `get_state`, `set_state`) and a placement function (e.g.
`parallel.shard_batch` on the run's mesh). With `size > 0` a background thread takes the
next batches from `iterator`, places them with `put` (`jax.device_put` copies while the
current step runs) and queues at most `size` of them; with `size == 0` each `next` takes
and places one batch in the caller's thread, as without the wrapper.

Checkpoints stay exact: the thread records `iterator.get_state()` right after taking each
batch, and `get_state()` returns the state recorded with the last batch the *caller*
took, not the iterator's own (which has run ahead by the queued batches). Restoring that
state and iterating again gives the batch after the last one consumed. The batches, and
so every result, are the same for every `size`.

An exception raised by `iterator` or `put` in the thread is raised by the `next` call
that would have returned that batch. `close()` (or leaving the `with` block) stops the
thread; batches still queued are dropped.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

_STOP_POLL_S = 0.1  # how often a blocked producer checks for close()


class DevicePrefetcher:
    """Iterator of placed batches, up to `size` prepared ahead in a background thread.

    Args:
      iterator: the host batches; must support `get_state()` and `set_state(state)`.
      put: places one host batch (e.g. `lambda b: parallel.shard_batch(b, mesh)`).
      size: batches prepared ahead; 0 = none (no thread).
    """

    def __init__(self, iterator: Any, put: Callable[[Any], Any], size: int):
        if size < 0:
            raise ValueError(f"prefetch size must be >= 0, got {size}")
        self._iterator, self._put, self._size = iterator, put, size
        self._state = iterator.get_state()
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def __iter__(self) -> DevicePrefetcher:
        return self

    def __next__(self):
        if self._stop.is_set():
            raise RuntimeError("the prefetcher is closed")
        if self._size == 0:
            batch = self._put(next(self._iterator))
            self._state = self._iterator.get_state()
            return batch
        if self._thread is None:
            self._start()
        kind, value, state = self._queue.get()
        if kind == "error":
            self.close()
            raise value
        self._state = state
        return value

    def get_state(self):
        """The iterator state after the last batch returned by `next`."""
        return self._state

    def set_state(self, state) -> None:
        """Continues after the batch `state` was recorded with (before the first `next`)."""
        if self._thread is not None:
            raise RuntimeError("set_state after batches were prefetched")
        self._iterator.set_state(state)
        self._state = self._iterator.get_state()

    def _start(self) -> None:
        self._queue = queue.Queue(maxsize=self._size)
        self._thread = threading.Thread(target=self._produce, name="mtl_jax-prefetch", daemon=True)
        self._thread.start()

    def _offer(self, item) -> bool:
        """Queues `item`, waiting for room; False once closed."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_STOP_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        while not self._stop.is_set():
            try:
                host = next(self._iterator)
                state = self._iterator.get_state()
                item = ("batch", self._put(host), state)
            except BaseException as error:  # handed to the consumer, raised there
                self._offer(("error", error, None))
                return
            if not self._offer(item):
                return

    def close(self) -> None:
        """Stops the background thread (queued batches are dropped)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def __enter__(self) -> DevicePrefetcher:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
