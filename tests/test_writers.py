"""The metric writers: metrics.jsonl bytes as the loop always wrote them, TensorBoard
event files that read back, train.log, the console through tqdm, the fan-out."""

from __future__ import annotations

import io
import json
import struct
import sys

import numpy as np
import optax
import pytest
from tqdm import tqdm

from mtl_jax import workdir as wd
from mtl_jax.experiment import records as rec
from mtl_jax.experiment import writers as w

NAMES = ("left", "right")


def _train(step: int, scale: float = 1.0) -> dict:
    metrics = {
        "loss": np.array([0.3, 0.25], np.float32) * scale,
        "weights": np.array([0.5, 0.5], np.float32),
        "gram_cond": np.float32(3.25),
        "grad_cosine": np.array([[1.0, -0.1], [-0.1, 1.0]], np.float32),
        "solver_iterations": np.int32(7),
    }
    return rec.train_record(step, metrics, NAMES)


def _eval(step: int) -> dict:
    entry = rec.eval_entry(
        step, {"left/accuracy": 0.9, "right/accuracy": 0.8}, {"left/accuracy": 0.85}
    )
    return rec.eval_record(entry)


def _records() -> list[dict]:
    nan = rec.train_record(3, {"loss": np.array([np.nan, 0.1], np.float32)}, NAMES)
    nan["non_finite"] = ["left"]
    return [_train(1), _train(2, 0.5), nan, _eval(3)]


EXTRA = {"lr": 1e-3, "steps_per_s": 12.5}


def test_jsonl_bytes_are_those_the_loop_wrote(tmp_path):
    old, new = tmp_path / "old.jsonl", tmp_path / "new.jsonl"
    for path in (old, new):
        path.write_text('{"step": 0}\n')  # appended to, as on a resume
    with open(old, "a") as log:
        for record in _records():
            log.write(json.dumps(record) + "\n")
    with w.JsonlWriter(new) as writer:
        for record in _records():
            writer.write_record(record, extra=EXTRA)  # wall-clock values stay out
            writer.note("ignored")
    assert new.read_bytes() == old.read_bytes()
    assert [r["step"] for r in wd.read_metrics(new)] == [0, 1, 2, 3, 3]


def test_jsonl_line_is_on_disk_when_write_returns(tmp_path):
    writer = w.JsonlWriter(tmp_path / "m.jsonl")
    writer.write_record({"step": 1, "loss": {"left": 0.5}})
    assert wd.read_metrics(tmp_path / "m.jsonl") == [{"step": 1, "loss": {"left": 0.5}}]
    writer.close()
    writer.close()  # closing twice is fine
    with pytest.raises(ValueError, match="closed"):
        writer.write_record({"step": 2})


def test_scalars_flatten_records_and_skip_non_scalars():
    nan = _records()[2]
    assert w.scalars(_train(1), EXTRA) == pytest.approx(
        {
            "loss/left": 0.3,
            "loss/right": 0.25,
            "weights/left": 0.5,
            "weights/right": 0.5,
            "gram_cond": 3.25,
            "solver_iterations": 7.0,
            "lr": 1e-3,
            "steps_per_s": 12.5,
        }
    )
    assert w.scalars(_eval(5)) == pytest.approx(
        {
            "eval/left/accuracy": 0.9,
            "eval/right/accuracy": 0.8,
            "select_eval/left/accuracy": 0.85,
        }
    )
    flat = w.scalars(nan, {"steps_per_s": None, "flag": True})
    assert set(flat) == {"loss/left", "loss/right"} and np.isnan(flat["loss/left"])


tensorboard = pytest.mark.skipif(
    not w.tensorboard_available(),
    reason="tensorboardX is not installed (pip install 'mtl-jax[tensorboard]')",
)


@tensorboard
def test_tensorboard_event_files_read_back(tmp_path):
    logdir = tmp_path / "tb"
    with w.TensorBoardWriter(logdir) as writer:
        for record in _records():
            writer.write_record(record, extra=EXTRA)
        writer.write_record({"step": 4, "non_finite": ["left"]})  # nothing scalar: no event
    (path,) = logdir.iterdir()
    assert path.name.startswith("events.out.tfevents.")
    scalars = w.read_scalars(logdir)
    assert scalars["loss/left"][:2] == [(1, pytest.approx(0.3)), (2, pytest.approx(0.15))]
    assert np.isnan(scalars["loss/left"][2][1])
    assert scalars["lr"] == [(s, pytest.approx(1e-3)) for s in (1, 2, 3, 3)]
    assert scalars["eval/right/accuracy"] == [(3, pytest.approx(0.8))]
    assert scalars["select_eval/left/accuracy"] == [(3, pytest.approx(0.85))]
    assert "grad_cosine" not in scalars and "non_finite" not in scalars

    # The framing and protos, read independently of `read_scalars`.
    from tensorboardX.proto.event_pb2 import Event

    data, events = path.read_bytes(), []
    while data:
        (length,) = struct.unpack("<Q", data[:8])
        events.append(Event.FromString(data[12 : 12 + length]))
        data = data[16 + length :]
    assert events[0].file_version == "brain.Event:2"
    first = {v.tag: v.simple_value for v in events[1].summary.value}
    assert events[1].step == 1 and first["weights/right"] == pytest.approx(0.5)
    assert len(events) == 1 + 4  # the version event, then one event per record


