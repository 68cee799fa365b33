"""Figures of a run and of a sweep, drawn from the files the runs write.

Per run (from `metrics.jsonl`): per-task training loss curves, task weights over steps,
and — for methods that compute a Gramian — the pairwise gradient cosines over steps;
when the run logs it (`config.conflict_every_steps`), the per-layer gradient conflict
as a blocks × steps heat map; and (from `results.json`) the test confusion matrix of
every classification task.
Per sweep (from `mtl_jax.summary` runs): a two-metric scatter of every run's reported
metrics, one colour per method, with each method's mean, marking the methods that no
other method beats on both axes (a Pareto view).

Everything renders with matplotlib's non-interactive Agg backend into PNG files.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402

from mtl_jax.summary import Run  # noqa: E402
from mtl_jax.tasks import is_per_class  # noqa: E402

METRICS_FILE = "metrics.jsonl"
RESULTS_FILE = "results.json"
# The per-layer gradient conflict field of a train record (`mtl_jax.explain.conflict`).
CONFLICT_FIELD = "conflict_by_layer"


def read_training_log(workdir: str | Path) -> list[dict]:
    """The training-step records of `metrics.jsonl` (evaluation lines left out)."""
    path = Path(workdir) / METRICS_FILE
    if not path.exists():
        raise FileNotFoundError(f"no {METRICS_FILE} in {str(workdir)!r}")
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if isinstance(r.get("loss"), Mapping)]


def _series(records: Sequence[dict], key: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Steps and `{task: values}` of a per-task field present in the records."""
    records = [r for r in records if isinstance(r.get(key), Mapping)]
    steps = np.array([r["step"] for r in records])
    names = sorted(records[0][key]) if records else []
    return steps, {n: np.array([r[key][n] for r in records]) for n in names}


def _line_figure(steps, series, *, title, ylabel, log=False, path):
    fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
    for name, values in series.items():
        ax.plot(steps, values, label=name, linewidth=1.2)
    ax.set(title=title, xlabel="step", ylabel=ylabel)
    if log:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=max(1, len(series) // 8), loc="best")
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_run(workdir: str | Path, *, title: str = "") -> list[Path]:
    """Writes `loss_curves.png`, `task_weights.png`, (Gramian methods) `grad_cosine.png`,
    (once evaluated) `eval_curves.png`, (with `config.conflict_every_steps`)
    `conflict_by_layer.png` and (once finished) `confusion_<task>.png` for every
    classification task into `workdir`; returns the paths written."""
    workdir = Path(workdir)
    records = read_training_log(workdir)
    if not records:
        raise ValueError(f"{str(workdir / METRICS_FILE)!r} has no training records")
    label = f"{title}: " if title else ""
    written = []
    steps, losses = _series(records, "loss")
    positive = all(np.all(v > 0) for v in losses.values())
    path = workdir / "loss_curves.png"
    _line_figure(
        steps, losses, title=f"{label}training loss", ylabel="loss", log=positive, path=path
    )
    written.append(path)
    steps, weights = _series(records, "weights")
    if weights:
        path = workdir / "task_weights.png"
        _line_figure(steps, weights, title=f"{label}task weights", ylabel="weight", path=path)
        written.append(path)
    cosine_records = [r for r in records if "grad_cosine" in r]
    if cosine_records:
        names = sorted(cosine_records[0]["loss"])
        matrices = np.array([r["grad_cosine"] for r in cosine_records])
        cosine_steps = np.array([r["step"] for r in cosine_records])
        path = workdir / "grad_cosine.png"
        _cosine_figure(cosine_steps, matrices, names, title=label, path=path)
        written.append(path)
    conflict_records = [r for r in records if isinstance(r.get(CONFLICT_FIELD), Mapping)]
    if conflict_records:
        path = workdir / "conflict_by_layer.png"
        _conflict_figure(conflict_records, title=label, path=path)
        written.append(path)
    evals = read_evaluations(workdir)
    if evals:
        path = workdir / "eval_curves.png"
        _eval_figure(evals, title=f"{label}test metrics", path=path)
        written.append(path)
    results_path = workdir / RESULTS_FILE
    tables = json.loads(results_path.read_text()).get("tables", {}) if results_path.exists() else {}
    for task, task_tables in sorted(tables.items()):
        if "confusion_matrix" in task_tables:
            path = workdir / f"confusion_{task}.png"
            matrix = np.asarray(task_tables["confusion_matrix"])
            plot_confusion(matrix, (), path, title=f"{label}{task} (test)")
            written.append(path)
    return written


def read_evaluations(workdir: str | Path) -> list[dict]:
    """The evaluation records of `metrics.jsonl` (`{"step", "eval": {...}}`)."""
    path = Path(workdir) / METRICS_FILE
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if isinstance(r.get("eval"), Mapping)]


