"""Runs methods × seeds of one config, then writes the results table and the plots.

    mtl-jax sweep --config shapes_dense \
        --workdir runs/shapes-sweep --methods equal,mgda,uncertainty --seeds 0,1 \
        [--stl] [--baseline nyuv2] [--last-evals 10 | --select-by f1] [--pareto X,Y] \
        [--config.key=value ...]
    mtl-jax summarize --workdir runs/shapes-sweep [--last-evals 10 | --select-by f1]

(`python -m experiments.sweep` is the same as `mtl-jax sweep`; `--config` takes what
`experiments.main` takes: a config name, a dotted module or a file.)

Each run is `python -m experiments.main` in its own process and workdir,
`<workdir>/<method>/seed<k>` (a method written `mgda+rep_grad` also sets
`weighting.rep_grad`). The sweep is resumable: finished runs are skipped, an interrupted
one resumes from its checkpoint, and a failed run is reported without stopping the
others. `--stl` also trains each task alone (`<workdir>/stl/<task>/seed<k>`, method
`equal`), and those runs are the Δm% baseline unless `--baseline` names a benchmark with
shipped single-task numbers ("nyuv2", "cityscapes", "multi_mnist", "shapes_dense").

Outputs in `<workdir>`: `sweep.json` (the sweep's arguments, written before the first
run), `summary.md` and `summary.csv` (per metric mean ± std over seeds, Δm% ± std, mean
rank over metrics, rank), `pareto.png` (two metrics, every run and every method's mean),
and in every run's workdir `loss_curves.png`, `task_weights.png` and, for Gramian
methods, `grad_cosine.png`.

`summarize` runs nothing: it is this sweep with `--no-run` and the arguments in the
workdir's `sweep.json` (or, for a sweep started before `sweep.json` existed, the command
line in its `provenance.json`); its options replace the recorded ones.

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
SWEEP_FILE = "sweep.json"  # the arguments of the sweep a workdir holds, for `summarize`


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


def _add_summary_options(parser: argparse.ArgumentParser, *, recorded: bool = False) -> None:
    """The options that choose what the table reports; with `recorded` (`summarize`) each
    defaults to None: keep the sweep's own."""
    parser.add_argument(
        "--baseline", default=None if recorded else "", help="benchmark name for Δm%%"
    )
    parser.add_argument(
        "--last-evals",
        type=int,
        default=None if recorded else 0,
        help="report the mean of the last N evaluations",
    )
    parser.add_argument(
        "--select-by",
        default=None if recorded else "",
        help="report the evaluation with the best mean <task>/METRIC on the config's select_split",
    )
    parser.add_argument(
        "--pareto", default=None if recorded else "", help="two metrics X,Y for pareto.png"
    )


def _record_arguments(root: Path, args: argparse.Namespace, config_spec: str, overrides) -> None:
    """Writes `sweep.json`: the arguments that reproduce this sweep's plan and table."""
    argv = [
        "--config", config_spec, "--methods", args.methods, "--seeds", args.seeds,
        *(["--stl"] if args.stl else []), "--baseline", args.baseline,
        "--last-evals", str(args.last_evals), "--select-by", args.select_by,
        "--pareto", args.pareto, *overrides,
    ]  # fmt: skip
    _write_arguments(root, argv)


def _write_arguments(root: Path, argv: list[str]) -> None:
    from mtl_jax import workdir as wd

    root.mkdir(parents=True, exist_ok=True)
    wd.atomic_write(root / SWEEP_FILE, (json.dumps({"argv": argv}, indent=2) + "\n").encode())


def _drop_options(argv: list[str], with_value: tuple[str, ...], flags: tuple[str, ...]):
    """`argv` without the options `with_value` (`--x V` or `--x=V`) and the `flags`."""
    kept, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item in flags or ("=" in item and item.split("=", 1)[0] in with_value):
            pass
        elif item in with_value:
            skip = True
        else:
            kept.append(item)
    return kept


