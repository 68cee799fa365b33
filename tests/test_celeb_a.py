"""CelebA through TFDS: a tiny `celeb_a` prepared for real (array_record, JPEG images)
by TFDS's own builder with its download replaced by a few generated faces."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import numpy as np
import PIL.Image
import pytest
import tensorflow_datasets as tfds

from mtl_jax import data
from mtl_jax.data import celeb_a

SPLIT_SIZES = {"train": 5, "validation": 2, "test": 3}


def _attributes(i: int) -> np.ndarray:
    """The attribute vector of generated example `i` (a pattern that differs per example)."""
    return ((np.arange(len(celeb_a.ATTRIBUTES)) + i) % 3 == 0).astype(np.uint8)


def _colour(i: int) -> tuple[int, int, int]:
    """A flat colour that encodes `i` (JPEG keeps flat colours within a few levels)."""
    return (20 + 40 * i, 200 - 30 * i, 128)


def _fake_split_generators(self, dl_manager):
    """Stands in for the Google Drive download: flat-colour 218×178 faces."""
    del self, dl_manager
    from tensorflow_datasets.datasets.celeb_a import celeb_a_dataset_builder as builder

    def examples(split, size):
        for i in range(size):
            image = np.broadcast_to(np.asarray(_colour(i), np.uint8), (218, 178, 3))
            yield (
                f"{split}-{i}",
                {
                    "image": PIL.Image.fromarray(np.ascontiguousarray(image)),
                    "landmarks": dict.fromkeys(builder.LANDMARK_HEADINGS, 0),
                    "attributes": {
                        name: bool(v)
                        for name, v in zip(builder.ATTR_HEADINGS, _attributes(i), strict=True)
                    },
                    "identity": {"Identity_No": i},
                },
            )

    return {split: examples(split, size) for split, size in SPLIT_SIZES.items()}


@pytest.fixture(scope="module")
def celeb_a_dir(tmp_path_factory):
    from tensorflow_datasets.datasets.celeb_a import celeb_a_dataset_builder as builder

    data_dir = str(tmp_path_factory.mktemp("celeb_a_tfds"))
    with mock.patch.object(builder.Builder, "_split_generators", _fake_split_generators):
        tfds.builder("celeb_a", data_dir=data_dir, file_format="array_record").download_and_prepare(
            download_config=tfds.download.DownloadConfig(try_download_gcs=False)
        )
    return data_dir


def test_attribute_names_are_tfds_order():
    from tensorflow_datasets.datasets.celeb_a import celeb_a_dataset_builder as builder

    assert tuple(builder.ATTR_HEADINGS) == celeb_a.ATTRIBUTES


def test_reads_resized_images_and_aligned_attributes(celeb_a_dir):
    source = data.prepare(data.DATASETS["celeb_a"], config="auto", data_dir=celeb_a_dir)
    assert source.name == "celeb_a" and source.splits == ("train", "validation", "test")
    for split, size in SPLIT_SIZES.items():
        arrays = data.load_split(source, split)
        assert arrays["image"].shape == (size, 64, 64, 3) and arrays["image"].dtype == np.uint8
        assert arrays["attributes"].shape == (size, 40)
        seen = set()
        for k in range(size):
            # TFDS stores examples in hashed-key order: recover each one's index from its colour.
            red = float(arrays["image"][k, ..., 0].mean())
            i = round((red - 20) / 40)
            seen.add(i)
            np.testing.assert_allclose(arrays["image"][k].mean(axis=(0, 1)), _colour(i), atol=3)
            np.testing.assert_array_equal(arrays["attributes"][k], _attributes(i))
            for j, name in enumerate(celeb_a.ATTRIBUTES):
                assert arrays[name][k, 0] == _attributes(i)[j]
        assert seen == set(range(size))


def test_split_is_cached_after_the_first_read(celeb_a_dir):
    source = data.prepare(data.DATASETS["celeb_a"], config="default", data_dir=celeb_a_dir)
    first = data.load_split(source, "test")
    cached = sorted(p.name for p in Path(celeb_a_dir).glob("mtl_jax_cache/celeb_a-*/*.npy"))
    assert "test-image.npy" in cached and "test-attributes.npy" in cached
    with mock.patch.object(celeb_a, "_decode", side_effect=AssertionError("decoded again")):
        again = data.load_split(source, "test")
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])


def test_tasks_fit_the_arrays_and_batches(celeb_a_dir):
    source = data.prepare(data.DATASETS["celeb_a"], config="default", data_dir=celeb_a_dir)
    train = data.load_split(source, "train")
    tasks = celeb_a.tasks()
    assert len(tasks) == 41 and tasks["attributes"].label_names == celeb_a.ATTRIBUTES
    for name, task in tasks.items():
        task.check_targets(train[name])
    batch = next(data.train_batches(train, ["Smiling", "attributes"], batch_size=4, seed=0))
    assert batch["image"].shape == (4, 64, 64, 3) and batch["image"].max() <= 1.0
    assert batch["targets"]["Smiling"].shape == (4, 1)
    assert batch["targets"]["attributes"].shape == (4, 40)


def test_missing_or_unknown(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        data.prepare(data.DATASETS["celeb_a"], config="default", data_dir=str(tmp_path))
    message = str(error.value)
    assert "dataset 'celeb_a'" in message and str(tmp_path) in message
    assert "tfds build celeb_a --file_format=array_record" in message
    with pytest.raises(ValueError, match=r"no config '128'; valid configs: \['default'\]"):
        data.prepare(data.DATASETS["celeb_a"], config="128", data_dir=str(tmp_path))
