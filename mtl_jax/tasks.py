"""Tasks: what a head predicts, its per-element loss, and its metrics.

A task is a small frozen record. The trainer only uses four things from it:

* `output_shape` / `dense`: what the head must produce per example;
* `loss(pred, target, valid) -> (values, mask)`: per-element losses and validity, which
  the trainer reduces with `losses.masked_mean` (the one reduction);
* `metric_stats(pred, target, valid) -> {name: array}`: additive sufficient statistics
  (counts, confusion entries) of one batch, summed over batches and devices;
* `compute_metrics(stats) -> {metric: float}`: the split-level metrics from the sums.

Metrics are computed from statistics accumulated over the whole split, never as a mean
of per-batch values, so that e.g. F1 and ODS-F are the dataset-level quantities.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from mtl_jax import losses

Array = jax.Array


def _f1(tp, fp, fn):
    """F1 = 2tp / (2tp + fp + fn), defined as 0 when there is nothing to score."""
    denominator = 2 * tp + fp + fn
    return np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1e-12), 0.0)


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
        raise NotImplementedError

    def metric_stats(self, pred: Array, target: Array, valid: Array) -> dict[str, Array]:
        raise NotImplementedError

    def compute_metrics(self, stats: dict[str, np.ndarray]) -> dict[str, float]:
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
    Metrics: `accuracy`.
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

    def check_targets(self, target):
        super().check_targets(target)
        bad = (target != self.ignore_label) & ((target < 0) | (target >= self.num_classes))
        if np.any(bad):
            raise ValueError(
                f"task {self.name!r}: labels {sorted(set(np.asarray(target)[bad].tolist()))[:5]} "
                f"are outside [0, {self.num_classes}) and are not the ignore label "
                f"{self.ignore_label}"
            )


@dataclasses.dataclass(frozen=True)
class BinaryLabels(Task):
    """Binary or multi-label prediction with per-label sigmoid BCE.

    Targets are `[num_labels]` in {0, 1}. Metrics: `accuracy` (over all labels) and `f1`
    (mean over labels of each label's split-level F1; a label never present and never
    predicted scores 0).
    """

    num_labels: int = 1

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
        return {
            "accuracy": float(stats["correct"] / max(stats["count"], 1)),
            "f1": float(np.mean(_f1(stats["tp"], stats["fp"], stats["fn"]))),
        }


# Thresholds at which ODS-F is searched (probabilities 0.01 ... 0.99).
_EDGE_THRESHOLDS = np.linspace(0.01, 0.99, 99, dtype=np.float32)


@dataclasses.dataclass(frozen=True)
class Boundary(Task):
    """Boundary / edge detection: a per-pixel edge probability map.

    Loss: class-balanced per-pixel BCE (HED, Xie & Tu 2015). Targets are `[H, W]` maps
    in {0, 1}. Metrics, from counts accumulated over the whole split:
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

    def check_targets(self, target):
        super().check_targets(target)
        if np.any((target != 0) & (target != 1)):
            raise ValueError(f"task {self.name!r}: boundary targets must be 0 or 1")
