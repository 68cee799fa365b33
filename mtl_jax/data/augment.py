"""Training augmentations on host arrays: the standard NYUv2 / CityScapes one, and a
random translation for the offline image sets (`translate`, below).

Random rescale-crop and horizontal flip, as in the MTAN-protocol code of CAGrad, Nash-MTL
and FAMO (`RandomScaleCrop`, credited to Jialong Wu, lorenmt/mtan issue #34): per
example, a scale `s` is drawn from {1.0, 1.2, 1.5}, a window of `int(H/s) × int(W/s)`
pixels at a uniformly drawn position is resized back to `H × W`, depth is divided by `s`
(the zoomed scene looks `s` times closer), and with probability 1/2 every map is mirrored
left–right with the x component of the normals negated.

Resizing follows PyTorch's `F.interpolate`, which that code uses: images and normals
bilinearly with `align_corners=True`, labels and depth by (legacy) nearest neighbour, so
labels stay labels and invalid (zero) depth stays invalid. Normals are not
re-normalised, as in the reference code.

Feature arrays are NHWC: image [B, H, W, C] (uint8, or float in [0, 1]), label
[B, H, W], depth [B, H, W, 1], normal [B, H, W, 3] with channel 0 = x.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import numpy as np

from mtl_jax.data.pipeline import Arrays, Augment

# How each feature is transformed, by kind.
IMAGE = "image"  # bilinear
LABEL = "label"  # nearest
DEPTH = "depth"  # nearest, divided by the scale
NORMAL = "normal"  # bilinear, x negated when flipped
KINDS = (IMAGE, LABEL, DEPTH, NORMAL)

MTAN_SCALES = (1.0, 1.2, 1.5)


def _bilinear_taps(size: int, start: int, length: int):
    """Source rows (lo, hi) and weights of hi for `align_corners=True` resizing of
    `[start, start + length)` to `size` samples."""
    step = (length - 1) / (size - 1) if size > 1 else 0.0
    position = np.arange(size) * step
    lo = np.floor(position).astype(np.int64)
    hi = np.minimum(lo + 1, length - 1)
    return start + lo, start + hi, (position - lo)


def _nearest_taps(size: int, start: int, length: int) -> np.ndarray:
    """Source indices of legacy nearest resizing, `min(floor(i · length/size), length−1)`,
    computed in float32 as PyTorch does."""
    scale = np.float32(length) / np.float32(size)
    index = np.floor(np.arange(size, dtype=np.float32) * scale).astype(np.int64)
    return start + np.minimum(index, length - 1)


def resize_crop(
    array: np.ndarray, top: int, left: int, height: int, width: int, *, bilinear: bool
) -> np.ndarray:
    """Resizes the window `array[top:top+height, left:left+width]` back to `array`'s size.

    Args:
      array: [H, W] or [H, W, C] map of one example.
      top, left, height, width: the window, inside the map.
      bilinear: bilinear with `align_corners=True` if true (computed in float32; integer
        maps are rounded back), else nearest neighbour. The dtype is kept.

    Returns:
      The resized window, [H, W, ...].
    """
    full_h, full_w = array.shape[:2]
    if (top, left, height, width) == (0, 0, full_h, full_w):
        return array  # both interpolations are exactly the identity here
    if not bilinear:
        rows = _nearest_taps(full_h, top, height)
        cols = _nearest_taps(full_w, left, width)
        return array[rows[:, None], cols[None, :]]
    # Separable: interpolate whole rows, then columns (2 + 2 gathers, not 4 of the map).
    r0, r1, fr = _bilinear_taps(full_h, top, height)
    c0, c1, fc = _bilinear_taps(full_w, left, width)
    extra = (None,) * (array.ndim - 2)  # broadcast weights over channels
    fr = fr.astype(np.float32)[(slice(None), None, *extra)]
    fc = fc.astype(np.float32)[(None, slice(None), *extra)]
    a = array.astype(np.float32, copy=False)
    rows = a[r0] + (a[r1] - a[r0]) * fr
    left_cols, right_cols = np.take(rows, c0, axis=1), np.take(rows, c1, axis=1)
    resized = left_cols + (right_cols - left_cols) * fc
    if np.issubdtype(array.dtype, np.integer):  # e.g. uint8 images stay uint8
        return np.rint(resized).astype(array.dtype)
    return resized.astype(array.dtype, copy=False)


def transform_example(
    example: Mapping[str, np.ndarray],
    kinds: Mapping[str, str],
    *,
    scale: float,
    top: int,
    left: int,
    flip: bool,
) -> dict[str, np.ndarray]:
    """Rescale-crops (window `int(H/scale) × int(W/scale)` at `(top, left)`) and optionally
    flips one example's maps; features not in `kinds` are returned unchanged."""
    out = dict(example)
    for key, kind in kinds.items():
        if key not in example:
            continue
        array = example[key]
        height, width = int(array.shape[0] / scale), int(array.shape[1] / scale)
        array = resize_crop(array, top, left, height, width, bilinear=kind in (IMAGE, NORMAL))
        if kind == DEPTH:
            array = array / np.asarray(scale, array.dtype)
        if flip:
            array = array[:, ::-1].copy()
            if kind == NORMAL:
                array[..., 0] = -array[..., 0]
        out[key] = array
    return out


