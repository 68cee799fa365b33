"""Task losses and metrics against hand-computed values."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import losses
from mtl_jax.tasks import BinaryLabels, Boundary, Classification, Depth, Segmentation, SurfaceNormal


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
    metrics = task.compute_metrics({k: np.asarray(v) for k, v in stats.items()})
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    np.testing.assert_array_equal(stats["confusion"], [[1, 0, 0], [0, 0, 0], [0, 1, 1]])
    padded = task.metric_stats(logits, target, jnp.asarray([True, False, True, True]))
    np.testing.assert_array_equal(padded["confusion"], [[1, 0, 0], [0, 0, 0], [0, 0, 1]])


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


def _metrics(task, pred, target, valid):
    stats = task.metric_stats(jnp.asarray(pred), jnp.asarray(target), jnp.asarray(valid))
    return task.compute_metrics({k: np.asarray(v) for k, v in stats.items()})


def _one_hot_logits(labels, num_classes):
    return 5.0 * np.eye(num_classes)[np.asarray(labels)]


def test_segmentation_loss_ignores_label_and_padding():
    task = Segmentation("seg", 3, height=1, width=3)
    logits = np.zeros((2, 1, 3, 3))
    logits[0, 0, 0] = [1.0, 0.0, 0.0]
    target = np.asarray([[[0, 2, -1]], [[1, 1, 1]]])
    values, mask = task.loss(jnp.asarray(logits), jnp.asarray(target), jnp.asarray([True, False]))
    np.testing.assert_array_equal(mask, [[[True, True, False]], [[False, False, False]]])
    expected = [-np.log(np.e / (np.e + 2)), np.log(3.0)]
    np.testing.assert_allclose(np.asarray(values)[0, 0, :2], expected, rtol=1e-6)
    np.testing.assert_allclose(losses.masked_mean(values, mask), np.mean(expected), rtol=1e-6)


def test_segmentation_confusion_metrics_by_hand():
    # 4 classes; class 3 is never true and never predicted, so it is left out of the mIoU.
    task = Segmentation("seg", 4, height=2, width=3)
    truth = np.asarray([[[0, 0, 1], [1, 2, -1]]])
    predicted = np.asarray([[[0, 1, 1], [1, 0, 2]]])  # the last pixel is ignored
    metrics = _metrics(task, _one_hot_logits(predicted, 4), truth, [True])
    # Labelled pixels: (0→0), (0→1), (1→1), (1→1), (2→0): 3 of 5 correct.
    # IoU_0 = 1/(1+1+1) = 1/3; IoU_1 = 2/(2+1+0) = 2/3; IoU_2 = 0/(0+0+1) = 0.
    assert metrics["pixel_accuracy"] == pytest.approx(60.0)
    assert metrics["miou"] == pytest.approx(100 * (1 / 3 + 2 / 3 + 0) / 3)


def test_segmentation_metrics_accumulate_over_batches():
    """The confusion matrix of two batches is the sum; mIoU is not a mean of batch mIoUs."""
    task = Segmentation("seg", 2, height=1, width=2)
    first = task.metric_stats(
        jnp.asarray(_one_hot_logits([[[0, 0]]], 2)), jnp.asarray([[[0, 0]]]), jnp.ones(1, bool)
    )
    second = task.metric_stats(
        jnp.asarray(_one_hot_logits([[[0, 1]]], 2)), jnp.asarray([[[1, 1]]]), jnp.ones(1, bool)
    )
    total = {k: np.asarray(first[k]) + np.asarray(second[k]) for k in first}
    np.testing.assert_array_equal(total["confusion"], [[2, 0], [1, 1]])
    # IoU_0 = 2/3, IoU_1 = 1/2 over the split (batch means would give (100 + 25)/2).
    assert task.compute_metrics(total)["miou"] == pytest.approx(100 * (2 / 3 + 1 / 2) / 2)


def test_segmentation_rejects_out_of_range_labels():
    task = Segmentation("segmentation", 13, height=1, width=4)
    task.check_targets(np.asarray([[[0, 12, -1, 3]]]))
    with pytest.raises(ValueError, match=r"'segmentation': 3 labels with values \[-2, 13\]"):
        task.check_targets(np.asarray([[[13, 13, -2, 3]]]))


def test_depth_loss_and_errors_over_valid_pixels():
    task = Depth("depth", height=1, width=4)
    target = np.asarray([[[[2.0], [4.0], [0.0], [1.0]]], [[[9.0], [9.0], [9.0], [9.0]]]])
    pred = np.asarray([[[[3.0], [3.0], [7.0], [1.0]]], [[[0.0], [0.0], [0.0], [0.0]]]])
    valid = np.asarray([True, False])  # the second example is padding
    values, mask = task.loss(jnp.asarray(pred), jnp.asarray(target), jnp.asarray(valid))
    # Valid pixels: errors 1, 1, 0 (the zero-depth pixel and the padding are invalid).
    assert float(losses.masked_mean(values, mask)) == pytest.approx(2 / 3)
    metrics = _metrics(task, pred, target, valid)
    assert metrics["abs_err"] == pytest.approx(2 / 3)
    assert metrics["rel_err"] == pytest.approx((1 / 2 + 1 / 4 + 0) / 3)


def test_depth_rejects_negative_and_nan_targets():
    task = Depth("depth", height=1, width=2)
    with pytest.raises(ValueError, match=r"'depth': 2 target values are negative or not finite"):
        task.check_targets(np.asarray([[[[-1.0], [np.nan]]]]))


def _tilted(angle_deg, scale=1.0):
    """A vector at `angle_deg` from +z, in the x–z plane."""
    a = np.radians(angle_deg)
    return scale * np.asarray([np.sin(a), 0.0, np.cos(a)])


def test_surface_normal_angles_by_hand():
    task = SurfaceNormal("normal", height=1, width=6)
    up = np.asarray([0.0, 0.0, 1.0])
    angles = [0.0, 10.0, 20.0, 45.0, 90.0]
    pred = np.stack([_tilted(a, scale=3.0) for a in angles] + [_tilted(5.0)])[None, None]
    target = np.stack([up] * 5 + [np.zeros(3)])[None, None]  # the last pixel is invalid
    metrics = _metrics(task, pred, target, [True])
    assert metrics["mean_angle"] == pytest.approx(np.mean(angles), abs=1e-4)
    assert metrics["median_angle"] == pytest.approx(20.0, abs=0.005 + 1e-4)
    assert metrics["within_11.25"] == pytest.approx(40.0)
    assert metrics["within_22.5"] == pytest.approx(60.0)
    assert metrics["within_30"] == pytest.approx(60.0)
    values, mask = task.loss(jnp.asarray(pred), jnp.asarray(target), jnp.ones(1, bool))
    np.testing.assert_array_equal(mask[0, 0], [True] * 5 + [False])
    np.testing.assert_allclose(values[0, 0, :5], 1 - np.cos(np.radians(angles)), atol=1e-6)


def test_surface_normal_median_is_over_the_whole_split():
    task = SurfaceNormal("normal", height=3, width=5)
    rng = np.random.default_rng(0)
    all_angles, total = [], None
    for batch in range(3):
        angles = rng.uniform(0, 120, size=(2, 3, 5))
        pred = np.stack([np.sin(np.radians(angles)), 0 * angles, np.cos(np.radians(angles))], -1)
        target = np.broadcast_to([0.0, 0.0, 1.0], pred.shape).copy()
        target[0, 0, 0] = 0.0  # invalid pixel
        valid = np.asarray([True, batch != 2])  # the last batch is half padding
        stats = task.metric_stats(jnp.asarray(pred), jnp.asarray(target), jnp.asarray(valid))
        stats = {k: np.asarray(v, np.float64) for k, v in stats.items()}
        total = stats if total is None else {k: total[k] + stats[k] for k in total}
        keep = np.any(target != 0, -1) & valid[:, None, None]
        all_angles.append(angles[keep])
    all_angles = np.concatenate(all_angles)
    metrics = task.compute_metrics(total)
    assert len(all_angles) % 2 == 0  # the even-count median (mean of the two middle values)
    assert metrics["median_angle"] == pytest.approx(np.median(all_angles), abs=0.005 + 1e-3)
    assert metrics["mean_angle"] == pytest.approx(np.mean(all_angles), abs=1e-3)
    assert metrics["within_30"] == pytest.approx(100 * np.mean(all_angles < 30))


def test_surface_normal_loss_equals_w2_loss_when_all_pixels_are_valid():
    """WORKLOADS.md W2: loss = 1 − mean over pixels of Σ_c (pred/‖pred‖)·target."""
    task = SurfaceNormal("normal", height=4, width=5)
    rng = np.random.default_rng(1)
    pred = rng.normal(size=(3, 4, 5, 3)).astype(np.float32)
    target = rng.normal(size=(3, 4, 5, 3))
    target = (target / np.linalg.norm(target, axis=-1, keepdims=True)).astype(np.float32)
    values, mask = task.loss(jnp.asarray(pred), jnp.asarray(target), jnp.ones(3, bool))
    p = pred / np.linalg.norm(pred, axis=-1, keepdims=True)
    expected = 1 - np.mean(np.sum(p * target, axis=-1))
    assert float(losses.masked_mean(values, mask)) == pytest.approx(expected, rel=1e-5)


def test_surface_normal_zero_prediction_has_finite_gradient():
    task = SurfaceNormal("normal", height=1, width=1)
    target = jnp.asarray([[[[0.0, 0.0, 1.0]]]])

    def loss(pred):
        return losses.masked_mean(*task.loss(pred, target, jnp.ones(1, bool)))

    grad = jax.grad(loss)(jnp.zeros((1, 1, 1, 3)))
    assert np.all(np.isfinite(grad))
    metrics = _metrics(task, np.zeros((1, 1, 1, 3)), target, [True])
    assert metrics["mean_angle"] == pytest.approx(90.0)


def test_binary_labels_per_label_f1():
    task = BinaryLabels("attributes", num_labels=2, label_names=("Smiling", "Male"))
    logits = np.asarray([[1.0, -1.0], [1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0]])
    target = np.asarray([[1, 0], [0, 1], [1, 1], [0, 0]])
    metrics = _metrics(task, logits, target, np.ones(4, bool))
    assert metrics["f1_Smiling"] == pytest.approx(0.5)
    assert metrics["f1_Male"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="'attributes': 1 targets are not 0 or 1"):
        task.check_targets(np.asarray([[1, 2], [0, 1]]))
    with pytest.raises(ValueError, match="3 label_names for num_labels=2"):
        BinaryLabels("attributes", num_labels=2, label_names=("a", "b", "c"))


@pytest.mark.parametrize(
    "task",
    [
        Classification("c", num_classes=3),
        BinaryLabels("b", num_labels=2, label_names=("x", "y")),
        Boundary("e", height=2, width=2),
        Segmentation("s", 3, height=2, width=2),
        Depth("d", height=2, width=2),
        SurfaceNormal("n", height=2, width=2),
    ],
    ids=lambda t: type(t).__name__,
)
def test_directions_cover_every_metric(task):
    rng = np.random.default_rng(0)
    pred = rng.normal(size=(2, *task.output_shape)).astype(np.float32)
    if isinstance(task, Classification | Segmentation):
        target = rng.integers(0, 3, size=(2, *task.target_shape))
    else:
        target = (rng.random((2, *task.target_shape)) < 0.5).astype(np.float32)
    task.check_targets(target)
    metrics = _metrics(task, pred, target, np.ones(2, bool))
    assert set(task.metric_directions()) == set(metrics)
    assert set(task.metric_directions().values()) <= {1, -1}
    assert all(np.isfinite(v) for v in metrics.values())
