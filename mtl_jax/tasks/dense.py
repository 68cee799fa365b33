"""Dense per-pixel tasks: semantic segmentation, depth and surface normals."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from mtl_jax import losses
from mtl_jax.tasks.base import (
    HIGHER_IS_BETTER,
    LOWER_IS_BETTER,
    Array,
    Task,
    check_finite,
    check_labels,
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
        check_labels(self.name, target, self.num_classes, self.ignore_label)


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
        check_finite(self.name, target, non_negative=True)


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
        check_finite(self.name, target)


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
