"""Classification and multi-label metrics against scikit-learn on random predictions."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from sklearn import metrics as skm

from mtl_jax import plots
from mtl_jax.tasks import BinaryLabels, Classification


def _stats(task, pred, target, valid):
    stats = jax.jit(task.metric_stats)(jnp.asarray(pred), jnp.asarray(target), jnp.asarray(valid))
    return {k: np.asarray(v, np.int64) for k, v in stats.items()}


def _sum(batches):
    return {k: sum(b[k] for b in batches) for k in batches[0]}


def _random_split(seed, num_classes, size, *, drop_true=(), drop_pred=()):
    """Continuous logits (no ties), labels with some ignored and some padded examples;
    the classes in `drop_true` never occur as labels and those in `drop_pred` are never
    predicted."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(size, num_classes)).astype(np.float32)
    logits[:, list(drop_pred)] -= 100.0
    allowed = [c for c in range(num_classes) if c not in drop_true]
    labels = rng.choice(allowed, size=size)
    labels[rng.random(size) < 0.1] = -1
    valid = rng.random(size) < 0.85
    return logits, labels, valid


def _sklearn_classification(logits, labels, valid, num_classes, ks):
    with warnings.catch_warnings():  # the degenerate cases (absent classes, k = C) on purpose
        warnings.simplefilter("ignore")
        return _sklearn_classification_metrics(logits, labels, valid, num_classes, ks)


def _sklearn_classification_metrics(logits, labels, valid, num_classes, ks):
    keep = valid & (labels != -1)
    y_true, scores = labels[keep], logits[keep]
    y_pred = scores.argmax(-1)
    all_labels = np.arange(num_classes)
    p, r, f, _ = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=all_labels, average=None, zero_division=0
    )
    expected = {
        "accuracy": skm.accuracy_score(y_true, y_pred),
        "balanced_accuracy": skm.balanced_accuracy_score(y_true, y_pred),
        "weighted_f1": skm.f1_score(y_true, y_pred, average="weighted", zero_division=0),
    }
    for name, average in (("precision_macro", "precision"), ("recall_macro", "recall")):
        scorer = getattr(skm, f"{average}_score")
        expected[name] = scorer(y_true, y_pred, average="macro", zero_division=0)
    expected["macro_f1"] = skm.f1_score(y_true, y_pred, average="macro", zero_division=0)
    for k in ks:
        expected[f"top{k}_accuracy"] = skm.top_k_accuracy_score(
            y_true, scores, k=k, labels=all_labels
        )
    for c in range(num_classes):
        expected[f"precision/{c}"], expected[f"recall/{c}"] = p[c], r[c]
        expected[f"f1/{c}"] = f[c]
    return expected, skm.confusion_matrix(y_true, y_pred, labels=all_labels)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(
    "drop_true, drop_pred",
    [((), ()), ((1,), ()), ((), (2,)), ((3,), (3,)), ((0, 4), (4, 5))],
    ids=["all", "absent_from_truth", "never_predicted", "absent_from_both", "mixed"],
)
def test_classification_metrics_match_sklearn(seed, drop_true, drop_pred):
    num_classes, ks = 7, (1, 3, 7)
    task = Classification("c", num_classes=num_classes, top_k=ks)
    logits, labels, valid = _random_split(
        seed, num_classes, 300, drop_true=drop_true, drop_pred=drop_pred
    )
    # Four batches (the last one short) summed, as the evaluation loop does.
    batches = [
        _stats(task, logits[i : i + 80], labels[i : i + 80], valid[i : i + 80])
        for i in range(0, 300, 80)
    ]
    total = _sum(batches)
    np.testing.assert_equal(total, _stats(task, logits, labels, valid))
    metrics = task.compute_metrics(total)
    expected, confusion = _sklearn_classification(logits, labels, valid, num_classes, ks)
    np.testing.assert_array_equal(task.confusion_matrix(total), confusion)
    assert task.confusion_matrix(total).dtype == np.int64
    assert set(metrics) == set(expected)
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, abs=1e-12), key
    assert metrics["top1_accuracy"] == metrics["accuracy"]
    assert metrics["top7_accuracy"] == 1.0


def test_top_k_ties_rank_like_argmax():
    # All logits equal: argmax picks class 0, so top-k holds exactly for labels < k.
    task = Classification("c", num_classes=4, top_k=(1, 2))
    stats = _stats(task, np.zeros((4, 4)), np.arange(4), np.ones(4, bool))
    metrics = task.compute_metrics(stats)
    assert metrics["accuracy"] == metrics["top1_accuracy"] == 0.25
    assert metrics["top2_accuracy"] == 0.5


def test_per_class_keys_use_class_names_and_cover_absent_classes():
    task = Classification("shape", num_classes=3, class_names=("disc", "square", "star"))
    logits = 5.0 * np.eye(3)[[0, 0, 1]]
    metrics = task.compute_metrics(_stats(task, logits, np.asarray([0, 1, 1]), np.ones(3, bool)))
    assert metrics["precision/disc"] == 0.5 and metrics["recall/square"] == 0.5
    assert metrics["f1/star"] == metrics["precision/star"] == metrics["recall/star"] == 0.0
    # "star" is absent from truth and predictions: left out of the macro means.
    assert metrics["macro_f1"] == pytest.approx((2 / 3 + 2 / 3) / 2)
    assert set(task.metric_directions()) == set(metrics)
    assert set(task.metric_directions().values()) == {1}
    assert task.compute_tables(_stats(task, logits, np.asarray([0, 1, 1]), np.ones(3, bool))) == {
        "confusion_matrix": pytest.approx(np.asarray([[1, 0, 0], [1, 1, 0], [0, 0, 0]]))
    }


