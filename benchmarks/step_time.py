"""Time one training step per weighting method on the workloads of WORKLOADS.md.

One method, one process::

    python -m benchmarks.step_time --workload W1 --method mgda --steps 10 --json out.json
    python -m benchmarks.step_time --workload W2 --method mgda --rep-grad --json out.json

Every method of `mtl_jax.weighting.METHODS` (or a subset), each in a fresh process, with
the ratios to `equal` and a Markdown table::

    python -m benchmarks.step_time --workload W1 --method all --steps 10 \\
        --json w1.json --markdown w1.md
    python -m benchmarks.step_time --workload W3 --method all --methods equal,mgda,famo \\
        --json w3.json

Several such lists (batches of one long table) merged into one (`merge_runs`)::

    python -m benchmarks.step_time --merge a.json b.json --json w3.json --markdown w3.md

The timed step is `mtl_jax.train.make_train_step(model, tasks, optax.adam(lr), method,
rep_grad=...)` on a state from `create_train_state`: forward, loss vector, the method's
backward and aggregation, Adam on every parameter, and (methods with an `after_update`
hook, e.g. FAMO) the extra forward and the hook, all inside the one jitted step.
`jax.block_until_ready` on the new state and the metrics closes each timed step.
`--warmup` steps (default 3; the first compiles) come first, then `--steps` timed steps
(default 10); the median is reported. The batch is made once, before any timing.

Besides the method, every run times two references on the same model, batch and
parameters, with the same warm-up and step counts:

* F, `forward_s`: the jitted training-mode forward and the [T] loss vector
  (`model.apply` then `jacobian.loss_vector`; BatchNorm statistics updated);
* F+B, `forward_backward_s`: `jax.value_and_grad` of the summed losses w.r.t. all
  parameters. B = F+B − F is one backward.

Fields of one run's JSON object:

* `workload`, `method`, `kind` (loss / gramian / jacobian), `after_update` (whether the
  method has the hook), `num_tasks`, `options` (hyper-parameters given to
  `mtl_jax.weighting.create`, see `METHOD_OPTIONS`);
* `rep_grad`: representation-gradient mode; always false for loss methods;
* `jacobian_strategy`, `jacobian_chunk_size`: the engine options in effect (the
  trainer's defaults unless given);
* `median_s`, `steps_s` (every timed step, seconds), `warmup_s` (the warm-up steps; the
  first includes compilation);
* `equal_median_s`, `equal_steps_s`: `equal`'s step on the same model, batch and initial
  parameters, timed in the same process, each of its steps right after one of the
  method's (for `equal` itself, its own steps). Step times drift between processes on a
  shared 2-core machine by more than the differences measured (loss methods doing the
  same work came out 46–63 ms in separate processes); interleaving cancels the drift;
* `forward_s`, `forward_backward_s`: medians of F and F+B; `forward_steps_s`,
  `forward_backward_steps_s`: their timed steps;
* `peak_rss_mb`: the process's peak resident memory (`ru_maxrss`) after the method's
  timed steps and before the references, so it reflects the method's step;
* `param_counts`: `{"shared", "total", "tasks": {task: n}}`, checked against the spec;
* `jax_version`, `devices` (`jax.devices()`, described), `cpu` (`describe_cpu`),
  `threads`, `steps`, `warmup`.

`--method all` writes a JSON list with one object per method (`equal` first: it is run
even when `--methods` leaves it out), each with, in addition:

* `ratio_to_equal`: `median_s / equal_median_s`, the same process's `equal`;
* `minimal_work_ratio`: `(F + n_B·B + n_F·F) / (F + B)`, the step's least work relative
  to `equal`'s, with `n_B = T` for gramian/jacobian methods in parameter mode (T trunk
  backwards) and 1 otherwise (loss methods; `rep_grad` mode, where one pass through the
  heads gives every per-task representation gradient and one trunk backward follows),
  and `n_F = 1` for methods with an `after_update` hook (the extra forward), 0 otherwise.
  F and B are the medians over every run of the list;
* `target_ratio` = 1.1 × `minimal_work_ratio`, and `met`: `ratio_to_equal ≤ target_ratio`.

A method whose process fails or passes `--timeout` seconds gets `{"method", "error"}`
instead (`error`: the exit status and the exception line; `stderr_tail`: the traceback's
end). `--markdown out.md` writes the table: method, median ms, equal ms, ratio to equal,
minimal-work ratio, met, peak RSS.

Threads: XLA's CPU client sizes its intra-op (Eigen) thread pool from the `NPROC`
environment variable when set, else from the CPUs the process may run on, when the
backend starts. `XLA_FLAGS` has no thread-count flag for it (`intra_op_parallelism_threads`
is not an XLA flag; `--xla_cpu_multi_thread_eigen=false` makes the ops single-threaded).
`--threads N` (default 2, the spec's) sets `NPROC=N` before the backend starts, in this
process and in every child; 0 leaves the default. Measured with jaxlib 0.10:
`NPROC=5` gives 5 `XLAEigen` threads on a 2-core machine.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import optax

from benchmarks import workloads
from benchmarks.processes import describe_cpu, run_in_process
from mtl_jax import jacobian, train, weighting

# Hyper-parameters given to `weighting.create` for each method: the options a method
# requires, and LibMTL's default where mtl_jax's differs (WORKLOADS.md times LibMTL's
# defaults). Each entry maps the sorted task names to keyword arguments.
METHOD_OPTIONS: dict[str, Callable[[tuple[str, ...]], dict[str, Any]]] = {
    # Required: a weight per task; 1.0 is `equal`'s work.
    "fixed": lambda names: {"weights": dict.fromkeys(names, 1.0)},
    # LibMTL's mgda_gn='none' (mtl_jax defaults to the reference code's 'loss+').
    "mgda": lambda names: {"normalization": "none"},
    # Required: an epoch of one step, so that from the third step on the weights come
    # from the loss history (the spec times DWA's epoch ≥ 2 path).
    "dwa": lambda names: {"steps_per_epoch": 1},
    # Required: as for DWA; one warm-up epoch, so that every timed step takes the
    # post-warm-up path (LibMTL's default is 4 epochs).
    "stch": lambda names: {"steps_per_epoch": 1, "warmup_epochs": 1},
}

DEFAULT_STEPS = 10
DEFAULT_WARMUP = 3
DEFAULT_THREADS = 2
DEFAULT_TIMEOUT_S = 900.0
# A method meets its target when its ratio to `equal` is at most this times the
# minimal-work ratio.
TOLERANCE = 1.1


def method_options(name: str, task_names: Sequence[str]) -> dict[str, Any]:
    """The keyword arguments `run_one` gives `weighting.create(name, ...)`.

    Raises:
      ValueError: if the method has a required option that `METHOD_OPTIONS` does not give
        (the message names it).
    """
    options = METHOD_OPTIONS[name](tuple(sorted(task_names))) if name in METHOD_OPTIONS else {}
    factory = getattr(weighting, name)
    missing = [
        p.name
        for p in inspect.signature(factory).parameters.values()
        if p.default is inspect.Parameter.empty and p.name not in options
    ]
    if missing:
        raise ValueError(
            f"method {name!r} requires option(s) {missing}; add them to "
            "benchmarks.step_time.METHOD_OPTIONS"
        )
    return options


def engine_options(
    jacobian_strategy: str | None, jacobian_chunk_size: int | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(options to pass to `make_train_step`, the options in effect, for the record).

    An option left as None is not passed; its record is the trainer's default.
    """
    defaults = inspect.signature(train.make_train_step).parameters
    given = {"jacobian_strategy": jacobian_strategy, "jacobian_chunk_size": jacobian_chunk_size}
    passed = {key: value for key, value in given.items() if value is not None}
    return passed, {key: passed.get(key, defaults[key].default) for key in given}


