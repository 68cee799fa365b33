"""Time each gradient method's own work: its `update` alone, outside the train step.

::

    python -m benchmarks.solver_time --tasks 3,40 --json solver.json --markdown solver.md \\
        --step-json benchmarks/results/w2.json

For every gramian and jacobian method of `mtl_jax.weighting.METHODS` and each task count
T: one jitted `update` (state donated, as in the train step) on the inputs the train step
would give it. Gramian methods get the [T, T] Gramian of a random [T, P] Jacobian; jacobian
methods get the [T, P] rows themselves, so their time includes the work proportional to
P. P defaults to the shared-parameter count of W2 and W3 (307,360). The method's options
are `benchmarks.step_time`'s (LibMTL's defaults). `--warmup` calls (the first compiles),
then `--steps` timed calls; the median is reported.

JSON: a list of `{"method", "kind", "num_tasks", "num_params", "median_s", "steps_s",
"threads", "jax_version"}`; with `--step-json` (`step_time --method all` results; the first
with the same method and T counts) also `step_s` (that method's step median there) and
`fraction_of_step` = `median_s / step_s`. Methods that refuse a task count (Krum and
trimmed mean below 3 tasks) get `{"method", "num_tasks", "error"}`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import step_time
from mtl_jax import row_math, weighting

DEFAULT_PARAMS = 307_360


def time_update(
    name: str, num_tasks: int, num_params: int, *, steps: int, warmup: int
) -> dict[str, Any]:
    """Times `name`'s update on T = `num_tasks` gradients of `num_params` parameters."""
    names = weighting.default_task_names(num_tasks)
    method = weighting.create(name, **step_time.method_options(name, names))
    rng = np.random.default_rng(0)
    rows = jnp.asarray(rng.normal(size=(num_tasks, num_params)), jnp.float32)
    losses = jnp.asarray(rng.uniform(0.5, 2.0, num_tasks), jnp.float32)
    state = method.init_for(names, jax.ShapeDtypeStruct((num_params,), jnp.float32))
    inputs = {"gramian": row_math.gramian(rows), "rows": rows}  # each method reads its own
    update = jax.jit(method.update, donate_argnums=1)
    key = jax.random.PRNGKey(0)

    def call():
        nonlocal state
        out, state, metrics = update(losses, state, key=key, **inputs)
        jax.block_until_ready((out, state, metrics))

    _, times = step_time._timed(call, warmup=warmup, steps=steps)
    return {
        "method": name,
        "kind": method.kind,
        "num_tasks": num_tasks,
        "num_params": num_params,
        "median_s": statistics.median(times),
        "steps_s": times,
        "threads": int(os.environ["NPROC"]) if os.environ.get("NPROC") else None,
        "jax_version": jax.__version__,
    }


def add_step_fractions(results: list[dict[str, Any]], step_runs: Sequence[dict]) -> None:
    """Adds `step_s` and `fraction_of_step` from a `step_time --method all` result."""
    steps: dict[tuple[str, int], float] = {}
    for run in step_runs:
        if "error" not in run:
            steps.setdefault((run["method"], run["num_tasks"]), run["median_s"])
    for result in results:
        step_s = steps.get((result["method"], result["num_tasks"]))
        if "error" not in result and step_s:
            result["step_s"] = step_s
            result["fraction_of_step"] = result["median_s"] / step_s


def markdown_table(results: Sequence[dict[str, Any]]) -> str:
    """One row per (method, T): median ms and, where known, the share of the step."""
    lines = [
        "| method | kind | T | P | median ms | share of the step |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['method']} | | {r['num_tasks']} | | failed: {r['error']} | |")
            continue
        share = f"{100 * r['fraction_of_step']:.3f}%" if "fraction_of_step" in r else "–"
        lines.append(
            f"| {r['method']} | {r['kind']} | {r['num_tasks']} | {r['num_params']} "
            f"| {1e3 * r['median_s']:.3f} | {share} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.solver_time")
    parser.add_argument("--tasks", default="3,40", help="comma-separated task counts")
    parser.add_argument("--params", type=int, default=DEFAULT_PARAMS)
    parser.add_argument("--methods", help="comma-separated subset (default: every gradient method)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="XLA CPU threads (NPROC)")
    parser.add_argument(
        "--step-json",
        type=Path,
        action="append",
        default=[],
        help="a step_time --method all result (repeatable; the first with a (method, T) wins)",
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    if args.threads:
        os.environ["NPROC"] = str(args.threads)  # before the CPU backend starts
    methods = args.methods.split(",") if args.methods else list(weighting.METHODS)
    results = []
    for name in methods:
        if name not in weighting.METHODS:
            raise SystemExit(f"unknown method {name!r}; valid: {list(weighting.METHODS)}")
        options = step_time.method_options(name, weighting.default_task_names(3))
        if weighting.create(name, **options).kind == weighting.LOSS:
            continue  # no update of its own beyond a few scalars
        for num_tasks in (int(t) for t in args.tasks.split(",")):
            try:
                results.append(
                    time_update(name, num_tasks, args.params, steps=args.steps, warmup=args.warmup)
                )
            except ValueError as error:
                results.append({"method": name, "num_tasks": num_tasks, "error": str(error)})
    step_runs = [run for path in args.step_json for run in json.loads(path.read_text())]
    add_step_fractions(results, step_runs)
    text = json.dumps(results, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    else:
        print(text)
    if args.markdown:
        args.markdown.write_text(markdown_table(results))


if __name__ == "__main__":
    main()
