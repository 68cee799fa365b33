"""Tasks: what a head predicts, its per-element loss, and its metrics.

A task is a small frozen record. The trainer only uses these things from it:

* `output_shape` / `dense`: what the head must produce per example;
* `loss(pred, target, valid) -> (values, mask)`: per-element losses and validity, which
  the trainer reduces with `losses.masked_mean` (the one reduction);
* `metric_stats(pred, target, valid) -> {name: array}`: additive sufficient statistics
  (counts, confusion entries, histograms) of one batch, summed over batches and devices;
* `compute_metrics(stats) -> {metric: float}`: the split-level metrics from the sums;
* `metric_directions() -> {metric: +1 | -1}`: +1 where higher is better (used by Δm);
* `check_targets(target)`: host-side validation of a split's targets.

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
    >>> task.compute_metrics(task.metric_stats(logits, labels, valid))
    {'accuracy': 0.5}
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from mtl_jax import losses

Array = jax.Array

HIGHER_IS_BETTER = 1
LOWER_IS_BETTER = -1


def _f1(tp, fp, fn):
    """F1 = 2tp / (2tp + fp + fn), defined as 0 when there is nothing to score."""
    denominator = 2 * tp + fp + fn
    return np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1e-12), 0.0)


def _check_labels(name: str, target: np.ndarray, num_classes: int, ignore_label: int) -> None:
    """Raises ValueError if a label is outside `[0, num_classes)` and not `ignore_label`."""
    target = np.asarray(target)
    bad = (target != ignore_label) & ((target < 0) | (target >= num_classes))
    if np.any(bad):
        values = np.unique(target[bad])
        raise ValueError(
            f"task {name!r}: {int(bad.sum())} labels with values {values[:5].tolist()} are "
            f"outside [0, {num_classes}) and are not the ignore label {ignore_label}"
        )


def _check_finite(name: str, target: np.ndarray, *, non_negative: bool = False) -> None:
    """Raises ValueError if `target` has non-finite (or, optionally, negative) entries."""
    target = np.asarray(target)
    bad = ~np.isfinite(target)
    if non_negative:
        bad |= target < 0
    if np.any(bad):
        raise ValueError(
            f"task {name!r}: {int(bad.sum())} target values are "
            f"{'negative or not finite' if non_negative else 'not finite'}, e.g. "
            f"{np.unique(target[bad])[:5].tolist()}"
        )


@dataclasses.dataclass(frozen=True)
class Task:
    """Base record; see the module docstring for the protocol."""

    name: str

    # Whether the prediction is a per-pixel map (dense head) or a vector.
    dense: ClassVar[bool] = False

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Shape of one example's prediction (without the batch axis)."""
        raise NotImplementedError

    @property
    def target_shape(self) -> tuple[int, ...]:
        """Shape of one example's target (without the batch axis)."""
        raise NotImplementedError

    def loss(self, pred: Array, target: Array, valid: Array) -> tuple[Array, Array]:
        """Per-element losses and their validity mask (same shape), for `masked_mean`.

        Args:
          pred: [B, *output_shape] head output.
          target: [B, *target_shape].
          valid: [B] bool; false marks padding examples.
        """
        raise NotImplementedError

    def metric_stats(self, pred: Array, target: Array, valid: Array) -> dict[str, Array]:
        """Additive statistics of one batch (arguments as in `loss`)."""
        raise NotImplementedError

    def compute_metrics(self, stats: dict[str, np.ndarray]) -> dict[str, float]:
        """Split-level metrics from `metric_stats` summed over every batch of the split."""
        raise NotImplementedError

    def metric_directions(self) -> dict[str, int]:
        """`{metric: +1 if higher is better else -1}` for every key of `compute_metrics`."""
        raise NotImplementedError

    def check_targets(self, target: np.ndarray) -> None:
        """Raises ValueError naming the task if `target` ([B, ...]) does not fit the task."""
        if tuple(target.shape[1:]) != self.target_shape:
            raise ValueError(
                f"task {self.name!r}: targets have per-example shape {tuple(target.shape[1:])}, "
                f"expected {self.target_shape}"
            )