def _time_once(call: Callable[[], Any]) -> float:
    """Seconds one `call()` (which blocks on its results) takes."""
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def _timed(call: Callable[[], Any], *, warmup: int, steps: int) -> tuple[list[float], list[float]]:
    """Runs `call` `warmup` then `steps` times; returns (warm-up times, step times) in s."""
    times = [_time_once(call) for _ in range(warmup + steps)]
    return times[:warmup], times[warmup:]


def reference_times(
    workload: workloads.Workload, params: Any, batch_stats: Any, *, warmup: int, steps: int
) -> dict[str, list[float]]:
    """Timed steps of F (training forward + loss vector) and F+B (`value_and_grad` of
    the summed losses w.r.t. all parameters), as `{"forward": [...], "forward_backward":
    [...]}` in seconds."""
    model, tasks, batch = workload.model, workload.tasks, workload.batch

    def loss_vector(params, batch_stats, batch):
        preds, new_stats = model.apply(
            {"params": params, "batch_stats": batch_stats}, batch["image"], train=True
        )
        return jacobian.loss_vector(tasks, preds, batch), new_stats

    def summed_loss(params, batch_stats, batch):
        losses, new_stats = loss_vector(params, batch_stats, batch)
        return jnp.sum(losses), (losses, new_stats)

    forward = jax.jit(loss_vector)
    forward_backward = jax.jit(jax.value_and_grad(summed_loss, has_aux=True))
    result = {}
    for key, fn in (("forward", forward), ("forward_backward", forward_backward)):
        _, result[key] = _timed(
            lambda fn=fn: jax.block_until_ready(fn(params, batch_stats, batch)),
            warmup=warmup,
            steps=steps,
        )
    return result


