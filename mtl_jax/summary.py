"""Results tables of a sweep: per-metric mean ± std over seeds, Δm% ± std and ranks.

A sweep directory holds one workdir per run (any depth); each finished run has a
`results.json` with its config, its final metrics and, when the config evaluates
periodically, the list of evaluations. A run's reported metrics follow the benchmark
protocol (`../shared/BENCHMARKS.md`): the mean over its last `last_evals` evaluations
(NYUv2/Cityscapes: the last 10 epochs), the evaluation chosen on a validation split
(CelebA: `select_by="f1"`), or its final evaluation — never one chosen on the test set.

Methods are compared on Δm% (`mtl_jax.metrics.delta_m`, negative is better) against a
baseline — a shipped benchmark, a mapping, or single-task runs of the same sweep — and on
the mean rank over metrics (MR, Lin et al.'s LibMTL tables), lower is better.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtl_jax import metrics as mtl_metrics
from mtl_jax import statistics

RESULTS_FILE = "results.json"


@dataclasses.dataclass(frozen=True)
class Run:
    """One finished run: its label (method, plus "+rep_grad" when used), seed, tasks,
    the path of its workdir, and its reported metrics `{"<task>/<metric>": value}`."""

    label: str
    seed: int
    tasks: tuple[str, ...]
    path: Path
    metrics: dict[str, float]


def reported_metrics(
    results: Mapping[str, Any], *, last_evals: int = 0, select_by: str = ""
) -> dict[str, float]:
    """A run's metrics: the mean of its last `last_evals` evaluations, the evaluation
    chosen on the selection split, or its final ones.

    Args:
      results: the contents of a run's results.json.
      last_evals: average the test metrics of the last N evaluations (NYUv2/Cityscapes).
      select_by: a metric name, e.g. "f1": report the test metrics of the evaluation
        whose selection-split metrics (`config.select_split`, e.g. CelebA's validation)
        have the highest mean over every `<task>/<select_by>` (higher must be better).

    Raises:
      ValueError: `last_evals` asks for more evaluations than the run made, or
        `select_by` names a metric the selection evaluations lack.
    """
    if select_by:
        evals = [e for e in results.get("evals", []) if "select" in e]
        if not evals:
            raise ValueError("select_by needs evaluations of a selection split (select_split)")

        def score(entry):
            values = [v for k, v in entry["select"].items() if k.endswith(f"/{select_by}")]
            if not values:
                raise ValueError(f"no '<task>/{select_by}' metric in the selection evaluations")
            return float(np.mean(values))

        return dict(max(evals, key=score)["metrics"])
    if last_evals <= 0:
        return dict(results["final"])
    evals = results.get("evals", [])
    if len(evals) < last_evals:
        raise ValueError(
            f"asked for the mean of the last {last_evals} evaluations, the run made "
            f"{len(evals)} (set eval_every_steps, or use last_evals=0 for the final one)"
        )
    chosen = [e["metrics"] for e in evals[-last_evals:]]
    return {key: float(np.mean([m[key] for m in chosen])) for key in chosen[-1]}


def run_label(config: Mapping[str, Any]) -> str:
    """The method name, with "+rep_grad" when the run used representation gradients and
    `:key=value` for each option set in `weighting.kwargs` (sorted), e.g.
    `krum:n_selected=2` (the sweep's method spec); then, where the run changed how the
    tasks are trained, ` task.field=value` for each `task_options` entry and
    ` sampler=name(task)` / ` augment=name`, so that such runs are never averaged with
    the plain ones, e.g. `equal left.loss_type=focal`."""
    weighting = config["weighting"]
    label = weighting["name"] + ("+rep_grad" if weighting.get("rep_grad") else "")
    options = weighting.get("kwargs") or {}
    label += "".join(f":{key}={options[key]}" for key in sorted(options))
    for task, fields in sorted((config.get("task_options") or {}).items()):
        label += "".join(f" {task}.{key}={fields[key]}" for key in sorted(fields))
    dataset = config.get("dataset") or {}
    if dataset.get("sampler", "uniform") != "uniform":
        label += f" sampler={dataset['sampler']}({dataset.get('sampler_task', '')})"
    if dataset.get("augment"):
        label += f" augment={dataset['augment']}"
    return label


def load_run(workdir: str | Path, *, last_evals: int = 0, select_by: str = "") -> Run:
    """The finished run in `workdir` (its `results.json`)."""
    path = Path(workdir) / RESULTS_FILE
    results = json.loads(path.read_text())
    config = results["config"]
    tasks = tuple(sorted(t.strip() for t in config["tasks"].split(",") if t.strip()))
    return Run(
        label=run_label(config),
        seed=int(config["seed"]),
        tasks=tasks,
        path=path.parent,
        metrics=reported_metrics(results, last_evals=last_evals, select_by=select_by),
    )


def load_runs(directory: str | Path, *, last_evals: int = 0, select_by: str = "") -> list[Run]:
    """Every finished run (a `results.json`) under `directory`, sorted by label and seed.

    Raises:
      FileNotFoundError: no finished run under `directory`.
    """
    runs = [
        load_run(path.parent, last_evals=last_evals, select_by=select_by)
        for path in sorted(Path(directory).rglob(RESULTS_FILE))
    ]
    if not runs:
        raise FileNotFoundError(f"no finished run ({RESULTS_FILE}) under {str(directory)!r}")
    return sorted(runs, key=lambda r: (r.label, r.seed))


def run_provenance(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """Per run: its workdir, label, seed, and the code (commit, dirty), versions and
    devices its results.json records (None for results written before provenance)."""
    records = []
    for run in runs:
        results = json.loads((run.path / RESULTS_FILE).read_text())
        origin = results.get("provenance")
        records.append(
            {
                "workdir": str(run.path),
                "label": run.label,
                "seed": run.seed,
                "git": origin and origin["git"],
                "versions": origin and origin["versions"],
                "devices": origin and origin["devices"],
                "dataset": origin and origin["dataset"],
            }
        )
    return records


def provenance_note(record: Mapping[str, Any]) -> str:
    """Markdown lines under a table: the sweep's code and machine, and every distinct
    code state (commit, dirty) and device kind its runs were produced with."""
    from mtl_jax import provenance

    runs = record["runs"]
    # A run whose results.json predates provenance has neither git nor versions.
    codes = sorted(
        {provenance.code_label(r["git"]) if r["versions"] else "unrecorded" for r in runs}
    )
    devices = sorted(
        {f"{r['devices']['count']} × {r['devices']['kind']}" for r in runs if r["devices"]}
    )
    lines = [
        "",
        f"Summarised with: {provenance.describe(record['sweep'])}.",
        f"Runs ({len(runs)}) produced by code {', '.join(codes)} on {', '.join(devices) or '?'}.",
    ]
    return "\n".join(lines) + "\n"


def single_task_baseline(
    runs: Sequence[Run], metrics: Collection[str] | None = None
) -> dict[str, float]:
    """The STL baseline from single-task runs: each metric's mean over the seeds of the
    run that trained only its task; only the `metrics` given (e.g. the keys of the
    sweep's `metric_directions`), or every metric but the loss.

    Raises:
      ValueError: two different single-task setups for the same task would be averaged.
    """
    per_task: dict[str, list[Run]] = {}
    for run in runs:
        if len(run.tasks) != 1:
            raise ValueError(f"run {str(run.path)!r} trains {run.tasks}, not one task")
        per_task.setdefault(run.tasks[0], []).append(run)
    baseline = {}
    for task, task_runs in per_task.items():
        labels = {r.label for r in task_runs}
        if len(labels) > 1:
            raise ValueError(f"single-task runs of {task!r} use different methods {labels}")
        keys = [
            k
            for k in task_runs[0].metrics
            if k.startswith(f"{task}/")
            and k != f"{task}/loss"
            and (metrics is None or k in metrics)
        ]
        for key in keys:
            baseline[key] = float(np.mean([r.metrics[key] for r in task_runs]))
    return baseline


DELTA_M = "Δm%"  # the key of Δm% in a row's paired comparisons


@dataclasses.dataclass(frozen=True)
class Row:
    """One method's line: metric means, sample stds and 95% intervals (half-widths, None
    for one seed) over seeds; Δm% as (mean, std, interval) (None without a baseline);
    mean rank over metrics; rank by Δm (or by MR without a baseline); and `paired`, the
    per-seed comparison with the reference method on the seeds both ran (metric keys
    and `DELTA_M`; None for the reference itself or when it is absent)."""

    label: str
    seeds: tuple[int, ...]
    mean: dict[str, float]
    std: dict[str, float]
    ci95: dict[str, float | None]
    delta_m: tuple[float, float, float | None] | None
    mean_rank: float
    rank: int
    paired: dict[str, statistics.PairedDifference] | None = None


def summarize(
    runs: Sequence[Run],
    directions: Mapping[str, int],
    *,
    baseline: str | Mapping[str, float] | None = None,
    reference: str = "equal",
) -> list[Row]:
    """Aggregates runs by label over seeds, sorted by rank (best first).

    Args:
      runs: the multi-task runs to compare (all with the same tasks).
      directions: `{"<task>/<metric>": ±1}` for the compared metrics (losses are left out).
      baseline: for Δm%: a benchmark name, a mapping, or None for no Δm column.
      reference: the label every other method is compared with, seed by seed
        (`statistics.paired_difference`); no comparison when no run has that label.

    Raises:
      ValueError: runs with different task sets, or a metric missing from a run.
    """
    task_sets = {r.tasks for r in runs}
    if len(task_sets) != 1:
        raise ValueError(f"runs train different task sets: {sorted(task_sets)}")
    keys = sorted(directions)
    groups: dict[str, list[Run]] = {}
    for run in runs:
        missing = sorted(set(keys) - set(run.metrics))
        if missing:
            raise ValueError(f"run {str(run.path)!r} lacks metric(s) {missing}")
        groups.setdefault(run.label, []).append(run)
    labels = sorted(groups)
    for label in labels:
        seeds = [r.seed for r in groups[label]]
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"method {label!r} has several runs of one seed: {sorted(seeds)}")
    values = {
        label: {k: np.array([r.metrics[k] for r in groups[label]]) for k in keys}
        for label in labels
    }
    mean = {label: {k: float(v.mean()) for k, v in values[label].items()} for label in labels}
    std = {
        label: {k: statistics.sample_std(v) for k, v in values[label].items()} for label in labels
    }
    ci95 = {
        label: {k: statistics.mean_interval(v) for k, v in values[label].items()}
        for label in labels
    }
    # Mean rank over metrics: rank 1 is the best method on that metric.
    ranks = np.zeros((len(labels), len(keys)))
    for j, key in enumerate(keys):
        scores = np.array([directions[key] * mean[label][key] for label in labels])
        better = np.sum(scores[None, :] > scores[:, None], axis=1)
        tied = np.sum(scores[None, :] == scores[:, None], axis=1)
        ranks[:, j] = 1 + better + (tied - 1) / 2  # ties share their mean rank
    mean_rank = dict(zip(labels, ranks.mean(axis=1), strict=True))
    per_seed_delta: dict[str, dict[int, float]] = {}
    deltas = {}
    # A named benchmark brings its own directions; a mapping uses the tasks'.
    benchmark_directions = None if isinstance(baseline, str) else directions
    if baseline is not None:
        for label in labels:
            per_seed_delta[label] = {
                r.seed: mtl_metrics.delta_m(r.metrics, baseline, directions=benchmark_directions)
                for r in groups[label]
            }
            d = list(per_seed_delta[label].values())
            deltas[label] = (
                float(np.mean(d)),
                statistics.sample_std(d),
                statistics.mean_interval(d),
            )
    paired = {}
    if reference in groups:
        by_seed = {label: {r.seed: r for r in groups[label]} for label in labels}
        for label in labels:
            if label == reference:
                continue
            common = sorted(set(by_seed[label]) & set(by_seed[reference]))
            if not common:
                continue
            comparison = {
                key: statistics.paired_difference(
                    [by_seed[label][s].metrics[key] for s in common],
                    [by_seed[reference][s].metrics[key] for s in common],
                )
                for key in keys
            }
            if deltas:
                comparison[DELTA_M] = statistics.paired_difference(
                    [per_seed_delta[label][s] for s in common],
                    [per_seed_delta[reference][s] for s in common],
                )
            paired[label] = comparison

    def sort_key(label):
        return (deltas[label][0] if deltas else mean_rank[label], label)

    order = sorted(labels, key=sort_key)
    return [
        Row(
            label=label,
            seeds=tuple(r.seed for r in groups[label]),
            mean=mean[label],
            std=std[label],
            ci95=ci95[label],
            delta_m=deltas.get(label),
            mean_rank=float(mean_rank[label]),
            rank=position + 1,
            paired=paired.get(label),
        )
        for position, label in enumerate(order)
    ]


def _columns(rows: Sequence[Row]) -> list[str]:
    return sorted(rows[0].mean)


def _interval(half_width: float | None) -> str:
    return "" if half_width is None else f" (±{half_width:.2g})"


def stl_baseline_note(baseline: Mapping[str, float]) -> str:
    """A Markdown line giving the Δm% baseline taken from a sweep's single-task runs
    (`single_task_baseline`), so that a table shows what its Δm% is relative to."""
    values = ", ".join(f"{key} {value:.4g}" for key, value in sorted(baseline.items()))
    return f"\nΔm% baseline: this sweep's single-task runs (`--stl`), mean over seeds: {values}.\n"


def to_markdown(
    rows: Sequence[Row],
    *,
    title: str = "",
    directions: Mapping[str, int] | None = None,
    reference: str = "equal",
) -> str:
    """Markdown: the results table (rank, method, seeds, each metric as mean ± sample
    std, Δm% ± std with its 95% t-interval, MR) and, when rows carry paired comparisons,
    a second table of each method minus `reference` on the same seeds (mean difference
    and bootstrap 95% interval; `✓` marks a difference beyond seed noise in the better
    direction, `✗` in the worse one; `directions` gives "better" per metric, Δm% is
    better when negative)."""
    keys = _columns(rows)
    header = ["rank", "method", "seeds", *keys, "Δm% ↓", "MR ↓"]
    lines = [f"## {title}", ""] if title else []
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [str(row.rank), row.label, str(len(row.seeds))]
        cells += [f"{row.mean[k]:.4g} ± {row.std[k]:.2g}" for k in keys]
        if row.delta_m:
            mean, std, half = row.delta_m
            cells.append(f"{mean:+.2f} ± {std:.2f}{_interval(half)}")
        else:
            cells.append("—")
        cells.append(f"{row.mean_rank:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "Mean ± sample std over seeds; Δm% (negative is better than single-task) with the "
        "half-width of its 95% t-interval in brackets; MR: mean rank over the metrics."
    )
    compared = [row for row in rows if row.paired]
    if compared:
        signs = dict(directions or {})
        signs[DELTA_M] = -1
        paired_keys = [*keys, DELTA_M] if DELTA_M in compared[0].paired else keys
        lines += [
            "",
            f"### Paired with `{reference}` (same seeds): mean difference [bootstrap 95% interval]",
            "",
            "| method | pairs | " + " | ".join(paired_keys) + " |",
            "|" + "---|" * (len(paired_keys) + 2),
        ]
        for row in compared:
            cells = [row.label, str(next(iter(row.paired.values())).pairs)]
            for key in paired_keys:
                diff = row.paired[key]
                mark = ""
                if diff.beyond_noise and key in signs:
                    mark = " ✓" if signs[key] * diff.mean > 0 else " ✗"
                cells.append(f"{diff.mean:+.3g} [{diff.low:+.3g}, {diff.high:+.3g}]{mark}")
            lines.append("| " + " | ".join(cells) + " |")
        lines += [
            "",
            "✓ / ✗: the interval excludes 0, better / worse than "
            f"`{reference}` beyond seed noise. With 3 seeds the bootstrap interval spans "
            "about the smallest to the largest per-seed difference, so a mark means all "
            "seeds agree on the sign.",
        ]
    return "\n".join(lines) + "\n"


def to_csv(rows: Sequence[Row]) -> str:
    """The same table as CSV, one column per statistic (`<metric>_mean`, `_std`,
    `_ci95`; Δm% likewise; and per metric the paired difference with the reference,
    `<metric>_diff`, `_diff_low`, `_diff_high`, empty for the reference itself)."""
    keys = _columns(rows)
    paired_keys = [*keys, DELTA_M] if any(r.delta_m for r in rows) else keys
    out = io.StringIO()
    writer = csv.writer(out)
    header = ["rank", "method", "seeds"]
    header += [f"{k}_{stat}" for k in keys for stat in ("mean", "std", "ci95")]
    header += ["delta_m_mean", "delta_m_std", "delta_m_ci95", "mean_rank"]
    header += [
        f"{'delta_m' if k == DELTA_M else k}_{stat}"
        for k in paired_keys
        for stat in ("diff", "diff_low", "diff_high")
    ]
    writer.writerow(header)

    def text(value):
        return "" if value is None else value

    for row in rows:
        values = [row.rank, row.label, len(row.seeds)]
        values += [text(v) for k in keys for v in (row.mean[k], row.std[k], row.ci95[k])]
        values += [text(v) for v in row.delta_m] if row.delta_m else ["", "", ""]
        values.append(row.mean_rank)
        for key in paired_keys:
            diff = row.paired.get(key) if row.paired else None
            values += [diff.mean, diff.low, diff.high] if diff else ["", "", ""]
        writer.writerow(values)
    return out.getvalue()
