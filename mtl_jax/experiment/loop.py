"""`train_and_evaluate(config, workdir)`: one experiment from a config, end to end, resumable.

Every check of the config, the workdir and the data happens before anything is compiled.
Training runs data-parallel on a mesh of all devices (`mtl_jax.parallel`), checkpoints the
whole `TrainState` and the data iterator's position (`mtl_jax.checkpointing`), and writes
each logged step and evaluation through the run's writers (`writers`: metrics.jsonl,
TensorBoard, train.log, the console). Rerunning the same config in the same workdir
resumes from the latest complete checkpoint and reproduces the uninterrupted run bit for
bit on the same machine and device count (see the README's "Guarantees" section).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import flax.serialization
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from mtl_jax import data, parallel, provenance
from mtl_jax import workdir as wd
from mtl_jax.checkpointing import Checkpointer
from mtl_jax.config import ConfigError
from mtl_jax.data.prefetch import DevicePrefetcher
from mtl_jax.experiment import records as rec
from mtl_jax.experiment.builders import (
    Experiment,
    build_experiment,
    learning_rate_schedule,
    monitors_loss,
    pipeline_options,
    plateau_scale,
    step_options,
)
from mtl_jax.experiment.preemption import Preempted, StopFlag, sigterm_flag
from mtl_jax.experiment.run_data import load_data, make_train_batches, with_train_data
from mtl_jax.experiment.warm_start import warm_start
from mtl_jax.experiment.writers import StepRate, learning_rate, make_writers
from mtl_jax.train import (
    TrainState,
    accumulate_stats,
    create_train_state,
    make_eval_step,
    metrics_from_stats,
)


class NonFiniteError(FloatingPointError):
    """Training stopped on a non-finite loss, gradient or state (after logging the step)."""


# The metrics key of the plateau scale, logged in `lr` only (not in metrics.jsonl).
LR_SCALE = "_lr_scale"


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    *,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Trains `config` for `config.num_steps` steps in `workdir`, evaluates, saves.

    A workdir holding an unfinished run of the same config is resumed from its latest
    complete checkpoint; one holding a finished run returns its saved results (and
    changes nothing). The run's plots are drawn whenever it trained or tried to, also
    when it stops on a non-finite value or an unreadable checkpoint.

    Returns:
      The contents written to `results.json`.

    Raises:
      ConfigError, ValueError, FileNotFoundError: invalid config, workdir or data (before
        any compilation; the message names the key, path, task or shape).
      CheckpointError: the latest checkpoint cannot be restored (naming its path).
      NonFiniteError: a step produced a non-finite value (after logging it; the last
        checkpoint is kept).
      Preempted: SIGTERM arrived; a checkpoint of the current step was written first.
    """
    workdir = Path(workdir)
    start = time.perf_counter()
    exp = build_experiment(config)  # config errors first, before the workdir is looked at
    status = wd.inspect_workdir(workdir, config, overwrite=overwrite)
    if status == wd.FINISHED:
        if jax.process_index() == 0:
            tqdm.write(
                f"workdir {str(workdir)!r} holds this run, finished; nothing to do", file=sys.stderr
            )
        return json.loads((workdir / wd.RESULTS_FILE).read_text())
    run = _prepare(config, exp, workdir, status)
    try:
        with sigterm_flag() as stop:
            return _train(run, stop, progress, start)
    finally:
        if run.is_writer:
            _draw_plots(workdir, config.weighting.name)


