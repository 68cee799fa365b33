"""Reading datasets in the MTAN pre-processed layout (NYUv2, CityScapes).

The layout of Liu et al.'s MTAN release (github.com/lorenmt/mtan), which CAGrad,
Nash-MTL, FAMO and LibMTL all read: one `.npy` file per example and feature,

    <root>/{train,val}/<feature dir>/<i>.npy      i = 0, 1, ..., N − 1

with, per example (channels last, as stored; MTAN's `create_dataset.py` moves them
first for PyTorch):

* `image/`: float [H, W, 3], RGB in [0, 1] (float64 in the released files);
* `label/` (CityScapes: `label_7/`): float [H, W] class indices, −1 = unlabelled;
* `depth/`: float [H, W, 1]; 0 = no measurement (CityScapes: inverse depth);
* `normal/` (NYUv2 only): float [H, W, 3] unit normals (x, y, z); all-zero = invalid.

Split `val/` is the split every published number is measured on, so it is read as
`"test"`; there is no separate validation split in this layout. Images are loaded as
uint8 (the released files hold exact multiples of 1/255, so nothing is lost; other
float images are rounded to the nearest 1/255), labels as int8, depth and normals as
float32.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from mtl_jax.data import augment
from mtl_jax.data.pipeline import Arrays, DatasetSource, SourceConfig

# Split name -> directory of the layout.
SPLIT_DIRS = {"train": "train", "test": "val"}
CONFIGS = ("default",)

# Per feature kind: the channel count of one example (None = no channel axis).
_CHANNELS = {augment.IMAGE: 3, augment.LABEL: None, augment.DEPTH: 1, augment.NORMAL: 3}


@dataclasses.dataclass(frozen=True)
class Layout:
    """One dataset in the MTAN layout.

    Attributes:
      dataset: the dataset name (`DATASETS` key), also the default subdirectory.
      height, width: the map size every example must have.
      features: the targets, `{feature name: (directory names to try in order, augment
        kind)}`; the image (`image/`) is always read.
      how_to_get: instructions for the missing-data message (`{root}` is substituted).
    """

    dataset: str
    height: int
    width: int
    features: Mapping[str, tuple[tuple[str, ...], str]]
    how_to_get: str

    @property
    def kinds(self) -> dict[str, str]:
        """`{feature: augment kind}` of the image and the targets, for `augment.make_augment`."""
        return {"image": augment.IMAGE, **{n: kind for n, (_, kind) in self.features.items()}}


def find_root(layout: Layout, data_dir: str) -> Path:
    """The directory holding `train/` and `val/`: `<data_dir>/<dataset>`, else `data_dir`.

    Raises:
      FileNotFoundError: neither holds `train/image` and `val/image`; the message names
        the dataset, both directories and how to get the data.
    """
    base = Path(data_dir).expanduser()
    candidates = (base / layout.dataset, base)
    for root in candidates:
        if all((root / d / "image").is_dir() for d in SPLIT_DIRS.values()):
            return root
    dirs = ", ".join(" or ".join(f"{n}/" for n in names) for names, _ in layout.features.values())
    raise FileNotFoundError(
        f"dataset {layout.dataset!r}: no data in the MTAN layout in {str(candidates[0])!r} "
        f"(nor in {str(candidates[1])!r}); expected train/ and val/, each with image/, "
        f"{dirs} holding 0.npy, 1.npy, ... To get it: "
        + layout.how_to_get.format(root=candidates[0])
    )


def _feature_dir(layout: Layout, split_dir: Path, name: str) -> Path:
    names, _ = layout.features[name]
    for candidate in names:
        if (split_dir / candidate).is_dir():
            return split_dir / candidate
    raise FileNotFoundError(
        f"dataset {layout.dataset!r}: {str(split_dir)!r} has none of the directories "
        f"{list(names)} (feature {name!r})"
    )


def _convert(layout: Layout, path: Path, array: np.ndarray, kind: str) -> np.ndarray:
    """One example's array in the loaded dtype, after checking its shape and values."""
    channels = _CHANNELS[kind]
    if kind == augment.DEPTH and array.ndim == 2:
        array = array[..., None]
    expected = (layout.height, layout.width) + (() if channels is None else (channels,))
    if array.shape != expected:
        raise ValueError(
            f"dataset {layout.dataset!r}: {str(path)!r} has shape {array.shape}, expected "
            f"{expected}"
        )
    if kind == augment.LABEL:
        labels = np.rint(array)
        if np.any(labels != array) or np.any((labels < -1) | (labels > 127)):
            raise ValueError(
                f"dataset {layout.dataset!r}: {str(path)!r} holds labels that are not "
                "integers in [-1, 127]"
            )
        return labels.astype(np.int8)
    if kind == augment.IMAGE:
        if array.dtype == np.uint8:
            return array
        if array.min() < 0 or array.max() > 1:
            raise ValueError(
                f"dataset {layout.dataset!r}: {str(path)!r} holds image values outside [0, 1]"
            )
        return np.rint(array * 255.0).astype(np.uint8)
    return array.astype(np.float32)


