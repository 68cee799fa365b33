"""Vector tasks: multi-class classification and binary / multi-label prediction."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from mtl_jax import losses
from mtl_jax.tasks.base import HIGHER_IS_BETTER, Task, check_labels, f1_score


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
        check_labels(self.name, target, self.num_classes, self.ignore_label)


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
        f1 = f1_score(stats["tp"], stats["fp"], stats["fn"])
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