@dataclasses.dataclass
class _Run:
    """One training run in a workdir: everything validated, nothing compiled yet."""

    config: ml_collections.ConfigDict
    workdir: Path
    exp: Experiment
    builder: Any
    splits: dict[str, dict[str, np.ndarray]]
    image_shape: tuple[int, ...]
    mesh: jax.sharding.Mesh
    status: str
    notes: list[str]

    @property
    def is_writer(self) -> bool:
        """Only process 0 writes the workdir's files (orbax coordinates checkpoints)."""
        return jax.process_index() == 0

    def init_state(self, image: jax.Array) -> TrainState:
        return create_train_state(
            self.exp.model,
            self.exp.tx,
            self.exp.weighting,
            image,
            seed=self.config.seed,
            rep_grad=self.config.weighting.rep_grad,
        )

    def evaluation(self, eval_step, state: TrainState, step: int) -> tuple[dict, dict]:
        """The results.json entry of an evaluation of `state` at `step`, and the test
        split's tables (`rec.tables_of`)."""
        select = None
        if self.config.select_split:
            select = metrics_from_stats(
                self.split_stats(eval_step, state, self.config.select_split), self.exp.tasks
            )
        totals = self.split_stats(eval_step, state, "test")
        entry = rec.eval_entry(step, metrics_from_stats(totals, self.exp.tasks), select)
        return entry, rec.tables_of(totals, self.exp.tasks)

    def example_input(self) -> jax.ShapeDtypeStruct | dict[str, jax.ShapeDtypeStruct]:
        """The shape of a training batch's model input: the image batch, or with per-task
        inputs `{task: image batch}` (`config.batch_size` examples of every task)."""
        image = jax.ShapeDtypeStruct((self.config.batch_size, *self.image_shape), jnp.float32)
        if self.exp.spec.multi_input:
            return dict.fromkeys(self.exp.task_names, image)
        return image

    def split_stats(self, eval_step, state: TrainState, split: str) -> dict:
        """The summed statistics of `state` on `split`, batches split over the mesh (with
        per-task inputs, each task's examples in turn, `data.multi_input.eval_batches`)."""
        if self.exp.spec.multi_input:
            batches = data.multi_input.eval_batches(
                self.splits[split], batch_size=self.config.eval_batch_size, per_task=True
            )
        else:
            batches = data.eval_batches(
                self.splits[split], self.exp.task_names, batch_size=self.config.eval_batch_size
            )
        return accumulate_stats(
            eval_step,
            state.params,
            state.batch_stats,
            (parallel.shard_batch(b, self.mesh) for b in batches),
        )


def _prepare(
    config: ml_collections.ConfigDict, exp: Experiment, workdir: Path, status: str
) -> _Run:
    """Loads and checks the data and the device mesh (no compilation)."""
    names = ("train", "test", *([config.select_split] if config.select_split else []))
    builder, splits, image_shape = load_data(config, exp, names)
    mesh = parallel.make_mesh(config.parallel.num_devices)
    devices = mesh.shape[parallel.DATA_AXIS]
    for key in ("batch_size", "eval_batch_size"):
        if config[key] % devices:
            raise ConfigError(
                f"config key {key!r} is {config[key]}, not divisible by the {devices} devices "
                "it is split over"
            )
    # The epoch length and the class counts behind task_options / the sampler.
    exp, notes = with_train_data(config, exp, splits["train"])
    if jax.process_index() == 0 and status == wd.NEW:
        wd.start_workdir(workdir, config)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("mtl_jax workdir ready")
    return _Run(config, workdir, exp, builder, splits, image_shape, mesh, status, notes)


def _non_finite_message(step: int, names, per_task) -> str:
    bad = [n for n, ok in zip(names, per_task, strict=True) if not ok]
    if bad:
        return f"non-finite loss or gradient for task(s) {bad} at step {step}"
    return (
        f"non-finite update of the shared parameters, optimizer or weighting state at step "
        f"{step} (every task's loss and gradient norm is finite)"
    )


def _kept(checkpointer: Checkpointer) -> str:
    last = checkpointer.latest_step()
    if last is None:
        return ""
    return f"; the last checkpoint, {str(checkpointer.step_directory(last))!r}, is kept"