def rescale_crop_flip(
    arrays: Arrays,
    rng: np.random.Generator,
    *,
    kinds: Mapping[str, str],
    scales: Sequence[float] = MTAN_SCALES,
) -> Arrays:
    """The MTAN-protocol augmentation of a batch of raw features (see the module doc).

    Args:
      arrays: `{feature: [B, H, W, ...]}`; every feature named in `kinds` that is present
        is transformed with the same window and flip per example; others pass unchanged.
      rng: the batch's generator (the draws of each example: scale, top, left, flip).
      kinds: `{feature: IMAGE | LABEL | DEPTH | NORMAL}`.
      scales: the zoom factors to draw from.

    Returns:
      The augmented features (new arrays; the input is not modified). uint8 images come
      out as float32 in [0, 1], which `to_batch` keeps as they are.
    """
    present = [key for key in kinds if key in arrays]
    if not present:
        return dict(arrays)
    arrays = dict(arrays)
    for key in present:
        if kinds[key] == IMAGE and arrays[key].dtype == np.uint8:
            # Interpolate in float, as the reference code does, rather than re-quantising.
            arrays[key] = arrays[key].astype(np.float32) / 255.0
    batch, full_h, full_w = arrays[present[0]].shape[:3]
    examples = []
    for i in range(batch):
        scale = float(scales[rng.integers(len(scales))])
        height, width = int(full_h / scale), int(full_w / scale)
        top = int(rng.integers(0, full_h - height + 1))
        left = int(rng.integers(0, full_w - width + 1))
        flip = bool(rng.random() < 0.5)
        example = {key: arrays[key][i] for key in present}
        examples.append(
            transform_example(example, kinds, scale=scale, top=top, left=left, flip=flip)
        )
    out = dict(arrays)
    for key in present:
        out[key] = np.stack([example[key] for example in examples])
    return out


def make_augment(kinds: Mapping[str, str], scales: Sequence[float] = MTAN_SCALES) -> Augment:
    """`rescale_crop_flip` bound to a dataset's feature kinds, for `DatasetSpec.augment`.

    Raises:
      ValueError: for a kind not in `KINDS` (the message names the feature).
    """
    bad = {key: kind for key, kind in kinds.items() if kind not in KINDS}
    if bad:
        raise ValueError(f"unknown augmentation kind(s) {bad}; valid kinds: {list(KINDS)}")
    return functools.partial(rescale_crop_flip, kinds=dict(kinds), scales=tuple(scales))


def translate(
    arrays: Arrays, rng: np.random.Generator, *, features: Sequence[str], max_shift: int
) -> Arrays:
    """Shifts every example's maps by the same random `(dy, dx)`, zero-filled.

    Per example, `dy` and `dx` are drawn uniformly from `[-max_shift, max_shift]` (the
    draws of the batch: one `[B, 2]` integer array), and every feature of `features`
    that is present is moved by them together, `out[y, x] = in[y - dy, x - dx]`, with 0
    where that falls outside the map. So a label map (e.g. a boundary map) stays aligned
    with its image; vector labels pass unchanged. No flips: for digits they would change
    the class, and left/right labels would swap.

    Args:
      arrays: `{feature: [B, H, W, ...]}`; the features named in `features` share H, W.
      rng: the batch's generator.
      features: the maps to shift (e.g. `("image", "boundary")`).
      max_shift: the largest shift in pixels along each axis (>= 0).

    Returns:
      The augmented features (new arrays; dtypes kept, the input is not modified).

    Example:
      >>> image = np.zeros((1, 3, 4), np.uint8)
      >>> image[0, 1, 1] = 9
      >>> rng = np.random.default_rng(4)  # draws (dy, dx) = (1, 1)
      >>> translate({"image": image}, rng, features=["image"], max_shift=1)["image"][0]
      array([[0, 0, 0, 0],
             [0, 0, 0, 0],
             [0, 0, 9, 0]], dtype=uint8)
    """
    present = [key for key in features if key in arrays]
    out = dict(arrays)
    if not present:
        return out
    batch, height, width = arrays[present[0]].shape[:3]
    shifts = rng.integers(-max_shift, max_shift + 1, size=(batch, 2))
    # Source row/column of every output pixel in the zero-padded map (padding k each side).
    rows = np.arange(height)[None, :] - shifts[:, :1] + max_shift  # [B, H]
    cols = np.arange(width)[None, :] - shifts[:, 1:] + max_shift  # [B, W]
    examples = np.arange(batch)[:, None, None]
    for key in present:
        array = arrays[key]
        pad = [(0, 0), (max_shift, max_shift), (max_shift, max_shift)]
        padded = np.pad(array, pad + [(0, 0)] * (array.ndim - 3))
        out[key] = padded[examples, rows[:, :, None], cols[:, None, :]]
    return out


def make_translate(features: Sequence[str], max_shift: int) -> Augment:
    """`translate` bound to a dataset's maps and shift, for `DatasetSpec.augmentations`.

    Raises:
      ValueError: for a negative `max_shift` or no features.
    """
    if max_shift < 0 or not features:
        raise ValueError(
            f"translate needs max_shift >= 0 and at least one feature, got {max_shift}, "
            f"{list(features)}"
        )
    return functools.partial(translate, features=tuple(features), max_shift=int(max_shift))
