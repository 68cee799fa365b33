"""Shapes: synthetic 32×32 RGB images of one of 10 shapes on a noisy background.

Each image draws a random shape class, centre, size, and contrasting foreground and
background colours, and adds Gaussian pixel noise; the same config gives the same bytes.
The scene is a flat background plane at depth 2 with the shape raised on it as part of a
sphere (radius 1.25× the shape's size, so it covers every shape pixel). Tasks, one of
every kind, fully offline:

* `shape`: the shape class (10 classes) and `colour`: the foreground's colour class
  (6 classes: darker or lighter than the background × its strongest RGB channel);
* `boundary`: the edge map of the shape — with `shape`, the seed project's
  "classification + boundary detection" pairing;
* `segmentation`: per pixel, 0 for background and 1 + the shape class on the shape
  (11 classes);
* `depth`: the depth-like map of the scene, 2 on the background and 2 − (sphere
  height) on the shape, so in [1, 2] and valid everywhere;
* `normal`: the unit surface normals of that scene, (0, 0, 1) on the background and
  the sphere's normal (x right, y down, z towards the viewer) on the shape.

Depth and normals are stored as float16 (their error, below 1e-3, is far below what
the tasks resolve).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from mtl_jax.data.edges import mask_boundary
from mtl_jax.data.generated import GeneratedBuilder, uint8_tensor
from mtl_jax.tasks import Boundary, Classification, Depth, Segmentation, SurfaceNormal, Task

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
COLOUR_NAMES = ("dark_red", "dark_green", "dark_blue", "light_red", "light_green", "light_blue")
NUM_SEGMENTATION_CLASSES = 1 + len(SHAPE_NAMES)  # background + shapes
_SIZE = 32
_NOISE_STD = 20.0
_BACKGROUND_DEPTH = 2.0
# The sphere's radius over the shape's size: every shape lies within 1.24 sizes of its
# centre (the triangle's base corners), so the sphere covers all of it.
_SPHERE_RADIUS = 1.25


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


def surface_maps(
    mask: np.ndarray, centres: np.ndarray, radii: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Depth [N, 32, 32, 1] and unit normals [N, 32, 32, 3] of the shapes-on-a-plane scene.

    On a shape pixel at offset (dx, dy) from the centre, in units of the sphere radius
    R = 1.25 · radius: height h = sqrt(1 − dx² − dy²), depth 2 − h, normal (dx, dy, h).
    """
    coords = np.arange(_SIZE, dtype=np.float64) + 0.5
    sphere = _SPHERE_RADIUS * radii[:, None, None]
    dy = np.broadcast_to((coords[None, :, None] - centres[:, 0, None, None]) / sphere, mask.shape)
    dx = np.broadcast_to((coords[None, None, :] - centres[:, 1, None, None]) / sphere, mask.shape)
    height = np.sqrt(np.clip(1.0 - dx**2 - dy**2, 0.0, None))
    depth = np.where(mask, _BACKGROUND_DEPTH - height, _BACKGROUND_DEPTH)
    normal = np.where(
        mask[..., None], np.stack([dx, dy, height], axis=-1), np.asarray([0.0, 0.0, 1.0])
    )
    return depth[..., None], normal


def render(num: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Draws `num` examples of every feature (see the module docstring).

    Returns `image` uint8 [N, 32, 32, 3], `shape` and `colour` int64 [N], `boundary`
    uint8 [N, 32, 32], `segmentation` int8 [N, 32, 32], `depth` float16 [N, 32, 32, 1]
    and `normal` float16 [N, 32, 32, 3]. The dense maps are functions of the drawn shape,
    so adding them left the image, `shape` and `boundary` values of version 1.0.0
    unchanged (the random draws are the same).
    """
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
    depth, normal = surface_maps(mask, centres, radii)
    return {
        "image": np.clip(np.rint(image), 0, 255).astype(np.uint8),
        "shape": classes.astype(np.int64),
        "colour": (3 * ~dark_fg + np.argmax(fg, axis=1)).astype(np.int64),
        "boundary": mask_boundary(mask),
        "segmentation": np.where(mask, 1 + classes[:, None, None], 0).astype(np.int8),
        "depth": depth.astype(np.float16),
        "normal": normal.astype(np.float16),
    }


@dataclasses.dataclass
class ShapesConfig(tfds.core.BuilderConfig):
    """Split sizes and generation seed."""

    train_size: int = 20_000
    test_size: int = 2_000
    seed: int = 0


class Shapes(GeneratedBuilder):
    """Synthetic shapes with classification and dense maps, generated offline."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release.",
        "1.1.0": "Adds colour, segmentation, depth and normal; image, shape, boundary unchanged.",
    }
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
                "colour": tfds.features.ClassLabel(names=COLOUR_NAMES),
                "boundary": uint8_tensor((_SIZE, _SIZE)),
                "segmentation": _tensor((_SIZE, _SIZE), np.int8),
                "depth": _tensor((_SIZE, _SIZE, 1), np.float16),
                "normal": _tensor((_SIZE, _SIZE, 3), np.float16),
            }
        )

    def _render(self, split, num, rng):
        del split  # both splits are drawn the same way, from different seeds
        return render(num, rng)


def _tensor(shape: tuple[int, ...], dtype) -> tfds.features.Tensor:
    return tfds.features.Tensor(shape=shape, dtype=dtype, encoding=tfds.features.Encoding.BYTES)


def tasks() -> dict[str, Task]:
    """The tasks Shapes supports, keyed by name (= feature name)."""
    size = {"height": _SIZE, "width": _SIZE}
    return {
        "shape": Classification("shape", num_classes=len(SHAPE_NAMES)),
        "colour": Classification("colour", num_classes=len(COLOUR_NAMES)),
        "boundary": Boundary("boundary", **size),
        "segmentation": Segmentation("segmentation", NUM_SEGMENTATION_CLASSES, **size),
        "depth": Depth("depth", **size),
        "normal": SurfaceNormal("normal", **size),
    }
