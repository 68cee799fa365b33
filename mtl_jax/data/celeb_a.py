"""CelebA (Liu et al. ICCV 2015): 40 binary face attributes, read through TFDS `celeb_a`.

The multi-task benchmark of FAMO (Liu et al. NeurIPS 2023) and FairGrad: aligned and
cropped 218×178 faces resized to 64×64 (PIL bilinear, as torchvision's `Resize` on PIL
images), 40 attributes. TFDS `celeb_a` must already be prepared as array_record in the
data dir (its download needs Google Drive; nothing is downloaded here). Splits: `train`
(162,770), `validation` (19,867) and `test` (19,962) — choose the epoch on `validation`.

Tasks, two ways to pose the same labels (a config picks one):

* one task per attribute, named as TFDS names it (`Smiling`, `5_o_Clock_Shadow`, ...):
  `BinaryLabels(num_labels=1)`, target `[1]`, metrics `f1` (that attribute's F1, the
  published metric) and `accuracy` — the 40-task setting whose Δm FAMO reports;
* `attributes`: one 40-label `BinaryLabels` task, target `[40]` in `ATTRIBUTES` order,
  metrics `f1` (mean over attributes), `f1_<attribute>` for each, and `accuracy`.

The resized split is cached as `.npy` files under `<data_dir>/mtl_jax_cache/` after
the first read (decoding ~200k JPEGs takes minutes on two cores).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from mtl_jax.data.pipeline import Arrays, DatasetSource, SourceConfig
from mtl_jax.tasks import BinaryLabels, Task

TFDS_NAME = "celeb_a"
SIZE = 64
SPLITS = ("train", "validation", "test")
CONFIGS = ("default",)
ALL_ATTRIBUTES_TASK = "attributes"

# The 40 attributes in the order of CelebA's `list_attr_celeba.txt` (= TFDS's order).
ATTRIBUTES = (
    "5_o_Clock_Shadow",
    "Arched_Eyebrows",
    "Attractive",
    "Bags_Under_Eyes",
    "Bald",
    "Bangs",
    "Big_Lips",
    "Big_Nose",
    "Black_Hair",
    "Blond_Hair",
    "Blurry",
    "Brown_Hair",
    "Bushy_Eyebrows",
    "Chubby",
    "Double_Chin",
    "Eyeglasses",
    "Goatee",
    "Gray_Hair",
    "Heavy_Makeup",
    "High_Cheekbones",
    "Male",
    "Mouth_Slightly_Open",
    "Mustache",
    "Narrow_Eyes",
    "No_Beard",
    "Oval_Face",
    "Pale_Skin",
    "Pointy_Nose",
    "Receding_Hairline",
    "Rosy_Cheeks",
    "Sideburns",
    "Smiling",
    "Straight_Hair",
    "Wavy_Hair",
    "Wearing_Earrings",
    "Wearing_Hat",
    "Wearing_Lipstick",
    "Wearing_Necklace",
    "Wearing_Necktie",
    "Young",
)

_CHUNK = 1024


def resolve_config(name: str, data_dir: str) -> str:
    """`"auto"` (the config default) is `"default"`, the only config."""
    del data_dir
    return "default" if name == "auto" else name


def _not_prepared(data_dir: str, why: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"dataset 'celeb_a': TFDS {TFDS_NAME!r} {why} in {data_dir!r}. To get it, on a "
        f"machine with network access run `tfds build {TFDS_NAME} "
        "--file_format=array_record --data_dir=DIR` (TFDS fetches CelebA from Google "
        "Drive) and copy DIR here, or set dataset.data_dir to DIR; a tfrecord build can "
        "be converted with `tfds convert_format`"
    )


def load(config: str, data_dir: str) -> DatasetSource:
    """The `DatasetSpec.loader`: opens the prepared TFDS `celeb_a` in `data_dir`.

    Raises:
      ValueError: unknown config (the message lists the valid ones).
      FileNotFoundError: `celeb_a` is not prepared as array_record in `data_dir` (the
        message says how to prepare it).
    """
    if config not in CONFIGS:
        raise ValueError(
            f"dataset 'celeb_a' has no config {config!r}; valid configs: {list(CONFIGS)}"
        )
    data_dir = str(Path(data_dir).expanduser())
    builder = tfds.builder(TFDS_NAME, data_dir=data_dir)
    if not builder.is_prepared():
        raise _not_prepared(data_dir, "is not prepared")
    if builder.info.file_format != tfds.core.FileFormat.ARRAY_RECORD:
        raise _not_prepared(
            data_dir, f"is prepared as {builder.info.file_format.value}, not as array_record,"
        )
    cache = Path(data_dir) / "mtl_jax_cache" / f"{TFDS_NAME}-{builder.version}-{SIZE}x{SIZE}"
    return DatasetSource(
        name=TFDS_NAME,
        builder_config=SourceConfig(config),
        location=str(builder.data_dir),
        splits=SPLITS,
        image_shape=(SIZE, SIZE, 3),
        read=functools.partial(read_split, builder, cache),
    )


def _resize(image: np.ndarray) -> np.ndarray:
    import PIL.Image

    resized = PIL.Image.fromarray(image).resize((SIZE, SIZE), PIL.Image.Resampling.BILINEAR)
    return np.asarray(resized, np.uint8)


def _decode(builder: tfds.core.DatasetBuilder, split: str) -> tuple[np.ndarray, np.ndarray]:
    """`(images uint8 [N, 64, 64, 3], attributes uint8 [N, 40])` of a TFDS split."""
    source = builder.as_data_source(split)
    images = np.empty((len(source), SIZE, SIZE, 3), np.uint8)
    attributes = np.empty((len(source), len(ATTRIBUTES)), np.uint8)
    for start in range(0, len(source), _CHUNK):
        records = source.__getitems__(list(range(start, min(start + _CHUNK, len(source)))))
        for offset, record in enumerate(records):
            images[start + offset] = _resize(record["image"])
            attributes[start + offset] = [record["attributes"][a] for a in ATTRIBUTES]
    return images, attributes


def _save(path: Path, array: np.ndarray) -> None:
    """Writes `array` to `path` atomically (a reader never sees a partial file)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
    os.replace(tmp, path)


def read_split(builder: tfds.core.DatasetBuilder, cache: Path, split: str) -> Arrays:
    """Reads a split, resized to 64×64, from the cache or else from TFDS (then caches it).

    Returns:
      `{"image": uint8 [N, 64, 64, 3], "attributes": uint8 [N, 40], <attribute>: uint8
      [N, 1] for each of the 40}`.
    """
    image_path, attribute_path = cache / f"{split}-image.npy", cache / f"{split}-attributes.npy"
    if image_path.is_file() and attribute_path.is_file():
        images, attributes = np.load(image_path), np.load(attribute_path)
    else:
        images, attributes = _decode(builder, split)
        cache.mkdir(parents=True, exist_ok=True)
        _save(image_path, images)
        _save(attribute_path, attributes)
    arrays = {"image": images, ALL_ATTRIBUTES_TASK: attributes}
    for i, name in enumerate(ATTRIBUTES):
        arrays[name] = attributes[:, i : i + 1]
    return arrays


def tasks() -> dict[str, Task]:
    """The 40 single-attribute tasks and the one 40-label `attributes` task, by name."""
    out: dict[str, Task] = {name: BinaryLabels(name, num_labels=1) for name in ATTRIBUTES}
    out[ALL_ATTRIBUTES_TASK] = BinaryLabels(
        ALL_ATTRIBUTES_TASK, num_labels=len(ATTRIBUTES), label_names=ATTRIBUTES
    )
    return out
