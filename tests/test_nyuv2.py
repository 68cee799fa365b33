"""NYUv2 in the MTAN layout: reading the real on-disk format, errors, augmentation."""

from __future__ import annotations

import numpy as np
import pytest

from mtl_jax import data
from mtl_jax.data import augment, nyuv2

FEATURES = {"label": "label", "depth": "depth", "normal": "normal"}
H, W = nyuv2.HEIGHT, nyuv2.WIDTH


@pytest.fixture(scope="module")
def nyuv2_dir(tmp_path_factory, write_mtan_layout):
    """A data dir whose `nyuv2/` holds 2 train and 1 val examples at the real 288×384."""
    data_dir = tmp_path_factory.mktemp("nyuv2_data")
    write_mtan_layout(data_dir / "nyuv2", H, W, FEATURES, train=2, val=1)
    return data_dir


@pytest.fixture(scope="module")
def nyuv2_source(nyuv2_dir):
    return data.prepare(data.DATASETS["nyuv2"], config="auto", data_dir=str(nyuv2_dir))


def test_reads_the_mtan_files_exactly(nyuv2_dir, nyuv2_source):
    assert nyuv2_source.name == "nyuv2" and nyuv2_source.builder_config.name == "default"
    train = data.load_split(nyuv2_source, "train")
    test = data.load_split(nyuv2_source, "test")  # MTAN's val/
    root = nyuv2_dir / "nyuv2"
    for split, arrays, n in (("train", train, 2), ("val", test, 1)):
        assert arrays["image"].shape == (n, H, W, 3) and arrays["image"].dtype == np.uint8
        assert arrays["segmentation"].shape == (n, H, W)
        assert arrays["segmentation"].dtype == np.int8
        assert arrays["depth"].shape == (n, H, W, 1) and arrays["normal"].shape == (n, H, W, 3)
        for i in range(n):
            # The files' k/255 floats are stored exactly as uint8 k.
            np.testing.assert_array_equal(
                arrays["image"][i] / 255.0, np.load(root / split / "image" / f"{i}.npy")
            )
            np.testing.assert_array_equal(
                arrays["segmentation"][i], np.load(root / split / "label" / f"{i}.npy")
            )
            np.testing.assert_allclose(
                arrays["depth"][i], np.load(root / split / "depth" / f"{i}.npy"), rtol=1e-7
            )
            np.testing.assert_allclose(
                arrays["normal"][i], np.load(root / split / "normal" / f"{i}.npy"), rtol=1e-7
            )
    tasks = nyuv2.tasks()
    for name, task in tasks.items():
        task.check_targets(train[name])
        assert train[name].shape[1:] == task.target_shape
    batch = next(data.eval_batches(test, sorted(tasks), batch_size=2))
    assert batch["image"].max() <= 1.0 and batch["targets"]["segmentation"].dtype == np.int32
    assert list(batch["valid"]) == [True, False]


def test_data_dir_may_be_the_dataset_root(nyuv2_dir):
    source = data.prepare(
        data.DATASETS["nyuv2"], config="default", data_dir=str(nyuv2_dir / "nyuv2")
    )
    assert len(data.load_split(source, "test")["image"]) == 1