def _train(run: _Run, stop: StopFlag, progress: bool, start: float) -> dict[str, Any]:
    config, names, workdir = run.config, run.exp.task_names, run.workdir
    num_threads, ahead = pipeline_options(config)
    train_iter = make_train_batches(config, run.exp, run.splits["train"], num_threads=num_threads)
    if num_threads or ahead:
        run.notes.append(
            f"input pipeline: {num_threads} grain thread(s), {ahead} batch(es) placed on the "
            "devices ahead of the step"
        )
    example = run.example_input()
    abstract = jax.eval_shape(run.init_state, example)
    shardings = parallel.state_shardings(
        abstract, run.mesh, min_size=config.parallel.shard_params_min_size
    )
    abstract = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
    )
    checkpointer = Checkpointer(workdir / wd.CHECKPOINT_DIR, max_to_keep=config.keep_checkpoints)
    metrics_path = workdir / wd.METRICS_FILE
    with contextlib.ExitStack() as stack:
        stack.callback(checkpointer.close)
        batches = stack.enter_context(
            DevicePrefetcher(train_iter, lambda b: parallel.shard_batch(b, run.mesh), ahead)
        )
        # Restore (the state, the data position, the skip count) or start from step 0.
        latest = checkpointer.latest_step()
        skips = 0
        if latest is None:
            if run.status == wd.RESUME:
                run.notes.append(
                    f"no complete checkpoint in {str(checkpointer.directory)!r}: from step 0"
                )
            state = jax.jit(run.init_state, out_shardings=shardings)(
                jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), example)
            )
            if config.model.init_from:
                state, fresh = warm_start(state, config.model.init_from)
                run.notes.append(
                    f"variables from {config.model.init_from!r}"
                    + (f"; fresh heads for task(s) {fresh}" if fresh else "")
                )
        else:
            state, meta = checkpointer.restore(latest, abstract)
            batches.set_state(meta["data_iterator"])
            skips = meta["non_finite_skips"]
            run.notes.append(f"resuming from {str(checkpointer.step_directory(latest))!r}")
        first = (latest or 0) + 1
        # Records past the checkpoint are written again, identically, by this run.
        kept = [r for r in wd.read_metrics(metrics_path) if r["step"] < first]
        if run.is_writer:
            wd.write_metrics(metrics_path, kept)
        bar = stack.enter_context(
            tqdm(
                total=config.num_steps,
                initial=first - 1,
                disable=not progress or not run.is_writer,
                desc="train",
            )
        )
        writers = stack.enter_context(
            make_writers(workdir, bar=bar, purge_step=first, enabled=run.is_writer)
        )
        for note in run.notes:
            writers.note(note)
        evals = rec.entries_of(kept)

        train_step = parallel.make_parallel_train_step(
            run.exp.model,
            run.exp.tasks,
            run.exp.tx,
            run.exp.weighting,
            mesh=run.mesh,
            state_sharding=shardings,
            **step_options(config),
        )
        conflicts = None  # per-layer gradient conflict, beside the (unchanged) train step
        if config.conflict_every_steps:
            from mtl_jax.explain.conflict import ConflictLog

            conflicts = ConflictLog.for_run(
                run.exp.model,
                run.exp.tasks,
                every=config.conflict_every_steps,
                first=first,
                mesh=run.mesh,
                state_sharding=shardings,
                jacobian_strategy=config.weighting.jacobian_strategy,
                jacobian_chunk_size=config.weighting.jacobian_chunk_size or None,
            )
            train_step = conflicts.wrap(train_step)
        # Statistics replicated, so that every process can read them.
        eval_step = jax.jit(
            make_eval_step(run.exp.model, run.exp.tasks),
            out_shardings=parallel.replicated(run.mesh),
        )
        schedule = learning_rate_schedule(config)
        # The plateau schedule's rate is the base rate times a scale in the optimizer
        # state; each step's scale rides with its metrics (read back with them).
        plateau = monitors_loss(config)

        def save(step: int, state: TrainState) -> None:
            meta = {"data_iterator": batches.get_state(), "non_finite_skips": skips}
            checkpointer.save(step, state, meta)

        def is_due(step: int, every: int) -> bool:
            return bool(every) and step % every == 0

        def logs(step: int) -> bool:
            return is_due(step, config.log_every_steps) or step == config.num_steps

        def evaluates(step: int) -> bool:  # the last step's evaluation comes after the loop
            return is_due(step, config.eval_every_steps) and step != config.num_steps

        def saves(step: int) -> bool:
            return (
                is_due(step, config.checkpoint_every_steps) or step == config.num_steps or stop.set
            )

        def must_sync(step: int) -> bool:
            """Whether step's finite flags are read at once (it is logged, evaluated or
            saved); other steps' flags are read one step late, while the next one runs."""
            return logs(step) or evaluates(step) or saves(step)

        rate = StepRate(first - 1)
        # Multi-batch methods (SDMGrad, MoDo) take k consecutive batches of the stream per
        # step, so the iterator's position stays the count of batches consumed.
        per_step = run.exp.weighting.batches

        def next_batch():
            if per_step == 1:
                return next(batches)
            return {str(i): next(batches) for i in range(per_step)}

        def settle(step: int, metrics: dict) -> None:
            """Reads step's finite flags; logs it if due or non-finite; counts skips."""
            nonlocal skips
            per_task, shared = jax.device_get(
                (metrics.pop(parallel.FINITE_TASKS), metrics.pop(parallel.FINITE_SHARED))
            )
            finite = bool(np.all(per_task) and shared)
            scale = metrics.pop(LR_SCALE, None)
            if not finite or logs(step):
                record = rec.train_record(step, jax.device_get(metrics), names)
                if not finite:
                    record["non_finite"] = [
                        n for n, ok in zip(names, per_task, strict=True) if not ok
                    ]
                if conflicts is not None:
                    record.update(conflicts.fields(step))
                lr = learning_rate(schedule, step)
                if scale is not None:
                    lr *= float(jax.device_get(scale))
                extra = {"lr": lr, "steps_per_s": rate(step)}
                writers.write_record(record, extra=extra)
            skips = 0 if finite else skips + 1
            if skips:
                message = _non_finite_message(step, names, per_task)
                if skips > config.max_non_finite_skips:
                    raise NonFiniteError(message + _kept(checkpointer))
                writers.note(f"{message}: step skipped ({skips} in a row)")

        train_start = time.perf_counter()
        first_step_s = None  # the first step of this run, compilation included
        pending = None  # (step, metrics) whose flags are not read yet
        for step in range(first, config.num_steps + 1):
            state, metrics = train_step(state, next_batch())
            if first_step_s is None:
                jax.block_until_ready(metrics)
                first_step_s = time.perf_counter() - train_start
            if plateau:  # a copy: the next step donates the state
                metrics[LR_SCALE] = jnp.copy(plateau_scale(state.opt_state))
            if pending is not None:
                settle(*pending)
                pending = None
            if must_sync(step):
                settle(step, metrics)
            else:
                pending = (step, metrics)
            bar.update(1)
            if evaluates(step):
                with rate.paused():
                    evals.append(run.evaluation(eval_step, state, step)[0])
                writers.write_record(rec.eval_record(evals[-1]))
            if saves(step):
                with rate.paused():
                    save(step, state)
            if stop.set:
                raise Preempted(step, str(checkpointer.step_directory(step)))
        jax.block_until_ready(state)
        train_wall_s = time.perf_counter() - train_start
        if not evals or evals[-1]["step"] != config.num_steps:
            entry, tables = run.evaluation(eval_step, state, config.num_steps)
            evals.append(entry)
            writers.write_record(rec.eval_record(evals[-1]))
        else:  # evaluated before an interruption: only the tables are missing
            totals = run.split_stats(eval_step, state, "test")
            tables = rec.tables_of(totals, run.exp.tasks)
        final = evals[-1]["metrics"]

    dataset = {
        "name": run.builder.name,
        "config": run.builder.builder_config.name,
        "version": None if run.builder.version is None else str(run.builder.version),
    }
    results = {
        "config": config.to_dict(),
        "dataset": dataset,
        "provenance": provenance.collect(dataset=dataset),
        "final": final,
        "tables": tables,
        "task_options": run.exp.task_options,
        "train_class_counts": run.exp.class_counts,
        "evals": evals,
        "steps": config.num_steps,
        "devices": run.mesh.shape[parallel.DATA_AXIS],
        "processes": jax.process_count(),
        "resumed_from": latest,
        "train_wall_s": train_wall_s,
        "first_step_s": first_step_s,
        "wall_s": time.perf_counter() - start,
    }
    variables = jax.tree.map(
        parallel.to_host, {"params": state.params, "batch_stats": state.batch_stats}
    )
    if run.is_writer:
        wd.atomic_write(workdir / wd.PARAMS_FILE, flax.serialization.to_bytes(variables))
        wd.atomic_write(workdir / wd.RESULTS_FILE, json.dumps(results, indent=2).encode())
    return results


def _draw_plots(workdir: Path, title: str) -> None:
    """The run's figures from its metrics.jsonl; a run with no records yet has none."""
    from mtl_jax.plots import plot_run  # matplotlib only where figures are drawn

    if not wd.read_metrics(workdir / wd.METRICS_FILE):
        return
    try:
        plot_run(workdir, title=title)
    except (ValueError, OSError) as error:
        tqdm.write(f"plots not drawn: {error}", file=sys.stderr)
