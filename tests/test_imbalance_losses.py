"""Class-imbalance losses (focal, logit adjustment, balanced softmax, class weights)
against independent numpy formulas, under jit and grad."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import losses
from mtl_jax.tasks import BinaryLabels, Classification

PRIOR = (0.6, 0.25, 0.1, 0.05)


def _log_softmax(z):
    z = np.asarray(z, np.float64)
    shifted = z - z.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def _pick(values, labels):
    return np.take_along_axis(values, np.asarray(labels)[:, None], -1)[:, 0]


def _problem(seed, num_classes=4, size=16, scale=3.0):
    rng = np.random.default_rng(seed)
    logits = (scale * rng.normal(size=(size, num_classes))).astype(np.float32)
    return logits, rng.integers(0, num_classes, size=size)


def _task_loss(task, logits, labels, valid=None):
    valid = np.ones(len(labels), bool) if valid is None else valid
    values, mask = jax.jit(task.loss)(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(valid))
    return np.asarray(values), np.asarray(mask)


@pytest.mark.parametrize("seed", range(3))
def test_focal_with_gamma_zero_is_cross_entropy(seed):
    logits, labels = _problem(seed)
    np.testing.assert_allclose(
        losses.focal_cross_entropy(jnp.asarray(logits), jnp.asarray(labels), 0.0),
        losses.softmax_cross_entropy(jnp.asarray(logits), jnp.asarray(labels)),
        rtol=1e-6,
    )
    values, _ = _task_loss(
        Classification("c", num_classes=4, loss_type="focal", focal_gamma=0.0), logits, labels
    )
    np.testing.assert_allclose(values, -_pick(_log_softmax(logits), labels), rtol=1e-5)


@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0, 5.0])
def test_focal_matches_numpy(gamma):
    logits, labels = _problem(1)
    p = np.exp(_pick(_log_softmax(logits), labels))
    expected = -((1 - p) ** gamma) * np.log(p)  # Lin et al. Eq. 4
    task = Classification("c", num_classes=4, loss_type="focal", focal_gamma=gamma)
    np.testing.assert_allclose(_task_loss(task, logits, labels)[0], expected, rtol=1e-4, atol=1e-7)


def test_focal_down_weights_easy_examples():
    """Lin et al.'s defining property: a well-classified example's loss and gradient are
    far smaller than cross-entropy's, a badly-classified one's stay close."""
    easy = jnp.asarray([[6.0, 0.0, 0.0]])  # p_y ≈ 0.995
    hard = jnp.asarray([[-3.0, 3.0, 0.0]])  # p_y ≈ 0.002
    label = jnp.asarray([0])

    def focal(z):
        return losses.focal_cross_entropy(z, label, 2.0)[0]

    def ce(z):
        return losses.softmax_cross_entropy(z, label)[0]

    assert focal(easy) < 1e-4 * ce(easy)
    assert np.linalg.norm(jax.grad(focal)(easy)) < 1e-2 * np.linalg.norm(jax.grad(ce)(easy))
    assert focal(hard) > 0.99 * ce(hard)
    np.testing.assert_allclose(jax.grad(focal)(hard), jax.grad(ce)(hard), rtol=0.05, atol=0.01)


@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0])
def test_logit_adjusted_matches_numpy(tau):
    logits, labels = _problem(2)
    expected = -_pick(_log_softmax(logits + tau * np.log(PRIOR)), labels)  # Menon et al. Eq. 10
    task = Classification(
        "c", num_classes=4, loss_type="logit_adjusted", class_prior=PRIOR, logit_adjust_tau=tau
    )
    np.testing.assert_allclose(_task_loss(task, logits, labels)[0], expected, rtol=1e-5)


def test_class_prior_counts_are_normalised():
    logits, labels = _problem(3)
    counts = tuple(600 * p for p in PRIOR)
    by_counts = Classification("c", num_classes=4, loss_type="logit_adjusted", class_prior=counts)
    by_prior = Classification("c", num_classes=4, loss_type="logit_adjusted", class_prior=PRIOR)
    np.testing.assert_allclose(
        _task_loss(by_counts, logits, labels)[0], _task_loss(by_prior, logits, labels)[0], rtol=1e-6
    )


def test_balanced_softmax_is_logit_adjustment_with_tau_one():
    logits, labels = _problem(4)
    balanced = Classification("c", num_classes=4, loss_type="balanced_softmax", class_prior=PRIOR)
    adjusted = Classification(
        "c", num_classes=4, loss_type="logit_adjusted", class_prior=PRIOR, logit_adjust_tau=1.0
    )
    np.testing.assert_allclose(
        _task_loss(balanced, logits, labels)[0], _task_loss(adjusted, logits, labels)[0], rtol=1e-6
    )
    # Ren et al. Eq. 4 with counts n_j: −log(n_y e^{z_y} / Σ_j n_j e^{z_j}).
    n = 1000 * np.asarray(PRIOR)
    weighted = n * np.exp(logits.astype(np.float64))
    expected = -np.log(_pick(weighted, labels) / weighted.sum(-1))
    np.testing.assert_allclose(
        _task_loss(balanced, logits, labels)[0], expected, rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("loss_type", ["logit_adjusted", "balanced_softmax"])
def test_uniform_prior_gives_cross_entropy(loss_type):
    logits, labels = _problem(5)
    task = Classification(
        "c", num_classes=4, loss_type=loss_type, class_prior=(0.25,) * 4, logit_adjust_tau=1.7
    )
    plain = Classification("c", num_classes=4)
    np.testing.assert_allclose(
        _task_loss(task, logits, labels)[0], _task_loss(plain, logits, labels)[0], rtol=1e-6
    )


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"loss_type": "focal"},
        {"loss_type": "logit_adjusted", "class_prior": PRIOR},
        {"loss_type": "balanced_softmax", "class_prior": PRIOR},
    ],
    ids=lambda e: e.get("loss_type", "cross_entropy"),
)
def test_class_weights_multiply_per_example_losses(extra):
    logits, labels = _problem(6)
    labels[0] = -1  # the ignore label: masked, and the weight gather stays in range
    weights = (0.5, 2.0, 0.0, 3.0)
    weighted = Classification("c", num_classes=4, class_weights=weights, **extra)
    plain = Classification("c", num_classes=4, **extra)
    values, mask = _task_loss(weighted, logits, labels)
    reference, reference_mask = _task_loss(plain, logits, labels)
    np.testing.assert_array_equal(mask, reference_mask)
    np.testing.assert_allclose(
        values[mask], np.asarray(weights)[labels[mask]] * reference[mask], rtol=1e-6
    )
    # The one reduction: Σ w_y ℓ over the valid examples divided by their number.
    mean = losses.masked_mean(jnp.asarray(values), jnp.asarray(mask))
    assert float(mean) == pytest.approx(np.sum(values[mask]) / mask.sum(), rel=1e-6)


@pytest.mark.parametrize("alpha", [None, 0.25, 0.9])
@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_binary_focal_matches_lin_et_al(alpha, gamma):
    rng = np.random.default_rng(7)
    logits = (4 * rng.normal(size=(32, 3))).astype(np.float64)
    target = (rng.random((32, 3)) < 0.3).astype(np.float32)
    p = 1 / (1 + np.exp(-logits))
    p_t = np.where(target == 1, p, 1 - p)
    alpha_t = 1.0 if alpha is None else np.where(target == 1, alpha, 1 - alpha)
    expected = -alpha_t * (1 - p_t) ** gamma * np.log(p_t)  # Eq. 5
    task = BinaryLabels("b", num_labels=3, loss_type="focal", focal_gamma=gamma, focal_alpha=alpha)
    values, mask = _task_loss(task, logits.astype(np.float32), target)
    assert mask.shape == (32, 1)
    np.testing.assert_allclose(values, expected, rtol=1e-4, atol=1e-7)
    if alpha is None and gamma == 0.0:
        bce = losses.sigmoid_binary_cross_entropy(jnp.asarray(logits), jnp.asarray(target))
        np.testing.assert_allclose(values, bce, rtol=1e-6)


@pytest.mark.parametrize(
    "task",
    [
        Classification("c", num_classes=4, loss_type="focal", class_weights=(1, 2, 3, 4)),
        Classification("c", num_classes=4, loss_type="logit_adjusted", class_prior=PRIOR),
        Classification("c", num_classes=4, loss_type="balanced_softmax", class_prior=PRIOR),
        Classification("c", num_classes=4, loss_type="focal", focal_gamma=0.5),
    ],
    ids=["focal_weighted", "logit_adjusted", "balanced_softmax", "focal_gamma_half"],
)
def test_metrics_use_raw_logits_whatever_the_loss(task):
    # The prior shift would make class 0 win for every example; the metrics must not see it.
    logits = jnp.asarray(5.0 * np.eye(4)[[1, 2, 3, 3]] + np.asarray([0.0, 0.1, 0.2, 0.3]))
    labels = jnp.asarray([1, 2, 3, 3])
    stats = jax.jit(task.metric_stats)(logits, labels, jnp.ones(4, bool))
    plain = Classification("c", num_classes=4).metric_stats(logits, labels, jnp.ones(4, bool))
    np.testing.assert_array_equal(stats["confusion"], plain["confusion"])
    assert task.compute_metrics({k: np.asarray(v) for k, v in stats.items()})["accuracy"] == 1.0
    binary = BinaryLabels("b", num_labels=2, loss_type="focal", focal_alpha=0.25)
    pred, target = jnp.asarray([[1.0, -1.0]]), jnp.asarray([[1.0, 0.0]])
    stats = binary.metric_stats(pred, target, jnp.ones(1, bool))
    assert binary.compute_metrics({k: np.asarray(v) for k, v in stats.items()})["accuracy"] == 1.0


@pytest.mark.parametrize(
    "task, target",
    [
        (Classification("c", num_classes=3, loss_type="focal"), [0, 1, 2, 1]),
        (Classification("c", num_classes=3, loss_type="focal", focal_gamma=0.5), [0, 1, 2, 1]),
        (
            Classification("c", num_classes=3, loss_type="logit_adjusted", class_prior=(8, 1, 1)),
            [0, 1, 2, 1],
        ),
        (
            Classification(
                "c", num_classes=3, loss_type="balanced_softmax", class_prior=(1e-6, 0.5, 0.5)
            ),
            [0, 1, 2, 1],
        ),
        (BinaryLabels("b", num_labels=3, loss_type="focal", focal_alpha=0.25), None),
        (BinaryLabels("b", num_labels=3, loss_type="focal", focal_gamma=0.5), None),
    ],
    ids=["focal", "focal_gamma_half", "logit_adjusted", "balanced_softmax", "bin", "bin_half"],
)
def test_losses_jit_and_have_finite_gradients_at_extreme_logits(task, target):
    logits = jnp.asarray([[50.0, -50.0, -50.0], [50.0, -50.0, 0.0], [-50.0, 50.0, -50.0]] * 2)[:4]
    if target is None:
        target = jnp.asarray([[1, 0, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1]], jnp.float32)
    else:
        target = jnp.asarray(target)

    @jax.jit
    def mean_loss(z):
        return losses.masked_mean(*task.loss(z, target, jnp.ones(4, bool)))

    value, grad = jax.value_and_grad(mean_loss)(logits)
    assert np.isfinite(float(value)) and float(value) > 0
    assert np.all(np.isfinite(grad))
    # Agrees with float64 numpy on the same extreme logits where that is representable.
    if isinstance(task, Classification) and task.loss_type == "focal":
        lp = _pick(_log_softmax(np.asarray(logits)), np.asarray(target))
        expected = -((-np.expm1(lp)) ** task.focal_gamma) * lp
        assert float(value) == pytest.approx(np.mean(expected), rel=1e-4)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"loss_type": "softmax"}, r"task 'cls': unknown loss_type 'softmax'; valid: \['cross_"),
        ({"loss_type": "focal", "focal_gamma": -1.0}, "task 'cls': focal_gamma must be"),
        ({"class_weights": (1.0, 2.0)}, r"task 'cls': class_weights must be 3 finite"),
        ({"class_weights": (1.0, -2.0, 1.0)}, r"task 'cls': class_weights must be 3 finite"),
        ({"loss_type": "logit_adjusted"}, "task 'cls': loss_type 'logit_adjusted' needs class_"),
        ({"loss_type": "balanced_softmax"}, "task 'cls': loss_type 'balanced_softmax' needs"),
        ({"class_prior": (0.5, 0.5)}, "task 'cls': class_prior must be 3 finite values > 0"),
        ({"class_prior": (0.5, 0.5, 0.0)}, "task 'cls': class_prior must be 3 finite values > 0"),
        ({"logit_adjust_tau": float("nan")}, "task 'cls': logit_adjust_tau must be finite"),
    ],
)
def test_classification_loss_options_are_validated(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Classification("cls", num_classes=3, **kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"loss_type": "focal_loss"}, r"task 'bin': unknown loss_type 'focal_loss'.*'bce'"),
        ({"focal_gamma": -0.1}, "task 'bin': focal_gamma must be finite and >= 0"),
        ({"focal_alpha": 1.5}, r"task 'bin': focal_alpha must be in \[0, 1\] or None"),
    ],
)
def test_binary_loss_options_are_validated(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BinaryLabels("bin", num_labels=2, **kwargs)


def test_options_accept_lists_and_stay_hashable():
    task = Classification(
        "c", num_classes=3, class_weights=[1, 2, 3], class_prior=[3, 2, 1], top_k=[2]
    )
    assert task.class_weights == (1, 2, 3) and task.top_k == (2,)
    assert hash(task) == hash(
        Classification(
            "c", num_classes=3, class_weights=(1, 2, 3), class_prior=(3, 2, 1), top_k=(2,)
        )
    )
