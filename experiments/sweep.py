"""Runs methods × seeds of one config, then writes the results table and the plots.

    python -m experiments.sweep --config experiments/configs/shapes_dense.py \
        --workdir runs/shapes-sweep --methods equal,mgda,uncertainty --seeds 0,1 \
        [--stl] [--baseline nyuv2] [--last-evals 10 | --select-by f1] [--pareto X,Y] \
        [--config.key=value ...]

Each run is `python -m experiments.main` in its own process and workdir,
`<workdir>/<method>/seed<k>` (a method written `mgda+rep_grad` also sets
`weighting.rep_grad`). The sweep is resumable: finished runs are skipped, an interrupted
one resumes from its checkpoint, and a failed run is reported without stopping the
others. `--stl` also trains each task alone (`<workdir>/stl/<task>/seed<k>`, method
`equal`), and those runs are the Δm% baseline unless `--baseline` names a benchmark with
shipped single-task numbers ("nyuv2", "cityscapes", "multi_mnist", "shapes_dense").

Outputs in `<workdir>`: `summary.md` and `summary.csv` (per metric mean ± std over seeds,
Δm% ± std, mean rank over metrics, rank), `pareto.png` (two metrics, every run and every
method's mean), and in every run's workdir `loss_curves.png`, `task_weights.png` and,
for Gramian methods, `grad_cosine.png`.

Exit status: 0 when every run finished, 1 when some failed (the table covers the rest),
2 for invalid arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

REP_GRAD_SUFFIX = "+rep_grad"


@dataclasses.dataclass
class PlannedRun:
    """One run of the sweep: its workdir, its overrides and what the workdir holds now."""

    workdir: Path
    overrides: list[str]
    status: str = ""  # workdir.NEW, RESUME or FINISHED, or STALE (a different config)


STALE = "stale"


def parse_method(spec: str) -> tuple[str, bool, dict[str, str]]:
    """`name[+rep_grad][:key=value...]` -> (name, rep_grad, options as text).

    Raises:
      ValueError: an option without `=`.
    """
    head, *options = spec.split(":")
    parsed = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not key:
            raise ValueError(f"method {spec!r}: options look like :key=value, got {option!r}")
        parsed[key] = value
    return head.removesuffix(REP_GRAD_SUFFIX), head.endswith(REP_GRAD_SUFFIX), parsed


def method_directory(spec: str) -> str:
    """The directory name of a method spec (`:` becomes `-`)."""
    return spec.replace(":", "-")


def _method_overrides(spec: str) -> list[str]:
    name, rep_grad, options = parse_method(spec)
    overrides = [f"--config.weighting.name={name}"]
    if rep_grad:
        overrides.append("--config.weighting.rep_grad=True")
    overrides += [f"--config.weighting.kwargs.{key}={value}" for key, value in options.items()]
    return overrides


def plan_runs(
    root: Path, methods: list[str], seeds: list[int], tasks: list[str], overrides: list[str], stl
) -> list[PlannedRun]:
    """Every run of the sweep, methods × seeds then (with `stl`) tasks × seeds."""
    runs = [
        PlannedRun(
            root / method_directory(method) / f"seed{seed}",
            [*overrides, *_method_overrides(method), f"--config.seed={seed}"],
        )
        for method in methods
        for seed in seeds
    ]
    if stl:
        runs += [
            PlannedRun(
                root / "stl" / task / f"seed{seed}",
                [
                    *overrides,
                    "--config.weighting.name=equal",
                    f"--config.tasks={task}",
                    f"--config.seed={seed}",
                ],
            )  # fmt: skip
            for task in tasks
            for seed in seeds
        ]
    return runs


def check_runs(config_path: str, runs: list[PlannedRun]) -> list[str]:
    """Validates every run's config exactly as `experiments.main` does (same reference,
    same builders, nothing compiled) and compares it with what its workdir holds; sets
    each run's `status`. Returns one message per invalid run, and per stale run the keys
    that differ from the config its workdir was started with."""
    from experiments.configs import base
    from mtl_jax import workdir as wd
    from mtl_jax.config import ConfigError, load_config
    from mtl_jax.experiment import build_experiment

    problems = []
    for run in runs:
        try:
            config = load_config(
                config_path,
                [o[len("--config.") :] for o in run.overrides],
                reference=base.get_config(),
            )
            build_experiment(config)
            run.status = wd.inspect_workdir(run.workdir, config)
        except wd.ConfigMismatch as error:
            run.status = STALE
            keys = "; ".join(error.differences)
            problems.append(f"{run.workdir}: holds a run of a different config: {keys}")
        except (ConfigError, ValueError) as error:
            problems.append(f"{run.workdir}: {error}")
    return problems


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return (f"{hours}h" if hours else "") + f"{rest // 60}m{rest % 60:02d}s"


def execute(config_path: str, runs: list[PlannedRun], *, overwrite: bool) -> list[str]:
    """Runs (or resumes) every unfinished run in its own process, printing progress (runs
    done / total, ETA from the mean time of the runs executed so far). Returns the
    workdirs of the runs that failed."""
    from mtl_jax import workdir as wd

    total = len(runs)
    done = sum(run.status == wd.FINISHED for run in runs)
    to_run = [run for run in runs if run.status != wd.FINISHED]
    print(f"[sweep] {total} runs: {done} finished already, {len(to_run)} to run", flush=True)
    failed, spent = [], []
    for index, run in enumerate(to_run):
        eta = ""
        if spent:
            eta = f", ETA {_duration(sum(spent) / len(spent) * (len(to_run) - index))}"
        print(f"[sweep] {done}/{total} done{eta}; running {run.workdir}", flush=True)
        command = [
            sys.executable, "-m", "experiments.main", "--config", config_path,
            "--workdir", str(run.workdir), "--no-progress", *run.overrides,
            *(["--overwrite"] if overwrite and run.status == STALE else []),
        ]  # fmt: skip
        start = time.perf_counter()
        code = subprocess.run(command, check=False).returncode
        spent.append(time.perf_counter() - start)
        if code == 0:
            done += 1
        else:
            print(f"[sweep] failed (exit {code}): {run.workdir}", file=sys.stderr, flush=True)
            failed.append(str(run.workdir))
    print(f"[sweep] {done}/{total} done", flush=True)
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument(
        "--methods",
        required=True,
        help="comma-separated methods: name[+rep_grad][:key=value...], e.g. krum:n_selected=2",
    )
    parser.add_argument("--seeds", default="0", help="comma-separated integer seeds")
    parser.add_argument("--stl", action="store_true", help="also train each task alone")
    parser.add_argument("--baseline", default="", help="benchmark name for Δm%%")
    parser.add_argument(
        "--last-evals", type=int, default=0, help="report the mean of the last N evaluations"
    )
    parser.add_argument(
        "--select-by",
        default="",
        help="report the evaluation with the best mean <task>/METRIC on the config's select_split",
    )
    parser.add_argument("--pareto", default="", help="two metrics X,Y for pareto.png")
    parser.add_argument(
        "--no-run",
        action="store_true",
        help="run nothing: validate, then summarise the runs that are finished",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="rerun from scratch the runs whose workdir holds a different config",
    )
    args, rest = parser.parse_known_args(argv)
    overrides = [item for item in rest if item.startswith("--config.")]
    if len(overrides) != len(rest):
        parser.error(f"unrecognized arguments {sorted(set(rest) - set(overrides))}")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]

    # Validate everything (config, overrides, methods, metrics) before the first run.
    from mtl_jax import data, weighting
    from mtl_jax.config import ConfigError, load_config
    from mtl_jax.metrics import BENCHMARKS, metric_directions

    try:
        config = load_config(args.config, [o[len("--config.") :] for o in overrides])
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        names = {parse_method(m)[0] for m in methods}
    except ValueError as error:
        parser.error(str(error))
    unknown = sorted(names - set(weighting.METHODS))
    if unknown or not methods or not seeds:
        parser.error(f"unknown methods {unknown} (valid: {list(weighting.METHODS)})")
    if args.baseline and args.baseline not in BENCHMARKS:
        parser.error(f"--baseline must be one of {sorted(BENCHMARKS)}, got {args.baseline!r}")
    task_names = sorted(t.strip() for t in config.tasks.split(",") if t.strip())
    available = data.DATASETS[config.dataset.name].tasks()
    directions = metric_directions({n: available[n] for n in task_names})
    pareto = [k for k in args.pareto.split(",") if k] or [
        next(k for k in directions if k.startswith(f"{task}/")) for task in task_names[:2]
    ]
    if len(pareto) != 2 or set(pareto) - set(directions):
        parser.error(f"--pareto needs two of {sorted(directions)}, got {args.pareto!r}")

    root = Path(args.workdir)
    runs = plan_runs(root, methods, seeds, task_names, overrides, args.stl)
    problems = check_runs(args.config, runs)
    stale = [run for run in runs if run.status == STALE]
    invalid = len(problems) - len(stale)
    if invalid or (stale and not args.overwrite):
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        if stale and not invalid:
            print(
                f"error: {len(stale)} of {len(runs)} runs were started with another config; "
                "nothing was run: use another --workdir, the same overrides, or --overwrite "
                "to rerun those runs from scratch",
                file=sys.stderr,
            )
        return 2
    failed = [] if args.no_run else execute(args.config, runs, overwrite=args.overwrite)

    from mtl_jax import plots, provenance, summary
    from mtl_jax import workdir as wd

    # Only this sweep's runs (validated above) are summarised, never other files under root.
    finished = [run for run in runs if (run.workdir / wd.RESULTS_FILE).is_file()]
    loaded = {
        run.workdir: summary.load_run(
            run.workdir, last_evals=args.last_evals, select_by=args.select_by
        )
        for run in finished
    }
    stl_root = root / "stl"
    runs = [r for path, r in loaded.items() if stl_root not in path.parents]
    if not runs:
        print("[sweep] no finished run: nothing to summarise", file=sys.stderr)
        return 1
    baseline = args.baseline or None
    if args.stl and baseline is None:
        stl_runs = [r for path, r in loaded.items() if stl_root in path.parents]
        if not stl_runs:
            print("[sweep] no finished single-task run: no Δm% column", file=sys.stderr)
        else:
            baseline = summary.single_task_baseline(stl_runs)
    rows = summary.summarize(runs, directions, baseline=baseline)
    title = f"{Path(args.config).stem}: {len(methods)} methods × {len(seeds)} seeds"
    record = {
        "sweep": provenance.collect(),
        "runs": summary.run_provenance(list(loaded.values())),
    }
    (root / "provenance.json").write_text(json.dumps(record, indent=2) + "\n")
    footer = summary.provenance_note(record)
    table = summary.to_markdown(rows, title=title, directions=directions)
    (root / "summary.md").write_text(table + footer)
    (root / "summary.csv").write_text(summary.to_csv(rows))
    plots.plot_pareto(runs, pareto[0], pareto[1], directions, root / "pareto.png")
    for run in runs:
        plots.plot_run(run.path, title=f"{run.label} seed {run.seed}")
    print(table)
    if failed:
        print(f"[sweep] {len(failed)} run(s) failed: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
