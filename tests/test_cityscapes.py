"""CityScapes in the MTAN layout: reading the real on-disk format, errors, augmentation."""

from __future__ import annotations

import numpy as np
import pytest

from mtl_jax import data
from mtl_jax.data import cityscapes

H, W = cityscapes.HEIGHT, cityscapes.WIDTH


@pytest.mark.parametrize("label_dir", ["label_7", "label"])
def test_reads_either_label_directory(tmp_path, write_mtan_layout, label_dir):
    root = write_mtan_layout(
        tmp_path / "cityscapes", H, W, {label_dir: "label", "depth": "depth"}, train=3, val=2
    )
    source = data.prepare(data.DATASETS["cityscapes"], config="auto", data_dir=str(tmp_path))
    assert source.name == "cityscapes" and source.location == str(root)
    train, test = data.load_split(source, "train"), data.load_split(source, "test")
    assert set(train) == {"image", "segmentation", "depth"}
    assert train["image"].shape == (3, H, W, 3) and test["depth"].shape == (2, H, W, 1)
    for i in range(2):
        np.testing.assert_array_equal(
            test["segmentation"][i], np.load(root / "val" / label_dir / f"{i}.npy")
        )
        np.testing.assert_allclose(
            test["depth"][i], np.load(root / "val" / "depth" / f"{i}.npy"), rtol=1e-7
        )
    for name, task in cityscapes.tasks().items():
        task.check_targets(train[name])


def test_prefers_label_7_and_rejects_other_class_counts(tmp_path, write_mtan_layout):
    root = write_mtan_layout(
        tmp_path / "cityscapes", H, W, {"label_7": "label", "depth": "depth"}, train=1, val=1
    )
    # A 19-class label directory next to it is ignored.
    (root / "val" / "label").mkdir()
    np.save(root / "val" / "label" / "0.npy", np.full((H, W), 18.0))
    source = data.prepare(data.DATASETS["cityscapes"], config="default", data_dir=str(tmp_path))
    test = data.load_split(source, "test")
    cityscapes.tasks()["segmentation"].check_targets(test["segmentation"])
    test["segmentation"][0, 0, 0] = 7
    with pytest.raises(ValueError, match=r"'segmentation': 1 labels with values \[7\]"):
        cityscapes.tasks()["segmentation"].check_targets(test["segmentation"])


def test_missing_data_and_wrong_resolution(tmp_path, write_mtan_layout):
    with pytest.raises(FileNotFoundError) as error:
        data.prepare(data.DATASETS["cityscapes"], config="default", data_dir=str(tmp_path))
    message = str(error.value)
    assert "dataset 'cityscapes'" in message and str(tmp_path / "cityscapes") in message
    assert "label_7/ or label/" in message and "cityscapes2.zip" in message
    # The 256×512 release is not the benchmark's resolution.
    write_mtan_layout(
        tmp_path / "cityscapes", 2 * H, 2 * W, {"label_7": "label", "depth": "depth"}, train=1
    )
    source = data.prepare(data.DATASETS["cityscapes"], config="default", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"has shape \(256, 512, 3\), expected \(128, 256, 3\)"):
        data.load_split(source, "train")


def test_augmentation_keeps_labels_and_scales_depth(tmp_path, write_mtan_layout):
    write_mtan_layout(
        tmp_path / "cityscapes", H, W, {"label_7": "label", "depth": "depth"}, train=4, val=1
    )
    source = data.prepare(data.DATASETS["cityscapes"], config="default", data_dir=str(tmp_path))
    train = data.load_split(source, "train")
    spec = data.DATASETS["cityscapes"]
    batches = data.train_batches(
        train, ["depth", "segmentation"], batch_size=4, seed=1, augment=spec.augment
    )
    valid = train["depth"][train["depth"] > 0]
    candidates = np.concatenate([valid / np.float32(s) for s in (1.0, 1.2, 1.5)])
    for _ in range(3):
        batch = next(batches)
        depth = batch["targets"]["depth"]
        assert np.all(np.isin(depth[depth > 0], candidates))
        labels = batch["targets"]["segmentation"]
        assert labels.dtype == np.int32 and labels.min() >= -1 and labels.max() < 7
