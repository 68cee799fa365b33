"""Shared fixtures: the tiny offline datasets, built once per test session, and writers
of a few examples in the real on-disk formats."""

from __future__ import annotations

import os

import numpy as np
import pytest

from mtl_jax import data


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """A TFDS data dir holding the `tiny` builds, also exported as MTL_JAX_DATA_DIR."""
    path = tmp_path_factory.mktemp("tfds")
    os.environ["MTL_JAX_DATA_DIR"] = str(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_multi_mnist(data_dir):
    builder = data.prepare(data.DATASETS["multi_mnist"], config="tiny", data_dir=data_dir)
    return {split: data.load_split(builder, split) for split in ("train", "test")}


@pytest.fixture(scope="session")
def tiny_shapes(data_dir):
    builder = data.prepare(data.DATASETS["shapes"], config="tiny", data_dir=data_dir)
    return {split: data.load_split(builder, split) for split in ("train", "test")}


def _write_mtan_split(directory, num, height, width, features, rng):
    """Writes `num` examples of `features` ({dir name: kind}) as MTAN's `.npy` files."""
    for name in ("image", *features):
        (directory / name).mkdir(parents=True, exist_ok=True)
    for i in range(num):
        # As released: float64 RGB in [0, 1] holding k/255 values, channels last.
        image = rng.integers(0, 256, (height, width, 3)) / 255.0
        np.save(directory / "image" / f"{i}.npy", image)
        for name, kind in features.items():
            if kind == "label":  # float class indices, -1 = unlabelled
                array = rng.integers(-1, 7, (height, width)).astype(np.float64)
            elif kind == "depth":  # [H, W, 1], 0 = missing
                array = rng.uniform(0.5, 5.0, (height, width, 1))
                array[rng.random((height, width)) < 0.1] = 0.0
            else:  # unit normals, all-zero = missing
                array = rng.normal(size=(height, width, 3))
                array /= np.linalg.norm(array, axis=-1, keepdims=True)
                array[rng.random((height, width)) < 0.1] = 0.0
            np.save(directory / name / f"{i}.npy", array)


@pytest.fixture(scope="session")
def write_mtan_layout():
    """`write(root, height, width, features, train=2, val=1, seed=0)`: a few examples in
    the MTAN layout (`root/{train,val}/<dir>/<i>.npy`); `features` is `{dir: kind}` with
    kind "label", "depth" or "normal" (the image is always written)."""

    def write(root, height, width, features, *, train=2, val=1, seed=0):
        rng = np.random.default_rng(seed)
        _write_mtan_split(root / "train", train, height, width, features, rng)
        _write_mtan_split(root / "val", val, height, width, features, rng)
        return root

    return write
