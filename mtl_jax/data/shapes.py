"""Shapes: synthetic 32×32 RGB images of one of 10 shapes on a noisy background.

Tasks: `shape` classification (10 classes) and `boundary`, the edge map of the shape —
the seed project's "classification + boundary detection" pairing, fully offline.
Each image draws a random shape class, centre, size, and contrasting foreground and
background colours, and adds Gaussian pixel noise; the same config gives the same bytes.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from mtl_jax.data.edges import mask_boundary
from mtl_jax.data.generated import GeneratedBuilder, uint8_tensor
from mtl_jax.tasks import Boundary, Classification

SHAPE_NAMES = (
    "disc",
    "square",
    "triangle",
    "diamond",
    "ring",
    "plus",
    "cross",
    "wide_ellipse",
    "tall_ellipse",
    "frame",
)
_SIZE = 32
_NOISE_STD = 20.0


def shape_masks(classes: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Boolean masks [N, 32, 32] of shape `classes[i]` at `centres[i]` (y, x) of size `radii[i]`."""
    coords = np.arange(_SIZE, dtype=np.float64) + 0.5
    dy = coords[None, :, None] - centres[:, 0, None, None]
    dx = coords[None, None, :] - centres[:, 1, None, None]
    r = radii[:, None, None]
    ax, ay = np.abs(dx), np.abs(dy)
    dist = np.hypot(dx, dy)
    box = np.maximum(ax, ay)
    candidates = np.stack(
        [
            dist < r,
            box < 0.85 * r,
            (dy < 0.7 * r) & (ax < 0.6 * (dy + r)),
            ax + ay < r,
            (dist < r) & (dist > 0.55 * r),
            ((ax < 0.3 * r) & (ay < r)) | ((ay < 0.3 * r) & (ax < r)),
            ((np.abs(dx - dy) < 0.4 * r) | (np.abs(dx + dy) < 0.4 * r)) & (box < 0.8 * r),
            (dx / r) ** 2 + (dy / (0.5 * r)) ** 2 < 1,
            (dx / (0.5 * r)) ** 2 + (dy / r) ** 2 < 1,
            (box < 0.85 * r) & (box > 0.5 * r),
        ]
    )
    return candidates[classes, np.arange(len(classes))]


def render(num: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Draws `num` examples: `image` uint8 [N, 32, 32, 3], `shape` [N], `boundary` [N, 32, 32]."""
    classes = rng.integers(0, len(SHAPE_NAMES), num)
    centres = rng.uniform(11.0, 21.0, size=(num, 2))
    radii = rng.uniform(6.0, 10.0, size=num)
    mask = shape_masks(classes, centres, radii)
    # Background and foreground colours from opposite halves of the intensity range.
    dark_fg = rng.random(num) < 0.5
    low = rng.uniform(0, 100, size=(num, 3))
    high = rng.uniform(155, 255, size=(num, 3))
    fg = np.where(dark_fg[:, None], low, high)
    bg = np.where(dark_fg[:, None], high, low)
    image = np.where(mask[..., None], fg[:, None, None, :], bg[:, None, None, :])
    image = image + rng.normal(0.0, _NOISE_STD, size=image.shape)
    return {
        "image": np.clip(np.rint(image), 0, 255).astype(np.uint8),
        "shape": classes.astype(np.int64),
        "boundary": mask_boundary(mask),
    }


@dataclasses.dataclass
class ShapesConfig(tfds.core.BuilderConfig):
    """Split sizes and generation seed."""

    train_size: int = 20_000
    test_size: int = 2_000
    seed: int = 0


class Shapes(GeneratedBuilder):
    """Synthetic shapes with boundary maps, generated offline."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        ShapesConfig(name="default", description="20,000 train / 2,000 test images."),
        ShapesConfig(
            name="tiny", description="A small build for tests.", train_size=1_024, test_size=256
        ),
    ]
    DEFAULT_CONFIG_NAME = "default"

    def _features(self):
        return tfds.features.FeaturesDict(
            {
                "image": uint8_tensor((_SIZE, _SIZE, 3)),
                "shape": tfds.features.ClassLabel(names=SHAPE_NAMES),
                "boundary": uint8_tensor((_SIZE, _SIZE)),
            }
        )

    def _render(self, split, num, rng):
        del split  # both splits are drawn the same way, from different seeds
        return render(num, rng)


def tasks() -> dict:
    """The tasks Shapes supports, keyed by name (= feature name)."""
    return {
        "shape": Classification("shape", num_classes=len(SHAPE_NAMES)),
        "boundary": Boundary("boundary", height=_SIZE, width=_SIZE),
    }
