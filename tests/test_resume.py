"""Exact resume: a run killed at any point and rerun equals the uninterrupted run bit for bit.

Every run is the CLI in a subprocess on the `test` config (30 steps, a checkpoint every
5, every step logged), with a stateful weighting method and an evaluation every 10
steps. Faults are injected from inside the child (`hook`), so they land at a chosen
point: SIGKILL between checkpoints, SIGKILL during a checkpoint write (all files written,
not yet renamed into place), and SIGTERM.
"""

from __future__ import annotations

import json

import pytest

from mtl_jax import weighting
from mtl_jax import workdir as wd
from tests.cli import assert_bitwise_equal_runs, compile_cache, metrics_records, run_cli

# A method whose state has history, when one exists; `uncertainty` (learned, with Adam
# state) otherwise.
METHOD = next(m for m in ("dwa", "uncertainty") if m in weighting.METHODS)
# DWA: 4-step "epochs", so that its loss history spans several checkpoints.
OPTIONS = {"dwa": ("--config.weighting.kwargs.steps_per_epoch=4",)}.get(METHOD, ())
ARGS = (f"--config.weighting.name={METHOD}", *OPTIONS, "--config.eval_every_steps=10")
STEPS = 30
EXIT_PREEMPTED = 143

# Runs `action` in the child when step `step` has been computed, before it is logged.
AT_STEP = """
import mtl_jax.experiment.records as _records
_record = _records.train_record
def _hooked_record(step, *args, **kwargs):
    if step == {step}:
        {action}
    return _record(step, *args, **kwargs)
_records.train_record = _hooked_record
"""

# SIGKILL once the checkpoint of `step` is fully written to its temporary directory,
# just before orbax renames it into place.
DURING_CHECKPOINT_WRITE = """
from orbax.checkpoint._src.path import atomicity as _atomicity
_finalize = _atomicity.AtomicRenameTemporaryPath.finalize
async def _hooked_finalize(self):
    if self.get_final().name == "{step}":
        os.kill(os.getpid(), signal.SIGKILL)
    return await _finalize(self)
_atomicity.AtomicRenameTemporaryPath.finalize = _hooked_finalize
"""


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return compile_cache(tmp_path_factory)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_multi_mnist, data_dir, cache):
    """The uninterrupted run."""
    workdir = tmp_path_factory.mktemp("reference") / "run"
    result = run_cli(workdir, *ARGS, data_dir=data_dir, cache_dir=cache)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def test_reference_run_logs_every_step_and_checkpoints(reference):
    records = metrics_records(reference)
    steps = [r["step"] for r in records if "loss" in r]
    assert steps == list(range(1, STEPS + 1))
    assert [r["step"] for r in records if "eval" in r] == [10, 20, 30]
    assert sorted(int(p.name) for p in (reference / "checkpoints").iterdir()) == [20, 25, 30]
    results = json.loads((reference / "results.json").read_text())
    assert [e["step"] for e in results["evals"]] == [10, 20, 30]
    assert results["evals"][-1]["metrics"] == results["final"]


def test_sigkill_between_checkpoints(tmp_path, reference, data_dir, cache):
    workdir = tmp_path / "run"
    hook = AT_STEP.format(step=13, action="os.kill(os.getpid(), signal.SIGKILL)")
    killed = run_cli(workdir, *ARGS, data_dir=data_dir, cache_dir=cache, hook=hook)
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert [r["step"] for r in metrics_records(workdir) if "loss" in r] == list(range(1, 13))
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["10", "5"]
    resumed = run_cli(workdir, *ARGS, data_dir=data_dir, cache_dir=cache)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr and "checkpoints/10" in resumed.stderr
    assert json.loads((workdir / "results.json").read_text())["resumed_from"] == 10
    assert_bitwise_equal_runs(reference, workdir, STEPS)


def test_sigkill_during_checkpoint_write(tmp_path, reference, data_dir, cache):
    workdir = tmp_path / "run"
    hook = DURING_CHECKPOINT_WRITE.format(step=15)
    killed = run_cli(workdir, *ARGS, data_dir=data_dir, cache_dir=cache, hook=hook)
    assert killed.returncode == -9, killed.stderr[-3000:]
    leftovers = sorted(p.name for p in (workdir / "checkpoints").iterdir())
    # The interrupted write left only a temporary directory, never a step directory.
    assert "15" not in leftovers and any(name.startswith("15.") for name in leftovers)
    resumed = run_cli(workdir, *ARGS, data_dir=data_dir, cache_dir=cache)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((workdir / "results.json").read_text())["resumed_from"] == 10
    assert_bitwise_equal_runs(reference, workdir, STEPS)


def test_sigterm_saves_the_current_step_and_resumes(tmp_path, reference, data_dir, cache):
    workdir = tmp_path / "run"
    hook = AT_STEP.format(step=13, action="os.kill(os.getpid(), signal.SIGTERM)")
    stopped = run_cli(workdir, *ARGS, data_dir=data_dir, cache_dir=cache, hook=hook)
    assert stopped.returncode == EXIT_PREEMPTED, stopped.stderr[-3000:]
    assert "SIGTERM" in stopped.stderr and "step 13" in stopped.stderr
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()) == [5, 10, 13]
    resumed = run_cli(workdir, *ARGS, data_dir=data_dir, cache_dir=cache)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((workdir / "results.json").read_text())["resumed_from"] == 13
    assert_bitwise_equal_runs(reference, workdir, STEPS)


def test_rerunning_a_finished_run_changes_none_of_its_outputs(reference, data_dir, cache):
    def outputs():
        return {
            p: p.stat().st_mtime_ns
            for pattern in wd.OUTPUTS
            for found in reference.glob(pattern)
            for p in [found, *found.rglob("*")]
            if p.is_file()
        }

    before = outputs()
    again = run_cli(reference, *ARGS, data_dir=data_dir, cache_dir=cache)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "finished" in again.stderr
    assert outputs() == before


def test_prefetching_run_killed_and_resumed_without_prefetch_is_bitwise_equal(
    tmp_path, reference, data_dir, cache
):
    """grain threads and device prefetch change no batch, and the checkpointed data
    position is that of the batches consumed (not those queued ahead): a run killed with
    them on and resumed with them off equals the reference; the pipeline keys are no
    config difference."""
    workdir = tmp_path / "run"
    pipeline = ("--config.pipeline.num_threads=2", "--config.pipeline.prefetch_to_device=3")
    hook = AT_STEP.format(step=13, action="os.kill(os.getpid(), signal.SIGKILL)")
    killed = run_cli(workdir, *ARGS, *pipeline, data_dir=data_dir, cache_dir=cache, hook=hook)
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert "2 grain thread(s), 3 batch(es)" in (workdir / "train.log").read_text()
    resumed = run_cli(workdir, *ARGS, data_dir=data_dir, cache_dir=cache)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((workdir / "results.json").read_text())["resumed_from"] == 10
    assert_bitwise_equal_runs(reference, workdir, STEPS)
