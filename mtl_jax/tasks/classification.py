"""Vector tasks: multi-class classification and binary / multi-label prediction."""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import numpy as np

from mtl_jax import losses
from mtl_jax.tasks.base import (
    HIGHER_IS_BETTER,
    Task,
    check_binary,
    check_labels,
    f1_score,
    ratio,
)

CLASSIFICATION_LOSSES = ("cross_entropy", "focal", "logit_adjusted", "balanced_softmax")
BINARY_LOSSES = ("bce", "focal")

# The top-k accuracies reported when `Classification.top_k` is None.
_DEFAULT_TOP_K = 5


def _mean(values) -> float:
    """Mean of `values`, 0 when there are none."""
    return float(np.mean(values)) if np.size(values) else 0.0


def _check_gamma(name: str, gamma: float) -> None:
    if not (math.isfinite(gamma) and gamma >= 0):
        raise ValueError(f"task {name!r}: focal_gamma must be finite and >= 0, got {gamma}")


def _check_loss_name(name: str, loss_type: str, valid: tuple[str, ...]) -> None:
    if loss_type not in valid:
        raise ValueError(f"task {name!r}: unknown loss_type {loss_type!r}; valid: {list(valid)}")


@dataclasses.dataclass(frozen=True)
class Classification(Task):
    """Multi-class classification of softmax logits.

    Targets are integer labels in `[0, num_classes)`; `ignore_label` marks examples that
    carry no label for this task (they get no loss and no metric).

    Loss (`loss_type`; every option only changes the per-example values, which the
    trainer averages over the valid examples with `losses.masked_mean`):

    * "cross_entropy": `−log softmax(z)_y`.
    * "focal": `−(1 − p_y)^γ log p_y`, γ = `focal_gamma` (Lin et al., ICCV 2017, Eq. 4).
      The α-balanced form (Eq. 5) with per-class α_y is `class_weights = α`.
    * "logit_adjusted": `−log softmax(z + τ log π)_y`, τ = `logit_adjust_tau` (Menon et
      al., "Long-tail learning via logit adjustment", ICLR 2021, Eq. 10).
    * "balanced_softmax": the same with τ = 1 (Ren et al., "Balanced Meta-Softmax for
      Long-Tailed Visual Recognition", NeurIPS 2020, Eq. 4).

    π is `class_prior`, the train-split class frequencies (or counts): required by the
    last two, each entry > 0, normalised to sum to 1 in the loss. The adjustment is in
    the training loss only: predictions and metrics use the raw logits `z`, which is
    what makes them balanced classifiers.

    `class_weights` (empty: none) multiplies example i's loss by `w_{y_i}`, for any
    `loss_type`. The reduction stays the mean over the N valid examples,
    `Σ_i w_{y_i} ℓ_i / N`; torch's `CrossEntropyLoss(weight=w)` instead divides by
    `Σ_i w_{y_i}`, a batch-dependent normaliser that the one-reduction design (and
    per-device sums) does not have. Scale `w` so that `Σ_c π_c w_c = 1` to keep the
    loss on the unweighted scale on average.

    Metrics (fractions in [0, 1]), from a `num_classes × num_classes` confusion matrix
    (row = true class, column = predicted = argmax of the logits) and top-k counts
    accumulated over every labelled example of the split, with scikit-learn's
    conventions:

    * `accuracy`; `top{k}_accuracy` for each k of `top_k` (the true class is among the
      k largest logits; ties ranked by class index, as `argmax`, so top-1 = accuracy);
    * `precision_macro`, `recall_macro`, `macro_f1`: unweighted means over the classes
      present in the truth or the predictions of the split (scikit-learn's default
      `labels`), with `zero_division=0`;
    * `weighted_f1`: per-class F1 weighted by true-class support;
    * `balanced_accuracy`: mean recall over the classes present in the truth
      (`sklearn.metrics.balanced_accuracy_score`);
    * `precision/<class>`, `recall/<class>`, `f1/<class>` for every class (0 where
      undefined), `<class>` from `class_names` or the class index.

    With no labelled example in the split every metric is 0.

    `top_k`: None reports top-5 when there are more than 5 classes (nothing otherwise);
    an explicit tuple may hold any k in `[1, num_classes]`.
    """

    num_classes: int = 10
    ignore_label: int = -1
    top_k: tuple[int, ...] | None = None
    class_names: tuple[str, ...] = ()
    loss_type: str = "cross_entropy"
    class_weights: tuple[float, ...] = ()
    focal_gamma: float = 2.0
    class_prior: tuple[float, ...] = ()
    logit_adjust_tau: float = 1.0

    def __post_init__(self):
        for field in ("class_names", "class_weights", "class_prior"):
            object.__setattr__(self, field, tuple(getattr(self, field)))
        if self.top_k is not None:
            object.__setattr__(self, "top_k", tuple(self.top_k))
        name, n = self.name, self.num_classes
        for k in self.top_k or ():
            if not (isinstance(k, int | np.integer) and 1 <= k <= n):
                raise ValueError(f"task {name!r}: top_k {k!r} is not in [1, num_classes={n}]")
        if self.class_names and len(self.class_names) != n:
            raise ValueError(f"task {name!r}: {len(self.class_names)} class_names for {n} classes")
        if len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"task {name!r}: class_names are not unique")
        _check_loss_name(name, self.loss_type, CLASSIFICATION_LOSSES)
        _check_gamma(name, self.focal_gamma)
        weights = np.asarray(self.class_weights, np.float64)
        if weights.size and (
            len(weights) != n or not np.all(np.isfinite(weights) & (weights >= 0))
        ):
            raise ValueError(
                f"task {name!r}: class_weights must be {n} finite values >= 0, got "
                f"{list(self.class_weights)}"
            )
        prior = np.asarray(self.class_prior, np.float64)
        if prior.size and (len(prior) != n or not np.all(np.isfinite(prior) & (prior > 0))):
            raise ValueError(
                f"task {name!r}: class_prior must be {n} finite values > 0, got "
                f"{list(self.class_prior)}"
            )
        if self.loss_type in ("logit_adjusted", "balanced_softmax") and not prior.size:
            raise ValueError(
                f"task {name!r}: loss_type {self.loss_type!r} needs class_prior (the "
                "train-split class frequencies)"
            )
        if not math.isfinite(self.logit_adjust_tau):
            raise ValueError(f"task {name!r}: logit_adjust_tau must be finite")

    @property
    def output_shape(self):
        return (self.num_classes,)

    @property
    def target_shape(self):
        return ()

    @property
    def top_ks(self) -> tuple[int, ...]:
        """The k of every reported `top{k}_accuracy`."""
        if self.top_k is None:
            return (_DEFAULT_TOP_K,) if self.num_classes > _DEFAULT_TOP_K else ()
        return tuple(int(k) for k in self.top_k)

    def _mask(self, target, valid):
        return (target != self.ignore_label) & valid

    def _log_prior(self) -> np.ndarray:
        prior = np.asarray(self.class_prior, np.float64)
        return np.log(prior / prior.sum()).astype(np.float32)

    def loss(self, pred, target, valid):
        if self.loss_type == "focal":
            values = losses.focal_cross_entropy(pred, target, self.focal_gamma)
        elif self.loss_type in ("logit_adjusted", "balanced_softmax"):
            tau = self.logit_adjust_tau if self.loss_type == "logit_adjusted" else 1.0
            values = losses.adjusted_cross_entropy(pred, target, tau * self._log_prior())
        else:
            values = losses.softmax_cross_entropy(pred, target)
        if self.class_weights:
            safe = jnp.clip(target, 0, self.num_classes - 1)
            values = jnp.asarray(self.class_weights, jnp.float32)[safe] * values
        return values, self._mask(target, valid)

    def metric_stats(self, pred, target, valid):
        n = self.num_classes
        mask = self._mask(target, valid)
        safe = jnp.clip(target, 0, n - 1)
        # Row = true class, column = predicted class; masked examples add 0 to cell (0, 0).
        cell = jnp.where(mask, safe * n + jnp.argmax(pred, axis=-1), 0)
        confusion = jnp.bincount(cell, weights=mask.astype(jnp.int32), length=n * n)
        stats = {"confusion": confusion.reshape(n, n).astype(jnp.int32)}
        if self.top_ks:
            # Rank of the true class: the classes ahead of it, ties broken as argmax does.
            logits = pred.astype(jnp.float32)
            true = jnp.take_along_axis(logits, safe[:, None], axis=-1)
            ahead = (logits > true) | ((logits == true) & (jnp.arange(n) < safe[:, None]))
            rank = jnp.sum(ahead, axis=-1)
            for k in self.top_ks:
                stats[f"top{k}_correct"] = jnp.sum(mask & (rank < k))
        return stats

    def confusion_matrix(self, stats: dict[str, np.ndarray]) -> np.ndarray:
        """The split's `[num_classes, num_classes]` int64 confusion matrix (row = true
        class, column = predicted class) from the summed `metric_stats`."""
        return np.asarray(stats["confusion"], np.int64)

    def compute_tables(self, stats):
        return {"confusion_matrix": self.confusion_matrix(stats)}

    def _class_labels(self) -> list[str]:
        return list(self.class_names) or [str(c) for c in range(self.num_classes)]

    def compute_metrics(self, stats):
        confusion = self.confusion_matrix(stats).astype(np.float64)
        total = confusion.sum()
        tp = np.diag(confusion)
        support = confusion.sum(axis=1)  # true
        predicted = confusion.sum(axis=0)
        precision = ratio(tp, predicted)
        recall = ratio(tp, support)
        f1 = ratio(2 * tp, support + predicted)
        present = (support > 0) | (predicted > 0)
        metrics = {"accuracy": float(ratio(tp.sum(), total))}
        for k in self.top_ks:
            metrics[f"top{k}_accuracy"] = float(ratio(stats[f"top{k}_correct"], total))
        metrics["precision_macro"] = _mean(precision[present])
        metrics["recall_macro"] = _mean(recall[present])
        metrics["macro_f1"] = _mean(f1[present])
        metrics["weighted_f1"] = float(ratio(np.sum(support * f1), total))
        metrics["balanced_accuracy"] = _mean(recall[support > 0])
        for prefix, values in (("precision", precision), ("recall", recall), ("f1", f1)):
            for label, value in zip(self._class_labels(), values, strict=True):
                metrics[f"{prefix}/{label}"] = float(value)
        return metrics

    def headline_metrics(self):
        return ("accuracy",)  # the MultiMNIST / Office tables'; the rest is in results.json

    def metric_directions(self):
        zeros = {"confusion": np.zeros((self.num_classes,) * 2, np.int64)}
        zeros.update({f"top{k}_correct": np.int64(0) for k in self.top_ks})
        return dict.fromkeys(self.compute_metrics(zeros), HIGHER_IS_BETTER)

    def check_targets(self, target):
        super().check_targets(target)
        check_labels(self.name, target, self.num_classes, self.ignore_label)