@tensorboard
def test_tensorboard_reader_of_tensorboard_agrees(tmp_path):
    loader = pytest.importorskip(
        "tensorboard.backend.event_processing.event_file_loader",
        reason="the tensorboard package is not installed",
    )
    with w.TensorBoardWriter(tmp_path) as writer:
        writer.write_record(_train(7), extra=EXTRA)
    (path,) = tmp_path.iterdir()
    events = list(loader.EventFileLoader(str(path)).Load())
    assert events[-1].step == 7
    assert {v.tag for v in events[-1].summary.value} >= {"loss/left", "lr", "steps_per_s"}


@tensorboard
def test_a_resumed_run_shows_each_step_once(tmp_path):
    with w.TensorBoardWriter(tmp_path) as writer:  # interrupted after step 4
        for step in range(1, 5):
            writer.write_record({"step": step, "x": float(step)})
    with w.TensorBoardWriter(tmp_path, purge_step=3) as writer:  # resumed from step 2
        for step in range(3, 6):
            writer.write_record({"step": step, "x": 10.0 * step})
    assert len(list(tmp_path.iterdir())) == 2  # a new file, even within the same second
    assert w.read_scalars(tmp_path)["x"] == [(1, 1.0), (2, 2.0), (3, 30.0), (4, 40.0), (5, 50.0)]


@tensorboard
def test_a_truncated_last_event_is_skipped_and_a_corrupt_one_named(tmp_path):
    with w.TensorBoardWriter(tmp_path) as writer:
        writer.write_record({"step": 1, "x": 1.0})
        writer.write_record({"step": 2, "x": 2.0})
    (path,) = tmp_path.iterdir()
    data = path.read_bytes()
    path.write_bytes(data[:-3])
    assert w.read_scalars(tmp_path)["x"] == [(1, 1.0)]
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(ValueError, match="corrupt record"):
        w.read_scalars(tmp_path)


def test_without_tensorboardx_the_error_names_the_extra(tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m.split(".")[0] == "tensorboardX"] or ["tensorboardX"]:
        monkeypatch.setitem(sys.modules, name, None)  # makes the imports fail
    assert not w.tensorboard_available()
    with pytest.raises(ImportError, match=r"pip install 'mtl-jax\[tensorboard\]'"):
        w.TensorBoardWriter(tmp_path / "tb")
    with pytest.raises(ImportError, match="tensorboardX"):
        w.make_writers(tmp_path, tensorboard=True, enabled=True)
    with w.make_writers(tmp_path, enabled=True) as writers:  # by default: without it
        writers.write_record(_train(1))
    assert not (tmp_path / wd.TENSORBOARD_DIR).exists()
    assert (tmp_path / wd.METRICS_FILE).is_file()


def test_log_file_lines(tmp_path):
    path = tmp_path / "train.log"
    path.write_text("earlier\n")
    with w.LogFileWriter(path, clock=lambda: "2025-01-02 03:04:05") as log:
        log.note("resuming from 'ckpt/2'")
        for record in _records()[1:]:
            log.write_record(record, extra=EXTRA)
        log.note("two\nlines")
    stamp = "2025-01-02 03:04:05"
    assert path.read_text().splitlines() == [
        "earlier",
        f"{stamp} resuming from 'ckpt/2'",
        f"{stamp} step 2  loss/left=0.15 loss/right=0.125 weights/left=0.5 weights/right=0.5 "
        "gram_cond=3.25 solver_iterations=7 lr=0.001 steps_per_s=12.5",
        f"{stamp} step 3  loss/left=nan loss/right=0.1 lr=0.001 steps_per_s=12.5 "
        'non_finite=["left"]',
        f"{stamp} step 3  eval/left/accuracy=0.9 eval/right/accuracy=0.8 "
        "select_eval/left/accuracy=0.85 lr=0.001 steps_per_s=12.5",
        f"{stamp} two",
        f"{stamp} lines",
    ]


def test_log_file_default_stamp(tmp_path):
    with w.LogFileWriter(tmp_path / "train.log") as log:
        log.note("hello")
    line = (tmp_path / "train.log").read_text()
    assert line.endswith(" hello\n")
    assert len(line.split(" ")[0].split("-")) == 3 and line[13] == line[16] == ":"