def recorded_arguments(root: Path) -> list[str]:
    """The arguments (less `--workdir`) of the sweep whose workdir is `root`: from
    `sweep.json`, or from the command line recorded in `provenance.json` (a relative
    `--config` path made absolute against the directory it was run from).

    Raises:
      FileNotFoundError: `root` holds neither file.
      ValueError: the file is unreadable or records no sweep command.
    """
    from mtl_jax.config import find_config

    sweep_file, provenance_file = root / SWEEP_FILE, root / "provenance.json"
    if not sweep_file.is_file() and not provenance_file.is_file():
        raise FileNotFoundError(
            f"{str(root)!r} holds no {SWEEP_FILE} nor provenance.json: not the workdir of a "
            "sweep (experiments.sweep writes sweep.json before its first run)"
        )
    try:
        if sweep_file.is_file():
            return list(json.loads(sweep_file.read_text())["argv"])
        record = json.loads(provenance_file.read_text())["sweep"]
        command, cwd = list(record["command"]), Path(record["cwd"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{str(root)!r}: cannot read the sweep's arguments: {error}") from error
    start = next((i for i, item in enumerate(command) if item.startswith("--")), None)
    if start is None or "--methods" not in " ".join(command):
        raise ValueError(f"{str(provenance_file)!r} records no sweep command: {command}")
    argv = _drop_options(command[start:], ("--workdir",), ("--no-run", "--overwrite"))
    for index, item in enumerate(argv[:-1]):
        spec = argv[index + 1]
        if item == "--config" and ("/" in spec or spec.endswith(".py")):
            argv[index + 1] = find_config(str(cwd / spec)).portable_spec()  # cwd / abs = abs
    return argv


def summarize_main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    """`summarize --workdir DIR [--baseline B] [--last-evals N] [--select-by M] [--pareto
    X,Y]`: the sweep of DIR with `--no-run` and its recorded arguments (see the module
    docstring). Returns the sweep's exit status (2 when DIR holds no sweep)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Summarises a sweep's finished runs (summary.md, summary.csv, pareto.png) "
        "without running anything; options given here replace the sweep's own.",
    )
    parser.add_argument("--workdir", required=True, help="the sweep's workdir")
    _add_summary_options(parser, recorded=True)
    args = parser.parse_args(argv)
    root = Path(args.workdir)
    try:
        recorded = recorded_arguments(root)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not (root / SWEEP_FILE).is_file():
        # Recovered from provenance.json, which this summary rewrites with its own command.
        _write_arguments(root, recorded)
    replaced = [
        item
        for option, value in (
            ("--baseline", args.baseline),
            ("--last-evals", args.last_evals),
            ("--select-by", args.select_by),
            ("--pareto", args.pareto),
        )
        if value is not None
        for item in (option, str(value))
    ]
    return main([*recorded, "--workdir", args.workdir, "--no-run", *replaced], prog=prog)


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config", required=True, help="a config name, a dotted module or a config file"
    )
    parser.add_argument("--workdir", required=True)
    parser.add_argument(
        "--methods",
        required=True,
        help="comma-separated methods: name[+rep_grad][:key=value...], e.g. krum:n_selected=2",
    )
    parser.add_argument("--seeds", default="0", help="comma-separated integer seeds")
    parser.add_argument("--stl", action="store_true", help="also train each task alone")
    _add_summary_options(parser)
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
    from mtl_jax.config import ConfigError, find_config, load_config
    from mtl_jax.metrics import BENCHMARKS, metric_directions

    try:
        config = load_config(args.config, [o[len("--config.") :] for o in overrides])
        source = find_config(args.config)
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
    if not args.no_run:
        _record_arguments(root, args, source.portable_spec(), overrides)
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
            baseline = summary.single_task_baseline(stl_runs, directions)
    rows = summary.summarize(runs, directions, baseline=baseline)
    title = f"{source.name}: {len(methods)} methods × {len(seeds)} seeds"
    record = {
        "sweep": provenance.collect(),
        "runs": summary.run_provenance(list(loaded.values())),
    }
    (root / "provenance.json").write_text(json.dumps(record, indent=2) + "\n")
    footer = summary.provenance_note(record)
    table = summary.to_markdown(rows, title=title, directions=directions)
    if isinstance(baseline, dict):  # from this sweep's single-task runs
        table += summary.stl_baseline_note(baseline)
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
