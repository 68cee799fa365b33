"""Where a run's metrics and notes go: one `MetricWriter` interface, one writer per output.

A run writes each logged train step and each evaluation as a *record*, the dict that
becomes one metrics.jsonl line (`mtl_jax.experiment.records`):

    {"step": 100, "loss": {"left": 0.31, "right": 0.29}, "weights": {...}, "gram_cond": 3.2}
    {"step": 500, "eval": {"left/accuracy": 0.91, ...}, "select_eval": {...}}

and, beside it, `extra` values that are shown but never written to metrics.jsonl: the
wall-clock `steps_per_s`, and the learning rate. metrics.jsonl holds only what the run
computes, so a resumed run writes it bit for bit like an uninterrupted one (and its lines
are those of earlier versions); anything measured in seconds would break that.

| writer | record | extra | notes |
| --- | --- | --- | --- |
| `JsonlWriter` (metrics.jsonl) | one `json.dumps` line, flushed | no | no |
| `TensorBoardWriter` (tensorboard/) | scalars `loss/left`, `eval/left/accuracy` | yes | no |
| `LogFileWriter` (train.log) | one timestamped `key=value` line | yes | timestamped |
| `ConsoleWriter` (stderr, process 0) | the bar's postfix; eval lines | no | `tqdm.write` |

`make_writers(workdir)` builds the set a run uses; `MultiWriter` fans out to several.

Example:

    rate = StepRate(first - 1)
    with make_writers(workdir, bar=bar, purge_step=first) as writer:
        for step in ...:
            extra = {"lr": learning_rate(schedule, step), "steps_per_s": rate(step)}
            writer.write_record(train_record(step, metrics, names), extra=extra)
            with rate.paused():
                writer.write_record(eval_record(evaluation(...)))
        writer.note("done")

TensorBoard event files are written with tensorboardX's protocol buffers and record
framing (the `tensorboard` extra), without TensorFlow and without tensorboardX's
background thread: an event is on disk when `write_record` returns.
"""

from __future__ import annotations

import contextlib
import json
import numbers
import socket
import struct
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Protocol, runtime_checkable

from tqdm import tqdm

from mtl_jax import workdir as wd
from mtl_jax.tasks import is_per_class

TENSORBOARD_EXTRA = "mtl-jax[tensorboard]"
_EVENTS_PREFIX = "events.out.tfevents."


@runtime_checkable
class MetricWriter(Protocol):
    """Receives a run's records and notes; see the module docstring for who writes what."""

    def write_record(
        self, record: Mapping[str, Any], *, extra: Mapping[str, float | None] | None = None
    ) -> None:
        """Writes one metrics.jsonl record (`"step"` plus metrics); `extra` holds values
        that are shown but kept out of metrics.jsonl (`steps_per_s`, `lr`)."""

    def note(self, message: str) -> None:
        """Writes a human-readable message (resuming, a skipped step, the results)."""

    def flush(self) -> None:
        """Makes everything written so far visible to readers of the files."""

    def close(self) -> None:
        """Flushes and releases the files; calling it again does nothing."""