def test_missing_data_says_where_and_how(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        data.prepare(data.DATASETS["nyuv2"], config="default", data_dir=str(tmp_path))
    message = str(error.value)
    assert "dataset 'nyuv2'" in message
    assert str(tmp_path / "nyuv2") in message
    assert "lorenmt/mtan" in message and "nyuv2.zip" in message


def test_missing_file_wrong_shape_and_bad_labels(tmp_path, write_mtan_layout):
    write_mtan_layout(tmp_path / "nyuv2", H, W, FEATURES, train=2, val=1)
    source = data.prepare(data.DATASETS["nyuv2"], config="default", data_dir=str(tmp_path))
    (tmp_path / "nyuv2" / "train" / "normal" / "1.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"normal/1\.npy' is missing"):
        data.load_split(source, "train")
    np.save(tmp_path / "nyuv2" / "val" / "depth" / "0.npy", np.ones((H // 2, W // 2, 1)))
    with pytest.raises(ValueError, match=r"depth/0\.npy' has shape \(144, 192, 1\), expected"):
        data.load_split(source, "test")
    np.save(tmp_path / "nyuv2" / "val" / "depth" / "0.npy", np.ones((H, W, 1)))
    np.save(tmp_path / "nyuv2" / "val" / "label" / "0.npy", np.full((H, W), 0.5))
    with pytest.raises(ValueError, match="labels that are not integers"):
        data.load_split(source, "test")
    np.save(tmp_path / "nyuv2" / "val" / "label" / "0.npy", np.zeros((H, W)))
    np.save(tmp_path / "nyuv2" / "val" / "image" / "0.npy", np.full((H, W, 3), 128.0))
    with pytest.raises(ValueError, match=r"image/0\.npy' holds image values outside \[0, 1\]"):
        data.load_split(source, "test")
    with pytest.raises(ValueError, match=r"no split 'validation'; splits: \['train', 'test'\]"):
        data.load_split(source, "validation")
    with pytest.raises(ValueError, match=r"no config 'tiny'; valid configs: \['default'\]"):
        data.prepare(data.DATASETS["nyuv2"], config="tiny", data_dir=str(tmp_path))


def _ramp(height, width):
    """An image linear in (row, col): bilinear resizing reproduces it exactly."""
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    return np.stack([rows, cols, rows + 2 * cols], axis=-1).astype(np.float32)


def test_rescale_crop_geometry_and_depth_scaling():
    height, width = 12, 16
    scale, top, left = 1.5, 3, 5
    h, w = int(height / scale), int(width / scale)  # 8 × 10 window
    labels = (np.arange(height)[:, None] * 100 + np.arange(width)[None, :]).astype(np.int16)
    depth = np.full((height, width, 1), 3.0, np.float32)
    depth[0] = 0.0  # a missing row, outside the window, and one inside:
    depth[top + 1] = 0.0
    example = {"image": _ramp(height, width), "segmentation": labels, "depth": depth}
    kinds = {"image": augment.IMAGE, "segmentation": augment.LABEL, "depth": augment.DEPTH}
    out = augment.transform_example(example, kinds, scale=scale, top=top, left=left, flip=False)
    # Bilinear with align_corners=True: output (i, j) samples the window at
    # (top + i (h−1)/(H−1), left + j (w−1)/(W−1)).
    rows = top + np.arange(height) * (h - 1) / (height - 1)
    cols = left + np.arange(width) * (w - 1) / (width - 1)
    np.testing.assert_allclose(out["image"][..., 0], np.broadcast_to(rows[:, None], (12, 16)))
    np.testing.assert_allclose(out["image"][..., 1], np.broadcast_to(cols[None, :], (12, 16)))
    # Nearest: output (i, j) takes window pixel (floor(i h/H), floor(j w/W)); labels stay labels.
    src_rows = top + np.floor(np.arange(height) * h / height).astype(int)
    src_cols = left + np.floor(np.arange(width) * w / width).astype(int)
    np.testing.assert_array_equal(out["segmentation"], labels[np.ix_(src_rows, src_cols)])
    assert out["segmentation"].dtype == np.int16
    # Depth: nearest, divided by the scale; missing (zero) pixels stay missing.
    expected = depth[np.ix_(src_rows, src_cols)] / scale
    np.testing.assert_allclose(out["depth"], expected, rtol=1e-6)
    assert np.any(out["depth"] == 0) and set(np.unique(out["depth"])) == {0.0, np.float32(2.0)}


def test_scale_one_is_identity_and_flip_negates_x_normal():
    rng = np.random.default_rng(0)
    normal = rng.normal(size=(6, 8, 3)).astype(np.float32)
    example = {
        "image": rng.random((6, 8, 3)).astype(np.float32),
        "segmentation": rng.integers(-1, 13, (6, 8)).astype(np.int8),
        "depth": rng.random((6, 8, 1)).astype(np.float32),
        "normal": normal,
    }
    kinds = nyuv2.LAYOUT.kinds
    same = augment.transform_example(example, kinds, scale=1.0, top=0, left=0, flip=False)
    for key in example:
        np.testing.assert_array_equal(same[key], example[key])
    flipped = augment.transform_example(example, kinds, scale=1.0, top=0, left=0, flip=True)
    for key in ("image", "segmentation", "depth"):
        np.testing.assert_array_equal(flipped[key], example[key][:, ::-1])
    np.testing.assert_array_equal(flipped["normal"][..., 0], -normal[:, ::-1, 0])
    np.testing.assert_array_equal(flipped["normal"][..., 1:], normal[:, ::-1, 1:])
    assert np.shares_memory(flipped["normal"], normal) is False


def test_training_batches_are_augmented_deterministically(nyuv2_source):
    train = data.load_split(nyuv2_source, "train")
    names = ["depth", "normal", "segmentation"]
    spec = data.DATASETS["nyuv2"]

    def batches(seed, augment_fn):
        it = data.train_batches(train, names, batch_size=2, seed=seed, augment=augment_fn)
        return [next(it) for _ in range(4)]

    first, again = batches(0, spec.augment), batches(0, spec.augment)
    plain = batches(0, None)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["targets"]["normal"], b["targets"]["normal"])
    assert any(
        not np.array_equal(a["image"], p["image"]) for a, p in zip(first, plain, strict=True)
    )
    # Every augmented depth is an original one divided by one of the scales, or still 0.
    valid = train["depth"][train["depth"] > 0]
    candidates = np.concatenate([valid / np.float32(s) for s in augment.MTAN_SCALES])
    for batch in first:
        targets = batch["targets"]
        assert batch["image"].shape == (2, H, W, 3) and batch["image"].dtype == np.float32
        assert batch["image"].min() >= 0.0 and batch["image"].max() <= 1.0
        assert set(np.unique(targets["segmentation"])) <= set(np.unique(train["segmentation"]))
        depth = targets["depth"]
        assert np.all(np.isin(depth[depth > 0], candidates))
        for name, task in nyuv2.tasks().items():
            task.check_targets(np.asarray(targets[name]))
