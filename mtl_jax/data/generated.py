"""Base for builders whose examples are generated offline from a seeded generator."""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

SPLITS = ("train", "test")


def uint8_tensor(shape: tuple[int, ...]) -> tfds.features.Tensor:
    """A uint8 array feature stored as raw bytes (faster to decode than lists; measured:
    `benchmarks/results/README.md`)."""
    return tfds.features.Tensor(shape=shape, dtype=np.uint8, encoding=tfds.features.Encoding.BYTES)


class GeneratedBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Splits `train` and `test` of `builder_config.{train,test}_size` examples.

    Subclasses define `_features()` and `_render(split, num, rng) -> {feature: [num, ...]}`.
    Examples are rendered in vectorised chunks from `np.random.default_rng([seed, split
    index])`, so the same config always gives the same bytes.
    """

    CHUNK = 1000

    def _features(self) -> tfds.features.FeaturesDict:
        raise NotImplementedError

    def _render(self, split: str, num: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self, description=self.__class__.__doc__, features=self._features()
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        return {split: self._generate_examples(split) for split in SPLITS}

    def _generate_examples(self, split):
        config = self.builder_config
        size = config.train_size if split == "train" else config.test_size
        rng = np.random.default_rng([config.seed, SPLITS.index(split)])
        for start in range(0, size, self.CHUNK):
            chunk = self._render(split, min(self.CHUNK, size - start), rng)
            for i in range(len(chunk["image"])):
                yield start + i, {key: value[i] for key, value in chunk.items()}
