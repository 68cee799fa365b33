"""`explain_run(workdir)`: per-task saliency maps of a finished run, as one figure and JSON.

For the first `examples` images of the run's test split (always the same ones), every
task's gradient × input, integrated gradients and Grad-CAM maps (`saliency`), written to
the run's workdir:

* `saliency.png`: one row per example; columns: the image, then for each task its three
  maps (|attribution| summed over channels; Grad-CAM upsampled bilinearly to the image
  size), each map scaled to its own maximum;
* `saliency.json`: what was explained (the examples, each task's scalar, the Grad-CAM
  layer, the integrated-gradients steps, rule and baseline, its completeness error) and,
  per method, the attribution overlap of every task pair: the cosine per image of the
  two tasks' maps (|attribution| summed over channels, flattened; Grad-CAM at its own
  resolution), with its mean and std over the images — where the tasks look at the same
  pixels (near 1) and where they look at different ones (near 0).

An existing `saliency.png` or `saliency.json` is never replaced unless `overwrite=True`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from mtl_jax import data
from mtl_jax import workdir as wd
from mtl_jax.explain.saliency import (
    METHODS,
    TaskSaliency,
    describe_scalar,
    magnitude,
    overlap,
    task_saliency,
)

SALIENCY_PNG = "saliency.png"
SALIENCY_JSON = "saliency.json"

# Column titles of the methods in the figure.
SHORT_NAMES = {
    "gradient_x_input": "grad × input",
    "integrated_gradients": "integr. grads",
    "grad_cam": "Grad-CAM",
}


def _check_outputs(workdir: Path, overwrite: bool) -> None:
    existing = [name for name in (SALIENCY_PNG, SALIENCY_JSON) if (workdir / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{str(workdir)!r} already holds {existing}; nothing was written: pass "
            "--overwrite (overwrite=True) to replace them"
        )


def explain_run(
    workdir: str | Path,
    *,
    examples: int = 8,
    steps: int = 256,
    rule: str = "midpoint",
    tasks: Sequence[str] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Writes `saliency.png` and `saliency.json` for the finished run in `workdir`.

    Args:
      workdir: the run's workdir (`load_run`).
      examples: how many test images, the first ones of the split (fewer if it is
        smaller).
      steps: intervals of integrated gradients (`saliency.integrated_gradients`).
      rule: its Riemann rule, `"midpoint"` or `"trapezoid"`.
      tasks: the tasks explained (default: all).
      overwrite: replace an existing `saliency.png` / `saliency.json`.

    Returns:
      The contents written to `saliency.json`.

    Raises:
      FileExistsError: the outputs exist and `overwrite` is false (checked first).
      FileNotFoundError: no finished run in `workdir`, or its dataset is not there.
      ValueError: invalid `examples`, `steps`, `rule` or task names, or a trunk without a
        spatial feature map.
    """
    from mtl_jax.experiment.loading import load_run
    from mtl_jax.experiment.run_data import load_data

    workdir = Path(workdir)
    _check_outputs(workdir, overwrite)
    if int(examples) != examples or examples < 1:
        raise ValueError(f"examples must be a positive integer, got {examples!r}")
    run = load_run(workdir)
    exp = run.experiment
    names = list(exp.task_names if tasks is None else tasks)
    _, splits, _ = load_data(run.config, exp, ("test",))
    test = splits["test"]
    count = min(int(examples), len(test["image"]))
    images = data.to_batch({"image": test["image"][:count]}, [])["image"]  # scaled to [0, 1]
    result = task_saliency(
        run.model, exp.tasks, run.variables, images, names=names, steps=steps, rule=rule
    )
    summary = summarize(result, exp.tasks, steps=steps, rule=rule, count=count)
    _check_outputs(workdir, overwrite)  # again: the maps took a while
    saliency_figure(images, result, workdir / SALIENCY_PNG, title=str(workdir.name))
    wd.atomic_write(workdir / SALIENCY_JSON, json.dumps(summary, indent=2).encode())
    return summary


def summarize(result: TaskSaliency, tasks, *, steps: int, rule: str, count: int) -> dict[str, Any]:
    """The `saliency.json` contents of `result` (see the module docstring)."""
    names = list(result.scalars)
    return {
        "split": "test",
        "examples": list(range(count)),
        "tasks": names,
        "methods": list(METHODS),
        "explained": {name: describe_scalar(tasks[name]) for name in names},
        "grad_cam": {"layer": result.layer.name, "feature_shape": list(result.layer.shape[1:])},
        "integrated_gradients": {
            "steps": steps,
            "rule": rule,
            "baseline": "black image (all zeros)",
            "completeness": result.completeness(),
        },
        "map": "|attribution| summed over channels, flattened; Grad-CAM at its own resolution",
        "overlap": {method: overlap(result.maps[method]) for method in METHODS},
    }


def _display(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    """An [H, W, C] image as matplotlib shows it: grey for one channel, RGB for three."""
    image = np.clip(np.asarray(image, np.float32), 0.0, 1.0)
    if image.shape[-1] == 3:
        return image, None
    return image[..., 0], "gray"


def saliency_figure(
    images: np.ndarray, result: TaskSaliency, path: str | Path, *, title: str = ""
) -> Path:
    """Draws the grid of `saliency.png` (module docstring) into `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = np.asarray(images)
    rows, height, width = images.shape[0], images.shape[1], images.shape[2]
    names = list(result.scalars)
    columns = [(name, method) for name in names for method in METHODS]
    panels = {}
    for name, method in columns:
        maps = magnitude(result.maps[method][name])
        if maps.shape[1:] != (height, width):  # Grad-CAM: upsampled for display only
            maps = np.asarray(jax.image.resize(maps, (rows, height, width), "bilinear"))
        peak = maps.reshape(rows, -1).max(axis=1)
        panels[name, method] = maps / np.where(peak > 0, peak, 1.0)[:, None, None]
    size = 1.3
    fig, axes = plt.subplots(
        rows,
        1 + len(columns),
        figsize=(size * (1 + len(columns)), size * rows + 0.9),
        squeeze=False,
        constrained_layout=True,
    )
    for row in range(rows):
        picture, cmap = _display(images[row])
        axes[row, 0].imshow(picture, cmap=cmap, vmin=0, vmax=1)
        axes[row, 0].set_ylabel(f"test #{row}", fontsize=8)
        for col, key in enumerate(columns, start=1):
            axes[row, col].imshow(panels[key][row], cmap="magma", vmin=0, vmax=1)
    axes[0, 0].set_title("image", fontsize=8)
    for col, (name, method) in enumerate(columns, start=1):
        axes[0, col].set_title(f"{name}\n{SHORT_NAMES[method]}", fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    heading = f"{title}: " if title else ""
    fig.suptitle(
        f"{heading}per-task saliency (|attribution| per pixel, each map scaled to its max; "
        f"Grad-CAM on {result.layer.name})",
        fontsize=9,
    )
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def format_overlap(summary: dict[str, Any]) -> str:
    """A table of the mean ± std overlap of every task pair, per method."""
    lines = [f"{'method':<22} {'tasks':<28} cosine (mean ± std over images)"]
    for method, table in summary["overlap"].items():
        for a, row in table.items():
            for b, cell in row.items():
                if cell["mean"] is None:
                    value = "undefined (a map is zero)"
                else:
                    value = f"{cell['mean']:.3f} ± {cell['std']:.3f}  (n={cell['images']})"
                lines.append(f"{method:<22} {a + ' · ' + b:<28} {value}")
    return "\n".join(lines)