@dataclasses.dataclass(frozen=True)
class Classification(Task):
    """Multi-class classification with softmax cross-entropy.

    Targets are integer labels in `[0, num_classes)`; `ignore_label` marks examples that
    carry no label for this task (they get no loss and no metric).
    Metrics: `accuracy` (fraction).
    """

    num_classes: int = 10
    ignore_label: int = -1

    @property
    def output_shape(self):
        return (self.num_classes,)

    @property
    def target_shape(self):
        return ()

    def _mask(self, target, valid):
        return (target != self.ignore_label) & valid

    def loss(self, pred, target, valid):
        return losses.softmax_cross_entropy(pred, target), self._mask(target, valid)

    def metric_stats(self, pred, target, valid):
        mask = self._mask(target, valid)
        correct = (jnp.argmax(pred, axis=-1) == target) & mask
        return {"correct": jnp.sum(correct), "count": jnp.sum(mask)}

    def compute_metrics(self, stats):
        return {"accuracy": float(stats["correct"] / max(stats["count"], 1))}

    def metric_directions(self):
        return {"accuracy": HIGHER_IS_BETTER}

    def check_targets(self, target):
        super().check_targets(target)
        _check_labels(self.name, target, self.num_classes, self.ignore_label)


@dataclasses.dataclass(frozen=True)
class BinaryLabels(Task):
    """Binary or multi-label prediction with per-label sigmoid BCE.

    Targets are `[num_labels]` in {0, 1}. Metrics (fractions): `accuracy` (over all
    labels), `f1` (mean over labels of each label's split-level F1; a label never present
    and never predicted scores 0) and, when `label_names` is given, `f1_<label>` for every
    label — the per-attribute F1 that CelebA results report.
    """

    num_labels: int = 1
    label_names: tuple[str, ...] = ()

    def __post_init__(self):
        if self.label_names and len(self.label_names) != self.num_labels:
            raise ValueError(
                f"task {self.name!r}: {len(self.label_names)} label_names for "
                f"num_labels={self.num_labels}"
            )

    @property
    def output_shape(self):
        return (self.num_labels,)

    @property
    def target_shape(self):
        return (self.num_labels,)

    def loss(self, pred, target, valid):
        return losses.sigmoid_binary_cross_entropy(pred, target), valid[:, None]

    def metric_stats(self, pred, target, valid):
        predicted = pred > 0
        truth = target > 0.5
        v = valid[:, None]
        return {
            "tp": jnp.sum(predicted & truth & v, axis=0),
            "fp": jnp.sum(predicted & ~truth & v, axis=0),
            "fn": jnp.sum(~predicted & truth & v, axis=0),
            "correct": jnp.sum((predicted == truth) & v),
            "count": jnp.sum(v) * self.num_labels,
        }

    def compute_metrics(self, stats):
        f1 = _f1(stats["tp"], stats["fp"], stats["fn"])
        metrics = {
            "accuracy": float(stats["correct"] / max(stats["count"], 1)),
            "f1": float(np.mean(f1)),
        }
        for label, value in zip(self.label_names, f1, strict=False):
            metrics[f"f1_{label}"] = float(value)
        return metrics

    def metric_directions(self):
        names = ["accuracy", "f1", *(f"f1_{label}" for label in self.label_names)]
        return dict.fromkeys(names, HIGHER_IS_BETTER)

    def check_targets(self, target):
        super().check_targets(target)
        bad = (target != 0) & (target != 1)
        if np.any(bad):
            raise ValueError(
                f"task {self.name!r}: {int(bad.sum())} targets are not 0 or 1, e.g. "
                f"{np.unique(np.asarray(target)[bad])[:5].tolist()}"
            )


# Thresholds at which ODS-F is searched (probabilities 0.01 ... 0.99).
_EDGE_THRESHOLDS = np.linspace(0.01, 0.99, 99, dtype=np.float32)


