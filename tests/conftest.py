"""Shared fixtures: the tiny offline datasets are built once per test session."""

from __future__ import annotations

import os

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
