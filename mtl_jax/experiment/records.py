"""The shapes of what a run writes: metrics.jsonl lines and results.json evaluation entries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mtl_jax.tasks import is_per_class


def train_record(step: int, metrics: Mapping[str, Any], names: Sequence[str]) -> dict:
    """One metrics.jsonl line of a train step: per-task vectors become {task: value}."""
    record: dict[str, Any] = {"step": step}
    for key, value in metrics.items():
        value = np.asarray(value)
        if value.ndim == 1 and value.shape[0] == len(names):
            record[key] = {n: float(v) for n, v in zip(names, value, strict=True)}
        else:
            record[key] = value.tolist()
    return record


def eval_entry(step: int, metrics: dict, select: dict | None) -> dict[str, Any]:
    """One entry of results.json's `evals`: the test metrics and, with
    `config.select_split`, that split's metrics (for choosing an evaluation)."""
    entry = {"step": step, "metrics": metrics}
    if select is not None:
        entry["select"] = select
    return entry


def eval_record(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The metrics.jsonl line of an evaluation entry."""
    record = {"step": entry["step"], "eval": entry["metrics"]}
    if "select" in entry:
        record["select_eval"] = entry["select"]
    return record


def entries_of(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The evaluation entries of metrics.jsonl lines (the inverse of `eval_record`)."""
    return [eval_entry(r["step"], r["eval"], r.get("select_eval")) for r in records if "eval" in r]


def tables_of(totals: Mapping[str, Mapping[str, np.ndarray]], tasks: Mapping) -> dict:
    """results.json's `tables`: `{task: {table: nested lists}}` of the tasks that have
    tables (`Task.compute_tables`, e.g. a confusion matrix), from a split's summed stats."""
    tables = {}
    for name in sorted(totals):
        task_tables = tasks[name].compute_tables(totals[name])
        if task_tables:
            tables[name] = {k: np.asarray(v).tolist() for k, v in task_tables.items()}
    return tables


# Metrics per line of `format_results` (wrapped below the task's name).
_CELLS_PER_LINE = 5


def format_results(results: Mapping[str, float]) -> str:
    """A per-task table of `{"<task>/<metric>": value}`; per-class metrics
    (`<task>/<metric>/<class>`, in results.json) are left out."""
    rows: dict[str, dict[str, float]] = {}
    for key, value in results.items():
        if is_per_class(key):
            continue
        task, metric = key.split("/", 1)
        rows.setdefault(task, {})[metric] = value
    lines = [f"{'task':<12} metrics"]
    for task in sorted(rows):
        cells = [f"{m}={v:.4f}" for m, v in sorted(rows[task].items())]
        for start in range(0, len(cells), _CELLS_PER_LINE):
            label = task if start == 0 else ""
            lines.append(f"{label:<12} {'  '.join(cells[start : start + _CELLS_PER_LINE])}")
    return "\n".join(lines)
