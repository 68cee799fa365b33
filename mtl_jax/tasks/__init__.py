"""Tasks: what a head predicts, its per-element loss, and its metrics.

A task is a small frozen record. The trainer only uses these things from it:

* `output_shape` / `dense`: what the head must produce per example;
* `loss(pred, target, valid) -> (values, mask)`: per-element losses and validity, which
  the trainer reduces with `losses.masked_mean` (the one reduction);
* `metric_stats(pred, target, valid) -> {name: array}`: additive sufficient statistics
  (counts, confusion entries, histograms) of one batch, summed over batches and devices;
* `compute_metrics(stats) -> {metric: float}`: the split-level metrics from the sums;
* `metric_directions() -> {metric: +1 | -1}`: +1 where higher is better (used by Δm);
* `headline_metrics()`: the metrics sweep tables, ranks and Δm compare (default: all);
* `compute_tables(stats) -> {name: array}`: split-level tables saved with the final
  evaluation (a classification task's confusion matrix; none by default);
* `check_targets(target)`: host-side validation of a split's targets.

Per-class metrics are keyed `<metric>/<class>` (`recall/7`); tables and consoles
summarise without them, results.json and metrics.jsonl keep them.

Metrics are computed from statistics accumulated over the whole split, never as a mean
of per-batch values, so that e.g. F1, mIoU and the median normal angle are the
dataset-level quantities.

Units follow the published tables of each benchmark: segmentation and normal-threshold
metrics in percent, angles in degrees, depth errors as plain ratios/distances, while
`Classification`, `BinaryLabels` and `Boundary` report fractions in [0, 1].

Examples:
    >>> import jax.numpy as jnp
    >>> from mtl_jax.losses import masked_mean
    >>> from mtl_jax.tasks import Classification
    >>> task = Classification("digit", num_classes=3)
    >>> logits = jnp.array([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0]])
    >>> labels = jnp.array([0, 2, -1])  # -1: the ignore label, no loss and no metric
    >>> valid = jnp.array([True, True, True])
    >>> values, mask = task.loss(logits, labels, valid)
    >>> mask.tolist()
    [True, True, False]
    >>> round(float(masked_mean(values, mask)), 4)  # the trainer's one reduction
    1.2395
    >>> metrics = task.compute_metrics(task.metric_stats(logits, labels, valid))
    >>> {k: round(metrics[k], 4) for k in ("accuracy", "balanced_accuracy", "macro_f1")}
    {'accuracy': 0.5, 'balanced_accuracy': 0.5, 'macro_f1': 0.3333}
"""

from mtl_jax.tasks.base import HIGHER_IS_BETTER, LOWER_IS_BETTER, Task, is_per_class
from mtl_jax.tasks.boundary import Boundary
from mtl_jax.tasks.classification import BinaryLabels, Classification
from mtl_jax.tasks.dense import (
    ANGLE_BIN_DEG,
    Depth,
    PixelMapTask,
    Segmentation,
    SurfaceNormal,
    normalize,
)

__all__ = [
    "ANGLE_BIN_DEG",
    "HIGHER_IS_BETTER",
    "LOWER_IS_BETTER",
    "BinaryLabels",
    "Boundary",
    "Classification",
    "Depth",
    "PixelMapTask",
    "Segmentation",
    "SurfaceNormal",
    "Task",
    "is_per_class",
    "normalize",
]
