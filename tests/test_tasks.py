"""Task losses and metrics against hand-computed values."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import losses
from mtl_jax.tasks import BinaryLabels, Boundary, Classification


def test_masked_mean_ignores_masked_elements():
    values = jnp.asarray([1.0, 2.0, 100.0])
    assert float(losses.masked_mean(values, jnp.asarray([1, 1, 0]))) == pytest.approx(1.5)
    assert float(losses.masked_mean(values, jnp.zeros(3))) == 0.0


def test_classification_loss_and_accuracy_with_ignore_label():
    task = Classification("digit", num_classes=3, ignore_label=-1)
    logits = jnp.asarray([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 5.0], [9.0, 0.0, 0.0]])
    target = jnp.asarray([0, 2, 2, -1])
    valid = jnp.asarray([True, True, True, True])
    values, mask = task.loss(logits, target, valid)
    expected = [
        -np.log(np.exp(2) / (np.exp(2) + 2)),
        -np.log(1 / (np.exp(1) + 2)),
        -np.log(np.exp(5) / (np.exp(5) + 2)),
    ]
    np.testing.assert_allclose(values[:3], expected, rtol=1e-6)
    np.testing.assert_array_equal(mask, [True, True, True, False])
    stats = task.metric_stats(logits, target, valid)
    # Correct: examples 0 and 2; example 3 is ignored.
    assert task.compute_metrics({k: np.asarray(v) for k, v in stats.items()}) == {
        "accuracy": pytest.approx(2 / 3)
    }
    padded = task.metric_stats(logits, target, jnp.asarray([True, False, True, True]))
    assert int(padded["count"]) == 2 and int(padded["correct"]) == 2


def test_classification_rejects_out_of_range_labels():
    task = Classification("left", num_classes=10)
    with pytest.raises(ValueError, match=r"task 'left'.*\[10, 12\].*outside \[0, 10\)"):
        task.check_targets(np.asarray([0, 10, 12, -1]))
    task.check_targets(np.asarray([0, 9, -1]))
    with pytest.raises(ValueError, match="per-example shape"):
        task.check_targets(np.zeros((4, 2), np.int64))


def test_binary_labels_f1():
    task = BinaryLabels("attr", num_labels=2)
    logits = jnp.asarray([[1.0, -1.0], [1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0]])
    target = jnp.asarray([[1, 0], [0, 1], [1, 1], [0, 0]])
    stats = task.metric_stats(logits, target, jnp.ones(4, bool))
    metrics = task.compute_metrics({k: np.asarray(v) for k, v in stats.items()})
    # Label 0: tp=1 fp=1 fn=1 → F1 = 0.5; label 1: tp=2 fp=0 fn=0 → 1.0.
    assert metrics["f1"] == pytest.approx(0.75)
    assert metrics["accuracy"] == pytest.approx(6 / 8)


def test_class_balanced_bce_weights():
    # One image with 1 positive of 4 pixels: β = 3/4 on positives, 1/4 on negatives (×2).
    labels = jnp.asarray([[[1, 0], [0, 0]]])
    logits = jnp.zeros((1, 2, 2))
    values = losses.class_balanced_bce(logits, labels, jnp.ones((1, 2, 2)))
    log2 = np.log(2.0)
    np.testing.assert_allclose(
        values[0], [[1.5 * log2, 0.5 * log2], [0.5 * log2, 0.5 * log2]], rtol=1e-6
    )


def test_boundary_f1_and_ods():
    task = Boundary("edge", height=1, width=4)
    target = jnp.asarray([[[1, 1, 0, 0]]])
    probs = np.asarray([0.9, 0.3, 0.2, 0.05])
    logits = jnp.asarray(np.log(probs / (1 - probs)))[None, None, :, None]
    stats = task.metric_stats(logits, target, jnp.ones(1, bool))
    metrics = task.compute_metrics({k: np.asarray(v) for k, v in stats.items()})
    # At 0.5: tp=1, fn=1 → F1 = 2/3. At any threshold in (0.2, 0.3]: tp=2 → F1 = 1.
    assert metrics["f1"] == pytest.approx(2 / 3)
    assert metrics["ods_f"] == pytest.approx(1.0)
    # A padded (invalid) example contributes nothing.
    stats = task.metric_stats(
        jnp.concatenate([logits, logits]),
        jnp.concatenate([target, 1 - target]),
        jnp.asarray([True, False]),
    )
    assert task.compute_metrics({k: np.asarray(v) for k, v in stats.items()})[
        "ods_f"
    ] == pytest.approx(1.0)