def test_console_notes_go_through_tqdm_write(monkeypatch, capsys):
    calls = []
    original = tqdm.write

    def spy(message, file=None, **kwargs):
        calls.append((message, file))
        original(message, file=file, **kwargs)

    monkeypatch.setattr(tqdm, "write", spy)
    bar_out = io.StringIO()
    with tqdm(total=10, file=bar_out) as bar:
        console = w.ConsoleWriter(bar)  # process 0 by default
        console.note("a note")
        console.write_record(_train(1), extra=EXTRA)
        console.write_record(_eval(2))
        assert "left=0.300" in bar.postfix and "right=0.250" in bar.postfix
    assert calls == [
        ("a note", sys.stderr),
        ("step 2  eval/left/accuracy=0.9 eval/right/accuracy=0.8 select_eval/left/accuracy=0.85",
         sys.stderr),
    ]  # fmt: skip
    err = capsys.readouterr().err
    assert "a note\n" in err and "eval/left/accuracy=0.9" in err

    calls.clear()
    w.ConsoleWriter(enabled=False).note("not process 0")
    w.ConsoleWriter(enabled=True, evals=False).write_record(_eval(2))
    assert calls == []
    out = io.StringIO()
    w.ConsoleWriter(file=out, enabled=True).note("elsewhere")
    assert out.getvalue() == "elsewhere\n"


class _Recorder:
    def __init__(self, log, name, fail=False):
        self.log, self.name, self.fail = log, name, fail

    def write_record(self, record, *, extra=None):
        self.log.append((self.name, "record", record["step"], extra))

    def note(self, message):
        self.log.append((self.name, "note", message))

    def flush(self):
        self.log.append((self.name, "flush"))

    def close(self):
        self.log.append((self.name, "close"))
        if self.fail:
            raise OSError(f"{self.name} failed")


def test_multi_writer_fans_out_and_closes_every_writer():
    log = []
    a, b, c = (_Recorder(log, n, fail=n != "a") for n in "abc")
    for writer in (a, w.ConsoleWriter(enabled=False), w.MultiWriter([])):
        assert isinstance(writer, w.MetricWriter)
    multi = w.MultiWriter([a, b, c])
    multi.write_record({"step": 1}, extra=EXTRA)
    multi.note("hi")
    multi.flush()
    with pytest.raises(OSError, match="b failed"):  # the first failure, after all closed
        multi.close()
    assert log == [
        *((n, "record", 1, EXTRA) for n in "abc"),
        *((n, "note", "hi") for n in "abc"),
        *((n, "flush") for n in "abc"),
        *((n, "close") for n in "abc"),
    ]


def test_make_writers_of_a_run(tmp_path):
    with w.make_writers(tmp_path, enabled=False) as writers:  # not process 0
        writers.write_record(_train(1))
        writers.note("x")
    assert list(tmp_path.iterdir()) == []

    with w.make_writers(tmp_path, tensorboard=w.tensorboard_available()) as writers:
        writers.note("started")
        writers.write_record(_train(1), extra=EXTRA)
        writers.write_record(_eval(1))
    assert [r["step"] for r in wd.read_metrics(tmp_path / wd.METRICS_FILE)] == [1, 1]
    assert "lr" not in (tmp_path / wd.METRICS_FILE).read_text()
    log = (tmp_path / wd.LOG_FILE).read_text()
    assert " started\n" in log and "steps_per_s=12.5" in log
    if w.tensorboard_available():
        assert "eval/left/accuracy" in w.read_scalars(tmp_path / wd.TENSORBOARD_DIR)


def test_step_rate_counts_steps_between_calls_without_paused_time():
    now = [100.0]
    rate = w.StepRate(10, clock=lambda: now[0])
    now[0] = 102.0
    assert rate(20) == pytest.approx(5.0)
    with rate.paused():
        now[0] = 110.0  # an evaluation: 8 s not counted
    now[0] = 111.0
    assert rate(30) == pytest.approx(10.0)
    assert rate(30) is None  # no step since


def test_learning_rate_is_the_one_the_update_used():
    schedule = optax.warmup_cosine_decay_schedule(0.0, 1.0, 3, 10)
    tx = optax.sgd(schedule)
    params = np.zeros((), np.float32)
    state = tx.init(params)
    for step in range(1, 6):  # sgd's update of a unit gradient is -lr
        update, state = tx.update(np.ones((), np.float32), state, params)
        assert w.learning_rate(schedule, step) == pytest.approx(-float(update))


def test_console_leaves_per_class_metrics_to_the_files():
    out = io.StringIO()
    entry = rec.eval_entry(3, {"left/accuracy": 0.9, "left/recall/7": 0.5}, None)
    w.ConsoleWriter(file=out, enabled=True).write_record(rec.eval_record(entry))
    assert out.getvalue() == "step 3  eval/left/accuracy=0.9\n"