def _describe_devices() -> list[str]:
    return [f"{d.platform}:{d.id} {d.device_kind}" for d in jax.devices()]


def run_one(
    workload_name: str,
    method: str,
    *,
    rep_grad: bool = False,
    steps: int = DEFAULT_STEPS,
    warmup: int = DEFAULT_WARMUP,
    jacobian_strategy: str | None = None,
    jacobian_chunk_size: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Times `method` on workload `workload_name` in this process; returns the run's record.

    See the module docstring for the fields. `rep_grad` is ignored (and recorded false)
    for loss methods.

    Raises:
      ValueError: for an unknown workload or method, or a missing method option.
      AssertionError: if the model's parameter counts are not the spec's.
    """
    if steps < 1 or warmup < 1:
        raise ValueError(f"steps and warmup must be >= 1, got steps={steps}, warmup={warmup}")
    if method not in weighting.METHODS:
        raise ValueError(f"unknown method {method!r}; valid methods: {list(weighting.METHODS)}")
    workload = workloads.build(workload_name, seed=seed)
    options = method_options(method, workload.model.task_names)
    method_fn = weighting.create(method, **options)
    rep_grad = bool(rep_grad) and method_fn.kind != weighting.LOSS
    passed, effective = engine_options(jacobian_strategy, jacobian_chunk_size)
    tx = optax.adam(workload.learning_rate)
    state = train.create_train_state(
        workload.model, tx, method_fn, workload.batch["image"], seed=seed, rep_grad=rep_grad
    )
    counts = workloads.check_parameter_counts(workload, state.params)
    # The step donates its input state; keep the initial parameters for the references.
    initial = jax.tree.map(jnp.copy, (state.params, state.batch_stats))
    step = train.make_train_step(
        workload.model, workload.tasks, tx, method_fn, rep_grad=rep_grad, **passed
    )

    def one_step():
        nonlocal state
        state, metrics = step(state, workload.batch)
        jax.block_until_ready((state, metrics))

    if method == "equal":
        warmup_s, steps_s = _timed(one_step, warmup=warmup, steps=steps)
        equal_steps_s = steps_s
    else:
        # `equal` on the same model, batch and initial parameters, its steps interleaved
        # with the method's, so that both see the same machine state.
        equal_fn = weighting.create("equal", **method_options("equal", workload.model.task_names))
        equal_state = train.create_train_state(
            workload.model, tx, equal_fn, workload.batch["image"], seed=seed
        )
        equal_step = train.make_train_step(workload.model, workload.tasks, tx, equal_fn)

        def equal_one_step():
            nonlocal equal_state
            equal_state, metrics = equal_step(equal_state, workload.batch)
            jax.block_until_ready((equal_state, metrics))

        warmup_s, steps_s, equal_steps_s = [], [], []
        for i in range(warmup + steps):
            (warmup_s if i < warmup else steps_s).append(_time_once(one_step))
            equal_time = _time_once(equal_one_step)
            if i >= warmup:
                equal_steps_s.append(equal_time)
        del equal_state
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    del state
    references = reference_times(workload, *initial, warmup=warmup, steps=steps)
    return {
        "workload": workload_name,
        "method": method,
        "kind": method_fn.kind,
        "after_update": method_fn.after_update is not None,
        "rep_grad": rep_grad,
        "num_tasks": len(workload.tasks),
        "options": options,
        **effective,
        "median_s": statistics.median(steps_s),
        "steps_s": steps_s,
        "warmup_s": warmup_s,
        "equal_median_s": statistics.median(equal_steps_s),
        "equal_steps_s": equal_steps_s,
        "forward_s": statistics.median(references["forward"]),
        "forward_backward_s": statistics.median(references["forward_backward"]),
        "forward_steps_s": references["forward"],
        "forward_backward_steps_s": references["forward_backward"],
        "peak_rss_mb": peak_rss_mb,
        "param_counts": counts,
        "jax_version": jax.__version__,
        "devices": _describe_devices(),
        "cpu": describe_cpu(),
        "threads": int(os.environ["NPROC"]) if os.environ.get("NPROC") else None,
        "steps": steps,
        "warmup": warmup,
    }


def minimal_work_ratio(
    *,
    kind: str,
    rep_grad: bool,
    after_update: bool,
    num_tasks: int,
    forward_s: float,
    forward_backward_s: float,
) -> float:
    """The least work of a method's step relative to `equal`'s: `(F + n_B·B + n_F·F) / (F + B)`.

    `n_B` = T for gramian/jacobian methods in parameter mode, else 1; `n_F` = 1 with an
    `after_update` hook (FAMO's extra forward), else 0. B = F+B − F (at least 0).
    """
    forward = forward_s
    backward = max(forward_backward_s - forward_s, 0.0)
    backwards = num_tasks if kind in (weighting.GRAMIAN, weighting.JACOBIAN) and not rep_grad else 1
    extra_forward = forward if after_update else 0.0
    return (forward + backwards * backward + extra_forward) / (forward + backward)


def add_ratios(results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Adds `ratio_to_equal`, `minimal_work_ratio`, `target_ratio` and `met` to each run.

    F and F+B are the medians of the runs' `forward_s` and `forward_backward_s`. Failed
    runs (with `error`) are returned unchanged.

    Raises:
      ValueError: if no run succeeded (there is no F or F+B to compare with).
    """
    done = [r for r in results if "error" not in r]
    if not done:
        raise ValueError("no successful run to take F and F+B from; the errors say why")
    forward_s = statistics.median(r["forward_s"] for r in done)
    forward_backward_s = statistics.median(r["forward_backward_s"] for r in done)
    out = []
    for run in results:
        run = dict(run)
        if "error" not in run:
            run["ratio_to_equal"] = run["median_s"] / run["equal_median_s"]
            run["minimal_work_ratio"] = minimal_work_ratio(
                kind=run["kind"],
                rep_grad=run["rep_grad"],
                after_update=run["after_update"],
                num_tasks=run["num_tasks"],
                forward_s=forward_s,
                forward_backward_s=forward_backward_s,
            )
            run["target_ratio"] = TOLERANCE * run["minimal_work_ratio"]
            run["met"] = run["ratio_to_equal"] <= run["target_ratio"]
        out.append(run)
    return out


def _describe_cpus(done: Sequence[Mapping[str, Any]]) -> str:
    cpus = sorted({r["cpu"] for r in done if r.get("cpu")})
    unrecorded = [r["method"] for r in done if not r.get("cpu")]
    parts = ["; ".join(cpus)] if cpus else []
    if unrecorded:
        parts.append(f"CPU not recorded for {', '.join(unrecorded)}")
    return "; ".join(parts)


def markdown_table(results: Sequence[Mapping[str, Any]]) -> str:
    """A Markdown table of `add_ratios` output, one row per method, with a header line
    giving the workload, F, F+B, devices and versions."""
    done = [r for r in results if "error" not in r]
    first = done[0] if done else {}
    forward_ms = 1e3 * statistics.median(r["forward_s"] for r in done) if done else float("nan")
    forward_backward_ms = (
        1e3 * statistics.median(r["forward_backward_s"] for r in done) if done else float("nan")
    )
    lines = [
        f"Workload {first.get('workload', '?')}: F = {forward_ms:.2f} ms, "
        f"F+B = {forward_backward_ms:.2f} ms; jax {first.get('jax_version', '?')} on "
        f"{', '.join(first.get('devices', []))} ({_describe_cpus(done)}), "
        f"threads {first.get('threads')}; "
        f"median of {first.get('steps', '?')} steps after {first.get('warmup', '?')} warm-up. "
        f"Met: ratio to equal ≤ {TOLERANCE} × minimal-work ratio.",
        "",
        "| method | rep_grad | median ms | equal ms (same process) | ratio to equal | "
        "minimal-work ratio | met | peak RSS MB |",
        "|---|---|---:|---:|---:|---:|---|---:|",
    ]
    for run in results:
        if "error" in run:
            error = " ".join(str(run["error"]).split())[:120].replace("|", "\\|")
            lines.append(f"| {run['method']} | | failed: {error} | | | | | |")
            continue
        lines.append(
            f"| {run['method']} | {str(run['rep_grad']).lower()} | {1e3 * run['median_s']:.2f} "
            f"| {1e3 * run['equal_median_s']:.2f} | {run['ratio_to_equal']:.3f} "
            f"| {run['minimal_work_ratio']:.3f} | {'met' if run['met'] else 'not met'} "
            f"| {run['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def run_all(
    workload_name: str,
    methods: Sequence[str],
    *,
    rep_grad: bool = False,
    steps: int = DEFAULT_STEPS,
    warmup: int = DEFAULT_WARMUP,
    jacobian_strategy: str | None = None,
    jacobian_chunk_size: int | None = None,
    threads: int = DEFAULT_THREADS,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> list[dict[str, Any]]:
    """Runs each method in a fresh `python -m benchmarks.step_time` process; `equal` first.

    A process that fails or passes `timeout_s` gives `{"method", "error"}`. Returns the
    list with the ratios added (`add_ratios`).
    """
    methods = ["equal", *(m for m in dict.fromkeys(methods) if m != "equal")]
    env = dict(os.environ)
    if threads:
        env["NPROC"] = str(threads)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in methods:
            out = Path(tmp) / f"{method}.json"
            command = [
                sys.executable, "-m", "benchmarks.step_time",
                "--workload", workload_name, "--method", method,
                "--steps", str(steps), "--warmup", str(warmup),
                "--threads", str(threads), "--json", str(out),
            ]  # fmt: skip
            if rep_grad:
                command.append("--rep-grad")
            if jacobian_strategy is not None:
                command += ["--jacobian-strategy", jacobian_strategy]
            if jacobian_chunk_size is not None:
                command += ["--jacobian-chunk-size", str(jacobian_chunk_size)]
            results.append(
                run_in_process(
                    command,
                    out,
                    label=f"step_time {workload_name} {method}",
                    failed={"method": method},
                    timeout_s=timeout_s,
                    env=env,
                )
            )
    if not any("error" not in r for r in results):
        return results  # nothing to compare with; the errors say why
    return add_ratios(results)


_RATIO_FIELDS = ("ratio_to_equal", "minimal_work_ratio", "target_ratio", "met")


def merge_runs(lists: Sequence[Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """One table from several `--method all` results of the same workload and settings.

    A long table (W3 in parameter mode: minutes per method) can then be measured in
    batches. Each row keeps its own in-process `equal`; the `equal` row of the first list
    is kept and the others dropped; F and F+B for the minimal-work ratios become the
    medians over every run (`add_ratios`). Rows measured before results recorded their
    CPU are accepted beside any CPU, and the table's header names them.

    Raises:
      ValueError: if the lists differ in workload, rep_grad, steps, warm-up, engine
        options or recorded CPU, or a method other than `equal` appears twice.
    """
    keys = ("workload", "rep_grad", "steps", "warmup", "jacobian_strategy", "jacobian_chunk_size")
    cpu: str | None = None
    merged: list[dict[str, Any]] = []
    seen: set[str] = set()
    reference: dict[str, Any] | None = None
    for index, runs in enumerate(lists):
        for run in runs:
            method = run["method"]
            if method == "equal" and "equal" in seen:
                continue
            if method in seen:
                raise ValueError(f"method {method!r} appears in more than one list")
            if "error" not in run and method != "equal":
                settings = {k: run[k] for k in keys}
                if reference is None:
                    reference = settings
                elif settings != reference:
                    raise ValueError(
                        f"list {index}, method {method!r}: settings {settings} differ from "
                        f"{reference}"
                    )
            if run.get("cpu"):
                if cpu is not None and run["cpu"] != cpu:
                    raise ValueError(
                        f"list {index}, method {method!r}: measured on {run['cpu']!r}, "
                        f"the others on {cpu!r}"
                    )
                cpu = run["cpu"]
            seen.add(method)
            merged.append({k: v for k, v in run.items() if k not in _RATIO_FIELDS})
    return add_ratios(merged)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.step_time",
        description="Time one training step per weighting method (see the module docstring).",
    )
    parser.add_argument("--workload", choices=workloads.WORKLOADS)
    parser.add_argument("--method", help="a method of mtl_jax.weighting.METHODS, or 'all'")
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        help="instead of timing: merge these --method all JSON lists into one (merge_runs)",
    )
    parser.add_argument(
        "--methods", help="with --method all: comma-separated subset (default: every method)"
    )
    parser.add_argument("--rep-grad", action="store_true", help="gramian/jacobian methods only")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--warmup", type=int, default=DEFAULT_WARMUP)
    parser.add_argument("--jacobian-strategy", default=None)
    parser.add_argument("--jacobian-chunk-size", type=int, default=None)
    parser.add_argument(
        "--threads", type=int, default=DEFAULT_THREADS, help="XLA CPU threads (NPROC); 0 = default"
    )
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="per-method seconds (all)"
    )
    parser.add_argument("--json", type=Path, help="write the result here")
    parser.add_argument("--markdown", type=Path, help="with --method all: write the table here")
    args = parser.parse_args(argv)
    if args.merge:
        if args.workload or args.method or args.methods:
            parser.error("--merge takes no --workload, --method or --methods")
        return args
    if not args.workload or not args.method:
        parser.error("--workload and --method are required (unless --merge)")
    if args.method != "all" and (args.methods or args.markdown):
        parser.error("--methods and --markdown go with --method all")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point (see the module docstring)."""
    args = _parse_args(argv)
    if args.threads:
        # Read by XLA when the CPU backend starts, which is after this (nothing has run).
        os.environ["NPROC"] = str(args.threads)
    common = {
        "rep_grad": args.rep_grad,
        "steps": args.steps,
        "warmup": args.warmup,
        "jacobian_strategy": args.jacobian_strategy,
        "jacobian_chunk_size": args.jacobian_chunk_size,
    }
    if args.merge:
        result = merge_runs([json.loads(path.read_text()) for path in args.merge])
        if args.markdown:
            args.markdown.write_text(markdown_table(result))
    elif args.method == "all":
        methods = args.methods.split(",") if args.methods else list(weighting.METHODS)
        unknown = [m for m in methods if m not in weighting.METHODS]
        if unknown:
            raise SystemExit(f"unknown method(s) {unknown}; valid: {list(weighting.METHODS)}")
        result = run_all(
            args.workload, methods, threads=args.threads, timeout_s=args.timeout, **common
        )
        if args.markdown:
            args.markdown.write_text(markdown_table(result))
    else:
        result = run_one(args.workload, args.method, **common)
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