def read_split(layout: Layout, root: Path, split: str) -> Arrays:
    """Reads split `split` ("train" or "test" = `val/`) of the layout under `root`.

    Returns:
      `{"image": [N, H, W, 3], <feature>: [N, H, W(, C)]}`.

    Raises:
      FileNotFoundError: a feature directory or an example's file is missing.
      ValueError: an unknown split, a file of the wrong shape, non-integer labels.
    """
    if split not in SPLIT_DIRS:
        raise ValueError(
            f"dataset {layout.dataset!r} has no split {split!r}; splits: {list(SPLIT_DIRS)}"
        )
    split_dir = root / SPLIT_DIRS[split]
    image_dir = split_dir / "image"
    stems = sorted(int(p.stem) for p in image_dir.glob("*.npy") if p.stem.isdigit())
    if stems != list(range(len(stems))):
        missing = sorted(set(range(max(stems, default=-1) + 1)) - set(stems))
        raise FileNotFoundError(
            f"dataset {layout.dataset!r}: {str(image_dir)!r} must hold 0.npy ... N-1.npy; "
            f"missing {[f'{i}.npy' for i in missing[:5]]}"
        )
    features = {"image": (image_dir, augment.IMAGE)}
    for name, (_, kind) in layout.features.items():
        features[name] = (_feature_dir(layout, split_dir, name), kind)
    out: Arrays = {}
    for name, (directory, kind) in features.items():
        column = None
        for i in range(len(stems)):
            path = directory / f"{i}.npy"
            if not path.is_file():
                raise FileNotFoundError(
                    f"dataset {layout.dataset!r}: {str(path)!r} is missing (image/{i}.npy exists)"
                )
            array = _convert(layout, path, np.load(path), kind)
            if column is None:  # filled in place: one split can be gigabytes
                column = np.empty((len(stems), *array.shape), array.dtype)
            column[i] = array
        out[name] = column
    return out


def resolve_config(name: str, data_dir: str) -> str:
    """`"auto"` (the config default) is `"default"`, the layout's only config."""
    del data_dir
    return "default" if name == "auto" else name


def load(layout: Layout, config: str, data_dir: str) -> DatasetSource:
    """The `DatasetSpec.loader` of a layout: checks the config and finds the data.

    Raises:
      ValueError: unknown config (the message lists the valid ones).
      FileNotFoundError: see `find_root`.
    """
    if config not in CONFIGS:
        raise ValueError(
            f"dataset {layout.dataset!r} has no config {config!r}; valid configs: {list(CONFIGS)}"
        )
    root = find_root(layout, data_dir)
    return DatasetSource(
        name=layout.dataset,
        builder_config=SourceConfig(config),
        location=str(root),
        splits=tuple(SPLIT_DIRS),
        image_shape=(layout.height, layout.width, 3),
        read=functools.partial(read_split, layout, root),
    )