def _eval_figure(evals: Sequence[dict], *, title: str, path: Path) -> None:
    """One panel per task: its test metrics (loss left out) over the evaluation steps."""
    steps = np.array([r["step"] for r in evals])
    tasks = sorted({key.split("/", 1)[0] for key in evals[0]["eval"]})
    fig, axes = plt.subplots(
        1, len(tasks), figsize=(3.2 * len(tasks), 3.2), constrained_layout=True, squeeze=False
    )
    for ax, task in zip(axes[0], tasks, strict=True):
        keys = sorted(  # per-class metrics (`<task>/<metric>/<class>`) left out
            k
            for k in evals[0]["eval"]
            if k.startswith(f"{task}/") and k != f"{task}/loss" and not is_per_class(k)
        )
        for key in keys:
            ax.plot(steps, [r["eval"][key] for r in evals], marker=".", label=key.split("/", 1)[1])
        ax.set(title=task, xlabel="step")
        ax.grid(alpha=0.3)
        if keys:
            ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _cosine_figure(steps, matrices, names, *, title, path):
    """Pairwise cosines over steps; with many tasks, the time-averaged matrix instead."""
    num_tasks = len(names)
    pairs = [(i, j) for i in range(num_tasks) for j in range(i + 1, num_tasks)]
    if len(pairs) <= 15:
        fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
        for i, j in pairs:
            ax.plot(steps, matrices[:, i, j], label=f"{names[i]} · {names[j]}", linewidth=1.0)
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set(title=f"{title}gradient cosine", xlabel="step", ylabel="cos(g_i, g_j)")
        ax.set_ylim(-1.05, 1.05)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    else:
        fig, ax = plt.subplots(figsize=(7, 6), constrained_layout=True)
        image = ax.imshow(matrices.mean(axis=0), vmin=-1, vmax=1, cmap="RdBu_r")
        ax.set(title=f"{title}gradient cosine, mean over steps {steps[0]}–{steps[-1]}")
        ticks = np.arange(num_tasks)
        ax.set_xticks(ticks, names, rotation=90, fontsize=6)
        ax.set_yticks(ticks, names, fontsize=6)
        fig.colorbar(image, ax=ax)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _conflict_figure(records: Sequence[dict], *, title: str, path: Path) -> None:
    """Heat map of the per-layer gradient conflict: blocks (rows, in the records' order)
    × logged steps, the mean pairwise cosine on a diverging map centred at 0."""
    blocks = list(records[0][CONFLICT_FIELD])
    steps = [r["step"] for r in records]
    values = np.array([[r[CONFLICT_FIELD].get(b, np.nan) for r in records] for b in blocks])
    fig, ax = plt.subplots(
        figsize=(min(6 + 0.1 * len(steps), 14), 1.6 + 0.35 * len(blocks)),
        constrained_layout=True,
    )
    image = ax.imshow(
        values, aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest"
    )
    ax.set_yticks(np.arange(len(blocks)), blocks, fontsize=7)
    ticks = np.unique(np.linspace(0, len(steps) - 1, min(len(steps), 10)).round().astype(int))
    ax.set_xticks(ticks, [str(steps[i]) for i in ticks], fontsize=7)
    ax.set_title(f"{title}gradient conflict by layer (mean pairwise cosine)", fontsize=9)
    ax.set_xlabel("step")
    fig.colorbar(image, ax=ax, label="cos(g_i, g_j) in the layer")
    fig.savefig(path, dpi=120)
    plt.close(fig)