def test_empty_split_gives_zeros():
    task = Classification("c", num_classes=6)
    stats = _stats(task, np.ones((3, 6)), np.asarray([-1, 2, 3]), np.asarray([True, False, False]))
    metrics = task.compute_metrics(stats)
    assert "top5_accuracy" in metrics and set(metrics.values()) == {0.0}
    assert set(metrics) == set(task.metric_directions())
    binary = BinaryLabels("b", num_labels=2, label_names=("x", "y"))
    metrics = binary.compute_metrics(_stats(binary, np.ones((2, 2)), np.ones((2, 2)), [False] * 2))
    assert set(metrics.values()) == {0.0} and set(metrics) == set(binary.metric_directions())


def test_default_top_k_needs_more_than_five_classes():
    assert Classification("c", num_classes=10).top_ks == (5,)
    assert Classification("c", num_classes=5).top_ks == ()
    assert "top5_accuracy" not in Classification("c", num_classes=3).metric_directions()
    assert Classification("c", num_classes=3, top_k=[3]).top_ks == (3,)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"top_k": (0,)}, r"task 'cls': top_k 0 is not in \[1, num_classes=4\]"),
        ({"top_k": (5,)}, r"task 'cls': top_k 5 is not in \[1, num_classes=4\]"),
        ({"class_names": ("a", "b")}, "task 'cls': 2 class_names for 4 classes"),
        ({"class_names": ("a", "a", "b", "c")}, "task 'cls': class_names are not unique"),
    ],
)
def test_classification_metric_options_are_validated(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Classification("cls", num_classes=4, **kwargs)


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
@pytest.mark.parametrize("seed", range(4))
def test_binary_labels_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    num_labels, size = 5, 200
    logits = rng.normal(size=(size, num_labels)).astype(np.float32)
    target = (rng.random((size, num_labels)) < [0.5, 0.1, 0.9, 0.0, 1.0]).astype(np.float32)
    logits[:, 1] -= 100.0  # label 1 is never predicted; label 3 never true, label 4 always
    valid = rng.random(size) < 0.8
    names = ("a", "b", "c", "d", "e")
    task = BinaryLabels("attr", num_labels=num_labels, label_names=names)
    batches = [
        _stats(task, logits[i : i + 64], target[i : i + 64], valid[i : i + 64])
        for i in range(0, size, 64)
    ]
    total = _sum(batches)
    np.testing.assert_equal(total, _stats(task, logits, target, valid))
    metrics = task.compute_metrics(total)
    y_true, y_pred = target[valid].astype(int), (logits[valid] > 0).astype(int)
    p, r, f, _ = skm.precision_recall_fscore_support(y_true, y_pred, zero_division=0)
    for i, name in enumerate(names):
        assert metrics[f"precision/{name}"] == pytest.approx(p[i], abs=1e-12)
        assert metrics[f"recall/{name}"] == pytest.approx(r[i], abs=1e-12)
        assert metrics[f"f1/{name}"] == metrics[f"f1_{name}"] == pytest.approx(f[i], abs=1e-12)
    for average in ("macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(
            y_true, y_pred, average=average, zero_division=0
        )
        assert metrics[f"{average}_f1"] == pytest.approx(f, abs=1e-12)
        if average == "macro":
            assert metrics["precision_macro"] == pytest.approx(p, abs=1e-12)
            assert metrics["recall_macro"] == pytest.approx(r, abs=1e-12)
    assert metrics["f1"] == metrics["macro_f1"]
    assert metrics["accuracy"] == pytest.approx(np.mean(y_true == y_pred), abs=1e-12)
    balanced = [skm.balanced_accuracy_score(y_true[:, i], y_pred[:, i]) for i in range(5)]
    assert metrics["balanced_accuracy"] == pytest.approx(np.mean(balanced), abs=1e-12)
    assert set(task.metric_directions()) == set(metrics)


def test_binary_labels_keys_without_names():
    task = BinaryLabels("attr", num_labels=2)
    keys = set(task.metric_directions())
    assert {"precision/0", "recall/1", "f1/1", "macro_f1", "balanced_accuracy"} <= keys
    assert not any(k.startswith("f1_") for k in keys)


@pytest.mark.parametrize("num_classes", [4, 25])
def test_plot_confusion_writes_a_png(tmp_path, num_classes):
    rng = np.random.default_rng(0)
    matrix = rng.integers(0, 50, size=(num_classes, num_classes))
    matrix[1] = 0  # a class with no example: no division by zero
    names = [f"class{c}" for c in range(num_classes)]
    path = plots.plot_confusion(matrix, names, tmp_path / "confusion.png", title="test")
    assert path == tmp_path / "confusion.png"
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) > 100
    plots.plot_confusion(matrix, (), tmp_path / "indices.png")
    assert (tmp_path / "indices.png").stat().st_size > 0
    with pytest.raises(ValueError, match="class_names"):
        plots.plot_confusion(matrix, names[:2], tmp_path / "bad.png")
