"""The task protocol (`Task`), metric directions and the checks tasks share."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import numpy as np

Array = jax.Array

HIGHER_IS_BETTER = 1
LOWER_IS_BETTER = -1


def ratio(numerator, denominator):
    """`numerator / denominator` element-wise in float64, 0 where the denominator is 0
    (scikit-learn's `zero_division=0`)."""
    numerator = np.asarray(numerator, np.float64)
    denominator = np.asarray(denominator, np.float64)
    return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), 0.0)


def f1_score(tp, fp, fn):
    """F1 = 2tp / (2tp + fp + fn), defined as 0 when there is nothing to score."""
    tp = np.asarray(tp)
    return ratio(2 * tp, 2 * tp + fp + fn)


def is_per_class(key: str) -> bool:
    """Whether a `"<task>/<metric>"` results key is a per-class (or per-label) metric,
    `"<task>/<metric>/<class>"`: results.json keeps those, tables and consoles leave
    them out."""
    return key.count("/") > 1


def check_binary(name: str, target: np.ndarray, what: str = "targets") -> None:
    """Raises ValueError naming the task if `target` has entries other than 0 and 1."""
    target = np.asarray(target)
    bad = (target != 0) & (target != 1)
    if np.any(bad):
        raise ValueError(
            f"task {name!r}: {int(bad.sum())} {what} are not 0 or 1, e.g. "
            f"{np.unique(target[bad])[:5].tolist()}"
        )


def check_labels(name: str, target: np.ndarray, num_classes: int, ignore_label: int) -> None:
    """Raises ValueError if a label is outside `[0, num_classes)` and not `ignore_label`."""
    target = np.asarray(target)
    bad = (target != ignore_label) & ((target < 0) | (target >= num_classes))
    if np.any(bad):
        values = np.unique(target[bad])
        raise ValueError(
            f"task {name!r}: {int(bad.sum())} labels with values {values[:5].tolist()} are "
            f"outside [0, {num_classes}) and are not the ignore label {ignore_label}"
        )


def check_finite(name: str, target: np.ndarray, *, non_negative: bool = False) -> None:
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

    def headline_metrics(self) -> tuple[str, ...]:
        """The metrics that sweep tables, ranks and Δm% compare (`metrics.metric_directions`):
        the task's published protocol; every metric unless a task says otherwise."""
        return tuple(self.metric_directions())

    def compute_tables(self, stats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Split-level tables (e.g. a confusion matrix) from the same sums as
        `compute_metrics`, saved with the final evaluation; none by default."""
        del stats
        return {}

    def check_targets(self, target: np.ndarray) -> None:
        """Raises ValueError naming the task if `target` ([B, ...]) does not fit the task."""
        if tuple(target.shape[1:]) != self.target_shape:
            raise ValueError(
                f"task {self.name!r}: targets have per-example shape {tuple(target.shape[1:])}, "
                f"expected {self.target_shape}"
            )