def pareto_front(points: np.ndarray) -> np.ndarray:
    """Mask of the points no other point beats on both coordinates (higher is better)."""
    points = np.asarray(points, float)
    dominated = np.array(
        [np.any(np.all(points >= p, axis=1) & np.any(points > p, axis=1)) for p in points]
    )
    return ~dominated


def plot_pareto(
    runs: Sequence[Run],
    x: str,
    y: str,
    directions: Mapping[str, int],
    path: str | Path,
    *,
    title: str = "",
) -> Path:
    """Scatter of metric `y` against `x` for every run (small dots) and every method's
    mean (large markers); methods on the Pareto front of the means are outlined."""
    for key in (x, y):
        if key not in directions:
            raise ValueError(f"unknown metric {key!r}; known: {sorted(directions)}")
    labels = sorted({r.label for r in runs})
    means = np.array(
        [
            [np.mean([r.metrics[key] for r in runs if r.label == label]) for key in (x, y)]
            for label in labels
        ]
    )
    front = pareto_front(means * np.array([directions[x], directions[y]]))
    fig, ax = plt.subplots(figsize=(7, 5.5), constrained_layout=True)
    colours = plt.cm.tab20(np.linspace(0, 1, max(len(labels), 2)))
    for index, label in enumerate(labels):
        mine = [r for r in runs if r.label == label]
        ax.scatter(
            [r.metrics[x] for r in mine],
            [r.metrics[y] for r in mine],
            s=14,
            color=colours[index],
            alpha=0.5,
        )
        ax.scatter(
            *means[index],
            s=90,
            color=colours[index],
            label=label,
            edgecolors="black" if front[index] else "none",
            linewidths=1.5,
        )
        ax.annotate(label, means[index], fontsize=7, xytext=(4, 4), textcoords="offset points")
    arrows = {1: "→ better", -1: "← better"}
    ax.set(
        xlabel=f"{x} ({arrows[directions[x]]})",
        ylabel=f"{y} ({'↑' if directions[y] > 0 else '↓'} better)",
        title=title or "final metrics per run; outlined: Pareto front of method means",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_confusion(
    matrix: np.ndarray, class_names: Sequence[str], path: str | Path, *, title: str = ""
) -> Path:
    """Writes a confusion matrix (row = true class, column = predicted) as a PNG.

    Colours are row-normalised (each true class's distribution over predictions, so
    rare classes are as visible as common ones); the counts are written in the cells
    when there are at most 20 classes. Returns `path`.

    Args:
      matrix: [C, C] counts, e.g. `Classification.confusion_matrix(stats)`.
      class_names: C tick labels (empty: the class indices).
      path: the PNG to write.
      title: the figure title.
    """
    matrix = np.asarray(matrix)
    num_classes = matrix.shape[0]
    if matrix.shape != (num_classes, num_classes):
        raise ValueError(f"confusion matrix must be square, got shape {matrix.shape}")
    names = list(class_names) or [str(c) for c in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class_names for a {num_classes}-class matrix")
    rows = matrix.sum(axis=1, keepdims=True)
    normalised = matrix / np.maximum(rows, 1)
    size = min(4 + 0.35 * num_classes, 16)
    fig, ax = plt.subplots(figsize=(size + 1, size), constrained_layout=True)
    image = ax.imshow(normalised, vmin=0, vmax=1, cmap="Blues")
    if num_classes <= 20:
        for i in range(num_classes):
            for j in range(num_classes):
                colour = "white" if normalised[i, j] > 0.5 else "black"
                ax.text(
                    j, i, f"{int(matrix[i, j])}", ha="center", va="center", fontsize=7, color=colour
                )
    ticks = np.arange(num_classes)
    fontsize = 8 if num_classes <= 20 else 5
    ax.set_xticks(ticks, names, rotation=90, fontsize=fontsize)
    ax.set_yticks(ticks, names, fontsize=fontsize)
    ax.set(xlabel="predicted class", ylabel="true class", title=title or "confusion matrix")
    fig.colorbar(image, ax=ax, label="fraction of the true class")
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