@dataclasses.dataclass(frozen=True)
class Boundary(Task):
    """Boundary / edge detection: a per-pixel edge probability map.

    Loss: class-balanced per-pixel BCE (HED, Xie & Tu 2015). Targets are `[H, W]` maps
    in {0, 1}. Metrics (fractions), from counts accumulated over the whole split:
    `f1` (per-pixel F1 at probability 0.5) and `ods_f` (the best F1 over 99 thresholds
    shared by the whole split, i.e. ODS-F). Pixels are matched exactly, without the
    localisation tolerance of the BSDS benchmark.
    """

    height: int = 28
    width: int = 28

    dense: ClassVar[bool] = True

    @property
    def output_shape(self):
        return (self.height, self.width, 1)

    @property
    def target_shape(self):
        return (self.height, self.width)

    def loss(self, pred, target, valid):
        mask = jnp.broadcast_to(valid[:, None, None], target.shape)
        return losses.class_balanced_bce(pred[..., 0], target, mask), mask

    def metric_stats(self, pred, target, valid):
        prob = jax.nn.sigmoid(pred[..., 0].astype(jnp.float32))
        truth = (target > 0)[None] & valid[None, :, None, None]
        valid_px = valid[None, :, None, None]
        thresholds = jnp.asarray(_EDGE_THRESHOLDS)[:, None, None, None]
        predicted = (prob[None] >= thresholds) & valid_px
        axes = (1, 2, 3)
        return {
            "tp": jnp.sum(predicted & truth, axis=axes),
            "fp": jnp.sum(predicted & ~truth, axis=axes),
            "fn": jnp.sum(~predicted & truth, axis=axes),
        }

    def compute_metrics(self, stats):
        f1 = _f1(stats["tp"], stats["fp"], stats["fn"])
        at_half = int(np.argmin(np.abs(_EDGE_THRESHOLDS - 0.5)))
        return {"f1": float(f1[at_half]), "ods_f": float(np.max(f1))}

    def metric_directions(self):
        return {"f1": HIGHER_IS_BETTER, "ods_f": HIGHER_IS_BETTER}

    def check_targets(self, target):
        super().check_targets(target)
        bad = (target != 0) & (target != 1)
        if np.any(bad):
            raise ValueError(
                f"task {self.name!r}: {int(bad.sum())} boundary targets are not 0 or 1, e.g. "
                f"{np.unique(np.asarray(target)[bad])[:5].tolist()}"
            )


@dataclasses.dataclass(frozen=True)
class PixelMapTask(Task):
    """Base of per-pixel tasks on `height` × `width` maps: targets and predictions are
    `[height, width, channels]` unless a task says otherwise."""

    height: int = dataclasses.field(kw_only=True)
    width: int = dataclasses.field(kw_only=True)

    dense: ClassVar[bool] = True
    channels: ClassVar[int] = 1

    @property
    def output_shape(self):
        return (self.height, self.width, self.channels)

    @property
    def target_shape(self):
        return (self.height, self.width, self.channels)


@dataclasses.dataclass(frozen=True)
class Segmentation(PixelMapTask):
    """Semantic segmentation: per-pixel softmax cross-entropy, ignoring `ignore_label`.

    Prediction `[H, W, num_classes]` logits; target `[H, W]` integer labels in
    `[0, num_classes)` or `ignore_label`. The loss is MTAN's (Liu et al. CVPR 2019):
    cross-entropy averaged over the labelled pixels.

    Metrics (percent), from a `num_classes × num_classes` confusion matrix accumulated
    over every labelled pixel of the split:
    `pixel_accuracy = 100 · trace / total` and `miou = 100 · mean_c IoU_c`, with
    `IoU_c = tp_c / (tp_c + fp_c + fn_c)`. Classes absent from both the predictions and
    the truth of the whole split (`tp + fp + fn = 0`) have no IoU and are left out of the
    mean (MTAN's `ConfMatrix` would return NaN instead). With no labelled pixel at all
    both metrics are 0.
    """

    num_classes: int
    ignore_label: int = -1

    @property
    def output_shape(self):
        return (self.height, self.width, self.num_classes)

    @property
    def target_shape(self):
        return (self.height, self.width)

    def _mask(self, target, valid):
        return (target != self.ignore_label) & valid[:, None, None]

    def loss(self, pred, target, valid):
        return losses.softmax_cross_entropy(pred, target), self._mask(target, valid)

    def metric_stats(self, pred, target, valid):
        n = self.num_classes
        mask = self._mask(target, valid)
        predicted = jnp.argmax(pred, axis=-1)
        # Row = true class, column = predicted class; masked pixels add 0 to cell (0, 0).
        cell = jnp.where(mask, jnp.clip(target, 0, n - 1) * n + predicted, 0)
        confusion = jnp.bincount(cell.ravel(), weights=mask.ravel().astype(jnp.int32), length=n * n)
        return {"confusion": confusion.reshape(n, n).astype(jnp.int32)}

    def compute_metrics(self, stats):
        confusion = np.asarray(stats["confusion"], np.float64)
        total = confusion.sum()
        if total == 0:
            return {"miou": 0.0, "pixel_accuracy": 0.0}
        tp = np.diag(confusion)
        union = confusion.sum(0) + confusion.sum(1) - tp
        present = union > 0
        return {
            "miou": float(100.0 * np.mean(tp[present] / union[present])),
            "pixel_accuracy": float(100.0 * tp.sum() / total),
        }

    def metric_directions(self):
        return {"miou": HIGHER_IS_BETTER, "pixel_accuracy": HIGHER_IS_BETTER}

    def check_targets(self, target):
        super().check_targets(target)
        _check_labels(self.name, target, self.num_classes, self.ignore_label)