@dataclasses.dataclass(frozen=True)
class BinaryLabels(Task):
    """Binary or multi-label prediction with one sigmoid logit per label.

    Targets are `[num_labels]` in {0, 1}. Loss (`loss_type`), per label:

    * "bce": sigmoid binary cross-entropy;
    * "focal": `−α_t (1 − p_t)^γ log p_t` (Lin et al., ICCV 2017, Eq. 5), γ =
      `focal_gamma`, `α_t = focal_alpha` for positives and `1 − focal_alpha` for
      negatives; `focal_alpha = None` leaves both unweighted (Eq. 4).

    Metrics (fractions in [0, 1]) from per-label tp / fp / fn / tn counts over the whole
    split, scikit-learn's multi-label conventions with `zero_division=0`:

    * `accuracy`: over all (example, label) pairs;
    * `precision_macro`, `recall_macro`, `macro_f1`: unweighted means over all labels of
      the per-label values (`precision_recall_fscore_support(average="macro")`); `f1` is
      the same number, the name CelebA results use;
    * `weighted_f1`: per-label F1 weighted by the label's positive count;
    * `balanced_accuracy`: mean over labels of `balanced_accuracy_score` of that label's
      column, i.e. `(TPR + TNR) / 2`, or the one rate defined when the split has only
      positives or only negatives for the label;
    * `precision/<label>`, `recall/<label>`, `f1/<label>` for every label (`<label>` from
      `label_names` or the index), and `f1_<label>` when `label_names` is given (the
      per-attribute F1 key of CelebA results).

    With no valid example in the split every metric is 0.
    """

    num_labels: int = 1
    label_names: tuple[str, ...] = ()
    loss_type: str = "bce"
    focal_gamma: float = 2.0
    focal_alpha: float | None = None

    def __post_init__(self):
        object.__setattr__(self, "label_names", tuple(self.label_names))
        if self.label_names and len(self.label_names) != self.num_labels:
            raise ValueError(
                f"task {self.name!r}: {len(self.label_names)} label_names for "
                f"num_labels={self.num_labels}"
            )
        if len(set(self.label_names)) != len(self.label_names):
            raise ValueError(f"task {self.name!r}: label_names are not unique")
        _check_loss_name(self.name, self.loss_type, BINARY_LOSSES)
        _check_gamma(self.name, self.focal_gamma)
        if self.focal_alpha is not None and not 0 <= self.focal_alpha <= 1:
            raise ValueError(
                f"task {self.name!r}: focal_alpha must be in [0, 1] or None, got {self.focal_alpha}"
            )

    @property
    def output_shape(self):
        return (self.num_labels,)

    @property
    def target_shape(self):
        return (self.num_labels,)

    def loss(self, pred, target, valid):
        if self.loss_type == "focal":
            values = losses.sigmoid_focal_loss(pred, target, self.focal_gamma, self.focal_alpha)
        else:
            values = losses.sigmoid_binary_cross_entropy(pred, target)
        return values, valid[:, None]

    def metric_stats(self, pred, target, valid):
        predicted = pred > 0
        truth = target > 0.5
        v = valid[:, None]
        return {
            "tp": jnp.sum(predicted & truth & v, axis=0),
            "fp": jnp.sum(predicted & ~truth & v, axis=0),
            "fn": jnp.sum(~predicted & truth & v, axis=0),
            "tn": jnp.sum(~predicted & ~truth & v, axis=0),
        }

    def compute_metrics(self, stats):
        tp, fp, fn, tn = (np.asarray(stats[k], np.float64) for k in ("tp", "fp", "fn", "tn"))
        total = np.sum(tp + fp + fn + tn)
        positives, negatives = tp + fn, tn + fp
        precision = ratio(tp, tp + fp)
        recall = ratio(tp, positives)
        f1 = f1_score(tp, fp, fn)
        # Per label: the mean of the recalls of the classes present in the truth.
        rates = ratio(tp, positives) + ratio(tn, negatives)
        balanced = ratio(rates, (positives > 0).astype(int) + (negatives > 0))
        # Every rate is 0 without examples, so an empty split gives zeros throughout.
        metrics = {
            "accuracy": float(ratio(np.sum(tp + tn), total)),
            "f1": _mean(f1),
            "precision_macro": _mean(precision),
            "recall_macro": _mean(recall),
            "macro_f1": _mean(f1),
            "weighted_f1": float(ratio(np.sum(positives * f1), np.sum(positives))),
            "balanced_accuracy": _mean(balanced),
        }
        labels = list(self.label_names) or [str(i) for i in range(self.num_labels)]
        for prefix, values in (("precision", precision), ("recall", recall), ("f1", f1)):
            for label, value in zip(labels, values, strict=True):
                metrics[f"{prefix}/{label}"] = float(value)
        for label, value in zip(self.label_names, f1, strict=False):
            metrics[f"f1_{label}"] = float(value)
        return metrics

    def headline_metrics(self):
        return ("accuracy", "f1", *(f"f1_{label}" for label in self.label_names))

    def metric_directions(self):
        zeros = {k: np.zeros(self.num_labels, np.int64) for k in ("tp", "fp", "fn", "tn")}
        return dict.fromkeys(self.compute_metrics(zeros), HIGHER_IS_BETTER)

    def check_targets(self, target):
        super().check_targets(target)
        check_binary(self.name, target)