class _Writer:
    """No-op defaults and `with` support for the writers below."""

    def write_record(
        self, record: Mapping[str, Any], *, extra: Mapping[str, float | None] | None = None
    ) -> None:
        del record, extra

    def note(self, message: str) -> None:
        del message

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class _FileWriter(_Writer):
    """A writer that owns one open file: `path`, the closed check, flush and close."""

    def __init__(self, path: str | Path, mode: str):
        self.path = Path(path)
        self._file: IO | None = open(self.path, mode)  # noqa: SIM115 -- closed by close()

    def _open_file(self) -> IO:
        if self._file is None:
            raise ValueError(f"{str(self.path)!r}: writer is closed")
        return self._file

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def scalars(
    record: Mapping[str, Any], extra: Mapping[str, float | None] | None = None
) -> dict[str, float]:
    """The scalar values of a record (without `"step"`) and of `extra`, keyed by
    `/`-joined paths: `loss/left`, `eval/left/accuracy`, `select_eval/...`, `lr`.

    Lists (`non_finite`, matrices), strings, booleans and `None` are left out.
    """
    flat: dict[str, float] = {}

    def visit(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, inner in value.items():
                visit(f"{prefix}/{key}" if prefix else str(key), inner)
        elif isinstance(value, numbers.Real) and not isinstance(value, bool):
            flat[prefix] = float(value)

    visit("", {k: v for k, v in record.items() if k != "step"})
    visit("", dict(extra or {}))
    return flat


class JsonlWriter(_FileWriter):
    """metrics.jsonl: one `json.dumps(record)` line per record, appended and flushed.

    The bytes are those the run loop has always written; `extra` and notes are ignored.
    Open it after the loop has cut the file back to the resumed step
    (`workdir.write_metrics`).
    """

    def __init__(self, path: str | Path):
        super().__init__(path, "a")

    def write_record(
        self, record: Mapping[str, Any], *, extra: Mapping[str, float | None] | None = None
    ) -> None:
        del extra  # wall-clock values would make resumed and uninterrupted runs differ
        file = self._open_file()
        file.write(json.dumps(record) + "\n")
        file.flush()


def _tensorboardx():
    """tensorboardX's event protos and record checksum, or an error naming the extra."""
    try:
        from tensorboardX.proto.event_pb2 import Event, SessionLog
        from tensorboardX.proto.summary_pb2 import Summary
        from tensorboardX.record_writer import masked_crc32c
    except ImportError as error:
        raise ImportError(
            "writing TensorBoard event files needs tensorboardX, which is not installed: "
            f"pip install '{TENSORBOARD_EXTRA}' (or turn TensorBoard logging off)"
        ) from error
    return Event, SessionLog, Summary, masked_crc32c


def tensorboard_available() -> bool:
    """Whether `TensorBoardWriter` can be used (tensorboardX is importable)."""
    try:
        _tensorboardx()
    except ImportError:
        return False
    return True


class TensorBoardWriter(_FileWriter):
    """TensorBoard event files in `logdir`: one event per record holding its `scalars`
    and those of `extra`, at the record's step; notes are ignored.

    Each writer starts a new event file (named so that it sorts after the directory's
    earlier ones). With `purge_step`, the file starts with TensorBoard's restart marker:
    TensorBoard then hides the earlier files' values at steps >= `purge_step`, so a
    resumed run, which writes those steps again, shows each step once.

    Raises:
      ImportError: tensorboardX is not installed (naming the `tensorboard` extra).
    """

    def __init__(self, logdir: str | Path, *, purge_step: int | None = None):
        self._event, session_log, self._summary, self._crc = _tensorboardx()
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        index = len([p for p in self.logdir.iterdir() if p.name.startswith(_EVENTS_PREFIX)])
        while True:
            name = f"{_EVENTS_PREFIX}{int(time.time()):010d}.{socket.gethostname()}.{index}"
            if not (self.logdir / name).exists():
                break
            index += 1
        super().__init__(self.logdir / name, "wb")
        self._write(self._event(wall_time=time.time(), file_version="brain.Event:2"))
        if purge_step is not None:
            start = session_log(status=session_log.START)
            self._write(self._event(wall_time=time.time(), step=purge_step, session_log=start))
        self.flush()

    def _write(self, event) -> None:
        file = self._open_file()
        data = event.SerializeToString()
        header = struct.pack("<Q", len(data))
        file.write(header + struct.pack("<I", self._crc(header)))
        file.write(data + struct.pack("<I", self._crc(data)))

    def write_record(
        self, record: Mapping[str, Any], *, extra: Mapping[str, float | None] | None = None
    ) -> None:
        values = scalars(record, extra)
        if not values:
            return
        summary = self._summary(
            value=[self._summary.Value(tag=tag, simple_value=v) for tag, v in values.items()]
        )
        self._write(self._event(wall_time=time.time(), step=int(record["step"]), summary=summary))
        self.flush()


def read_scalars(logdir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """The scalars of the event files in `logdir`, `{tag: [(step, value), ...]}` in
    writing order, as TensorBoard shows them: a restart marker at step s (a
    `TensorBoardWriter` with `purge_step=s`) drops the earlier values at steps >= s.

    Raises:
      ImportError: tensorboardX is not installed.
      ValueError: a record's checksum is wrong (naming the file); an incomplete last
        record is skipped.
    """
    event_cls, session_log, _, crc = _tensorboardx()
    series: dict[str, list[tuple[int, float]]] = {}
    paths = sorted(p for p in Path(logdir).iterdir() if p.name.startswith(_EVENTS_PREFIX))
    for path in paths:
        data = path.read_bytes()
        offset = 0
        while offset + 12 <= len(data):
            header = data[offset : offset + 8]
            (length,) = struct.unpack("<Q", header)
            (header_crc,) = struct.unpack("<I", data[offset + 8 : offset + 12])
            if crc(header) != header_crc:
                raise ValueError(f"{str(path)!r}: corrupt record length at byte {offset}")
            end = offset + 16 + length
            if end > len(data):
                break  # the last record of a killed process: TensorBoard skips it too
            payload = data[offset + 12 : end - 4]
            (payload_crc,) = struct.unpack("<I", data[end - 4 : end])
            if crc(payload) != payload_crc:
                raise ValueError(f"{str(path)!r}: corrupt record at byte {offset}")
            offset = end
            event = event_cls.FromString(payload)
            if event.HasField("session_log") and event.session_log.status == session_log.START:
                for tag, points in series.items():
                    series[tag] = [(s, v) for s, v in points if s < event.step]
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    series.setdefault(value.tag, []).append((event.step, value.simple_value))
    return series


def _format_value(value: float) -> str:
    return f"{value:.6g}"


def record_line(record: Mapping[str, Any], extra: Mapping[str, float | None] | None = None) -> str:
    """`step 100  loss/left=0.31 ... lr=0.001 steps_per_s=12.5` (with `non_finite=[...]`
    when the record names tasks whose loss or gradient was not finite)."""
    cells = [f"{tag}={_format_value(v)}" for tag, v in scalars(record, extra).items()]
    if record.get("non_finite"):
        cells.append(f"non_finite={json.dumps(record['non_finite'])}")
    return f"step {record['step']}  " + " ".join(cells)


def _local_time() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


class LogFileWriter(_FileWriter):
    """train.log: a timestamped line per note and per record (`record_line`), appended.

    `clock` returns the time stamp (for tests); the default is local time to the second.
    """

    def __init__(self, path: str | Path, *, clock: Callable[[], str] = _local_time):
        super().__init__(path, "a")
        self._clock = clock

    def _line(self, text: str) -> None:
        file = self._open_file()
        stamp = self._clock()
        for line in text.splitlines() or [""]:
            file.write(f"{stamp} {line}\n")
        file.flush()

    def write_record(
        self, record: Mapping[str, Any], *, extra: Mapping[str, float | None] | None = None
    ) -> None:
        self._line(record_line(record, extra))

    def note(self, message: str) -> None:
        self._line(message)


def _is_process_zero() -> bool:
    import jax  # not at import time: the writers themselves need no JAX

    return jax.process_index() == 0


class ConsoleWriter(_Writer):
    """The terminal, on process 0 only: notes (and, with `evals`, one line per
    evaluation, per-class metrics left out: they are in the other writers' files) go
    through `tqdm.write`, so they print above the progress bar instead of breaking it;
    a train record's losses become `bar`'s postfix.

    Args:
      bar: the run's progress bar, or None.
      file: where lines go; None means `sys.stderr` at the time of writing.
      enabled: None means "on process 0" (`jax.process_index() == 0`).
      evals: also print evaluation records.
    """

    def __init__(
        self,
        bar: tqdm | None = None,
        *,
        file: IO[str] | None = None,
        enabled: bool | None = None,
        evals: bool = True,
    ):
        self.bar = bar
        self._file = file
        self.enabled = _is_process_zero() if enabled is None else enabled
        self.evals = evals

    def _write(self, message: str) -> None:
        tqdm.write(message, file=self._file or sys.stderr)

    def note(self, message: str) -> None:
        if self.enabled:
            self._write(message)

    def write_record(
        self, record: Mapping[str, Any], *, extra: Mapping[str, float | None] | None = None
    ) -> None:
        if not self.enabled:
            return
        if "eval" in record:
            if self.evals:
                values = scalars(
                    {
                        split: {k: v for k, v in record[split].items() if not is_per_class(k)}
                        for split in ("eval", "select_eval")
                        if split in record
                    }
                )
                cells = " ".join(f"{tag}={_format_value(v)}" for tag, v in values.items())
                self._write(f"step {record['step']}  {cells}")
        elif self.bar is not None and isinstance(record.get("loss"), Mapping):
            self.bar.set_postfix({n: f"{v:.3f}" for n, v in record["loss"].items()})


class MultiWriter(_Writer):
    """Sends everything to each of `writers`, in order; `close` closes every one of
    them even when one fails (the first error is raised after the others closed)."""

    def __init__(self, writers: Sequence[MetricWriter]):
        self.writers = tuple(writers)

    def write_record(
        self, record: Mapping[str, Any], *, extra: Mapping[str, float | None] | None = None
    ) -> None:
        for writer in self.writers:
            writer.write_record(record, extra=extra)

    def note(self, message: str) -> None:
        for writer in self.writers:
            writer.note(message)

    def flush(self) -> None:
        for writer in self.writers:
            writer.flush()

    def close(self) -> None:
        first = None
        for writer in self.writers:
            try:
                writer.close()
            except Exception as error:  # close the others first
                first = first or error
        if first is not None:
            raise first


def make_writers(
    workdir: str | Path,
    *,
    tensorboard: bool | None = None,
    bar: tqdm | None = None,
    purge_step: int | None = None,
    enabled: bool | None = None,
) -> MultiWriter:
    """The writers of a run in `workdir`: metrics.jsonl, train.log, tensorboard/ and
    the console on process 0; nothing on the other processes.

    Args:
      tensorboard: True writes event files (tensorboardX must be installed), False does
        not, None writes them when tensorboardX is installed.
      bar: the progress bar whose postfix shows the losses; while it is shown, each
        evaluation is also printed above it.
      purge_step: the run's first step when it resumes, so that TensorBoard hides the
        values an interrupted run wrote at steps >= it (the resumed run writes them again).
      enabled: whether this process writes; None means process 0.

    Raises:
      ImportError: `tensorboard` is True and tensorboardX is not installed.
    """
    if not (_is_process_zero() if enabled is None else enabled):
        return MultiWriter([])
    workdir = Path(workdir)
    if tensorboard is None:
        tensorboard = tensorboard_available()
    writers: list[MetricWriter] = [
        JsonlWriter(workdir / wd.METRICS_FILE),
        LogFileWriter(workdir / wd.LOG_FILE),
    ]
    try:
        if tensorboard:
            writers.append(TensorBoardWriter(workdir / wd.TENSORBOARD_DIR, purge_step=purge_step))
    except BaseException:
        MultiWriter(writers).close()
        raise
    # Evaluation lines on the terminal only beside a shown bar (not in tests, sweeps).
    writers.append(ConsoleWriter(bar, enabled=True, evals=bar is not None and not bar.disable))
    return MultiWriter(writers)


class StepRate:
    """Training steps per second between calls, not counting time spent in `paused()`.

    The interval that contains the first step also contains its compilation; the loop
    fetches each step's finiteness flags, so the time is that of finished steps.

    Args:
      step: the step count now (the last step done; 0 before training).
      clock: seconds as a float (for tests).
    """

    def __init__(self, step: int, *, clock: Callable[[], float] = time.perf_counter):
        self._clock = clock
        self._step = step
        self._start = clock()
        self._paused = 0.0

    def __call__(self, step: int) -> float | None:
        """Steps per second since the previous call (or construction); None when no
        step or no time has passed. Starts the next interval."""
        now = self._clock()
        seconds = now - self._start - self._paused
        steps = step - self._step
        self._step, self._start, self._paused = step, now, 0.0
        if steps <= 0 or seconds <= 0:
            return None
        return steps / seconds

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Time inside (an evaluation, a checkpoint) is not counted as training time."""
        start = self._clock()
        try:
            yield
        finally:
            self._paused += self._clock() - start


def learning_rate(schedule: Callable[[Any], Any], step: int) -> float:
    """The learning rate the update of (1-based) `step` used: `schedule(step - 1)`,
    since optax evaluates a schedule at the count of updates done before."""
    return float(schedule(step - 1))


__all__ = [
    "TENSORBOARD_EXTRA",
    "ConsoleWriter",
    "JsonlWriter",
    "LogFileWriter",
    "MetricWriter",
    "MultiWriter",
    "StepRate",
    "TensorBoardWriter",
    "learning_rate",
    "make_writers",
    "read_scalars",
    "record_line",
    "scalars",
    "tensorboard_available",
]