@dataclasses.dataclass(frozen=True)
class Depth(PixelMapTask):
    """Depth (or disparity) regression: L1 over valid pixels.

    Prediction and target `[H, W, 1]`; a pixel is valid where the target is nonzero
    (MTAN's convention: zero depth marks missing measurements). The loss is the mean
    `|pred − target|` over valid pixels (MTAN, Liu et al. CVPR 2019).

    Metrics, over every valid pixel of the split (MTAN's code averages per-batch means
    instead): `abs_err = mean |pred − target|` and `rel_err = mean |pred − target| /
    target`, both in the target's own units (not percent).
    """

    channels: ClassVar[int] = 1

    def _mask(self, target, valid):
        return (target != 0) & valid[:, None, None, None]

    def loss(self, pred, target, valid):
        return jnp.abs(pred.astype(jnp.float32) - target), self._mask(target, valid)

    def metric_stats(self, pred, target, valid):
        mask = self._mask(target, valid)
        target = target.astype(jnp.float32)
        error = jnp.abs(pred.astype(jnp.float32) - target)
        relative = error / jnp.where(mask, jnp.abs(target), 1.0)
        return {
            "abs_sum": jnp.sum(jnp.where(mask, error, 0.0)),
            "rel_sum": jnp.sum(jnp.where(mask, relative, 0.0)),
            "count": jnp.sum(mask),
        }

    def compute_metrics(self, stats):
        count = max(stats["count"], 1)
        return {
            "abs_err": float(stats["abs_sum"] / count),
            "rel_err": float(stats["rel_sum"] / count),
        }

    def metric_directions(self):
        return {"abs_err": LOWER_IS_BETTER, "rel_err": LOWER_IS_BETTER}

    def check_targets(self, target):
        super().check_targets(target)
        _check_finite(self.name, target, non_negative=True)


# Normal angles are histogrammed in bins of this many degrees over [0°, 180°]; the median
# is the centre of the bin holding the middle rank, so it is exact to within half a bin.
ANGLE_BIN_DEG = 0.01
_ANGLE_BINS = int(round(180.0 / ANGLE_BIN_DEG))
_ANGLE_THRESHOLDS = (11.25, 22.5, 30.0)
# Squared norms below this count as a zero vector (no direction).
_TINY = 1e-24


def normalize(x: Array, axis: int = -1) -> Array:
    """`x / ‖x‖₂` along `axis`; a zero vector stays zero (no NaN, finite gradient)."""
    squared = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
    return x * jax.lax.rsqrt(jnp.maximum(squared, _TINY))


@dataclasses.dataclass(frozen=True)
class SurfaceNormal(PixelMapTask):
    """Surface-normal estimation: cosine loss between the unit prediction and the target.

    Prediction and target `[H, W, 3]`; a pixel is valid where the target is not all zero
    (MTAN and LibMTL test `Σ_c target_c ≠ 0`; the two differ only on targets whose
    components sum to exactly zero). With `p = pred / ‖pred‖₂` per pixel, the loss is
    `1 − Σ_c p_c · target_c`, averaged over valid pixels (MTAN, Liu et al. CVPR 2019;
    with every pixel valid this is workload W2's `1 − mean Σ_c p·target`).

    Metrics over every valid pixel of the split, from the angle between `pred` and
    `target` in degrees: `mean_angle`, `median_angle`, and the percentages of pixels with
    angle below 11.25°, 22.5° and 30° (`within_11.25`, `within_22.5`, `within_30`).
    The angle is `atan2(‖p × t‖, p · t)`, which equals MTAN's `acos(p · t)` for unit
    targets but stays accurate near 0°; a zero prediction counts as 90°. The median
    comes from a histogram of the split's angles in `ANGLE_BIN_DEG` = 0.01° bins: the
    centre of the bin holding the middle rank (the mean of the two middle ranks' bin
    centres for an even count), so it is within 0.005° of the exact median. The mean
    and the threshold percentages are exact.
    """

    channels: ClassVar[int] = 3

    def _mask(self, target, valid):
        return jnp.any(target != 0, axis=-1) & valid[:, None, None]

    def loss(self, pred, target, valid):
        cosine = jnp.sum(normalize(pred.astype(jnp.float32)) * target, axis=-1)
        return 1.0 - cosine, self._mask(target, valid)

    def angles(self, pred: Array, target: Array) -> Array:
        """Per-pixel angle in degrees [B, H, W] between `pred` and `target` [B, H, W, 3]."""
        p = normalize(pred.astype(jnp.float32))
        t = target.astype(jnp.float32)
        cross = jnp.linalg.norm(jnp.cross(p, t), axis=-1)
        angle = jnp.degrees(jnp.arctan2(cross, jnp.sum(p * t, axis=-1)))
        has_direction = jnp.sum(jnp.square(pred.astype(jnp.float32)), axis=-1) >= _TINY
        return jnp.where(has_direction, angle, 90.0)

    def metric_stats(self, pred, target, valid):
        mask = self._mask(target, valid)
        angle = self.angles(pred, target)
        bins = jnp.clip((angle / ANGLE_BIN_DEG).astype(jnp.int32), 0, _ANGLE_BINS - 1)
        histogram = jnp.bincount(
            jnp.where(mask, bins, 0).ravel(),
            weights=mask.ravel().astype(jnp.int32),
            length=_ANGLE_BINS,
        )
        stats = {
            "angle_sum": jnp.sum(jnp.where(mask, angle, 0.0)),
            "histogram": histogram.astype(jnp.int32),
            "count": jnp.sum(mask),
        }
        for threshold in _ANGLE_THRESHOLDS:
            stats[f"within_{threshold:g}"] = jnp.sum(mask & (angle < threshold))
        return stats

    def compute_metrics(self, stats):
        count = int(stats["count"])
        metrics = {
            "mean_angle": float(stats["angle_sum"] / max(count, 1)),
            "median_angle": _histogram_median(np.asarray(stats["histogram"])),
        }
        for threshold in _ANGLE_THRESHOLDS:
            key = f"within_{threshold:g}"
            metrics[key] = float(100.0 * stats[key] / max(count, 1))
        return metrics

    def metric_directions(self):
        directions = {"mean_angle": LOWER_IS_BETTER, "median_angle": LOWER_IS_BETTER}
        directions.update({f"within_{t:g}": HIGHER_IS_BETTER for t in _ANGLE_THRESHOLDS})
        return directions

    def check_targets(self, target):
        super().check_targets(target)
        _check_finite(self.name, target)


def _histogram_median(histogram: np.ndarray) -> float:
    """Median (degrees) of the angles counted in `histogram` (`ANGLE_BIN_DEG` bins); 0 if empty."""
    cumulative = np.cumsum(histogram)
    count = int(cumulative[-1]) if len(cumulative) else 0
    if count == 0:
        return 0.0
    # 0-based ranks of the two middle values (equal for an odd count).
    ranks = np.asarray([(count - 1) // 2, count // 2])
    bins = np.searchsorted(cumulative, ranks, side="right")
    return float(np.mean(bins + 0.5) * ANGLE_BIN_DEG)
