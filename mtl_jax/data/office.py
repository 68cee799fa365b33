"""Office-31 and Office-Home: multi-input classification, one task per domain.

* Office-31 (Saenko et al., ECCV 2010): domains `amazon`, `dslr`, `webcam` (2,817 / 498
  / 795 images), 31 classes; real layout `<root>/<domain>/images/<class>/*.jpg`.
* Office-Home (Venkateswara et al., CVPR 2017): domains `Art`, `Clipart`, `Product`,
  `Real_World` (about 15,500 images), 65 classes; real layout
  `<root>/<domain>/<class>/*.jpg`. The official zip names the last domain's folder
  `Real World`; LibMTL's split lists name it `Real_World`; either is found.

Any `<root>/<domain>/.../<class>/<image>` is read (`.jpg`, `.jpeg`, `.png`): an image's
class is the name of the folder that holds it. Classes are discovered from the folders;
class index = position in the sorted list of class names, the same in every domain (a
domain with a different class set is an error). Pass `expect_num_classes` (e.g.
`NUM_CLASSES[dataset]`) to check the count.

Splits `train`, `val`, `test`, as LibMTL's multi-input benchmark (`examples/office`):

* from a seed (default): per domain and per class, the class's images (sorted by path)
  are permuted and the first `⌊3n/5⌋` go to train, the next `⌊n/5⌋` to val, the rest
  to test — stratified 60/20/20, the rule every class of LibMTL's shipped lists follows
  (`examples/office/data_txt/`: e.g. amazon `back_pack`, 92 images = 55 / 18 / 19);
* or LibMTL's split lists (`split_lists=`): the directory
  `examples/office/data_txt/<dataset>/` of the LibMTL repository, holding
  `<domain>_{train,val,test}.txt`, one `<path> <label>` per line with `<path>` relative
  to the dataset root (LibMTL joins it to `--dataset_path`), e.g.
  `amazon/images/back_pack/frame_0065.jpg 0`, `Art/Calendar/00017.jpg 0`. LibMTL's
  label column numbers the classes in its own (not alphabetical) order (`back_pack` 0,
  `paper_notebook` 1, ...); it is checked to be one label per class folder, the same
  in every domain, and then replaced by the sorted-class index, so both split sources
  give the same labels to the same images.

Images are decoded as LibMTL's `office_Dataset`: PIL, `convert("RGB")`, resized to
224×224 with PIL bilinear (torchvision's `transforms.Resize((224, 224))` on a PIL image
calls `img.resize((224, 224), BILINEAR)`; the aspect ratio is not kept, nothing is
cropped), scaled to [0, 1] and normalised with the ImageNet mean and std. LibMTL uses no
training augmentation for Office. Arrays are float32 NHWC, filled in place one image at
a time (one 224×224 float copy of a split is held, ~0.6 MB per image: Office-31 2.5 GB,
Office-Home 9.4 GB in all).

Usage: `splits = split_files("office-31", root)` finds and splits the files (cheap),
`read_split(splits, "train")` decodes one split into `{domain: {"image", "label"}}`,
which `multi_input.train_batches` batches; `tasks("office-31", class_names=...)` gives
the matching tasks.

Example:
    >>> sorted(tasks("office-31"))
    ['amazon', 'dslr', 'webcam']
    >>> tasks("office-home")["Real_World"].num_classes
    65
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from mtl_jax.data import multi_input
from mtl_jax.data.pipeline import Arrays, DatasetSource, SourceConfig
from mtl_jax.tasks import Classification, Task

OFFICE_31 = "office-31"
OFFICE_HOME = "office-home"
DOMAINS = {
    OFFICE_31: ("amazon", "dslr", "webcam"),
    OFFICE_HOME: ("Art", "Clipart", "Product", "Real_World"),
}
NUM_CLASSES = {OFFICE_31: 31, OFFICE_HOME: 65}
SPLITS = ("train", "val", "test")
SIZE = 224
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

# Folder names a domain may have on disk, in the order tried.
_FOLDERS = {"Real_World": ("Real_World", "Real World")}

# Entry of the split's seed sequence, apart from the batching streams (1, 2, 3).
_SPLIT_STREAM = 4

_HOW_TO_GET = {
    OFFICE_31: (
        "download domain_adaptation_images.tar.gz from the Office-31 page "
        "https://www.cc.gatech.edu/~judy/domainadapt/#datasets_code and unpack it so that "
        "{root}/amazon/images/back_pack/frame_0001.jpg exists ({root} then holds amazon/, "
        "dslr/ and webcam/, each with images/<class>/*.jpg)"
    ),
    OFFICE_HOME: (
        "download OfficeHomeDataset_10072016.zip from the Office-Home page "
        "https://www.hemanthdv.org/officeHomeDataset.html and unzip it so that "
        "{root}/Art/Alarm_Clock/00001.jpg exists ({root} then holds Art/, Clipart/, "
        "Product/ and 'Real World/' (or Real_World/), each with <class>/*.jpg)"
    ),
}


def _check_dataset(dataset: str) -> None:
    if dataset not in DOMAINS:
        raise ValueError(f"unknown Office dataset {dataset!r}; valid: {list(DOMAINS)}")


def _missing(dataset: str, root: Path, what: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"dataset {dataset!r}: {what}. To get it: " + _HOW_TO_GET[dataset].format(root=root)
    )


def domain_dir(dataset: str, root: str | os.PathLike, domain: str) -> Path:
    """The folder of `domain` under `root` (`Real_World` may be `Real World`).

    Raises:
      FileNotFoundError: `root` or the domain's folder is missing; the message names the
        dataset, the path and how to get the data.
    """
    _check_dataset(dataset)
    root = Path(root).expanduser()
    if not root.is_dir():
        raise _missing(dataset, root, f"the data directory {str(root)!r} does not exist")
    names = _FOLDERS.get(domain, (domain,))
    for name in names:
        if (root / name).is_dir():
            return root / name
    tried = " or ".join(repr(str(root / n)) for n in names)
    raise _missing(dataset, root, f"no folder of domain {domain!r}: {tried} does not exist")


def discover(dataset: str, root: str | os.PathLike, domain: str) -> list[tuple[Path, str]]:
    """`(image path, class name)` of every image of a domain, sorted by path.

    Raises:
      FileNotFoundError: see `domain_dir`; a domain folder without images.
      ValueError: an image directly in the domain folder (it has no class folder).
    """
    folder = domain_dir(dataset, root, domain)
    found = []
    for parent, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith(".") or not name.lower().endswith(IMAGE_SUFFIXES):
                continue
            path = Path(parent) / name
            if path.parent == folder:
                raise ValueError(
                    f"dataset {dataset!r}: image {str(path)!r} is not in a class folder "
                    f"(expected {str(folder)}/.../<class>/<image>)"
                )
            found.append((path, path.parent.name))
    if not found:
        raise _missing(dataset, Path(root), f"no images under {str(folder)!r}")
    return sorted(found)


def _check_classes(
    dataset: str, per_domain: Mapping[str, set[str]], expect_num_classes: int | None
) -> tuple[str, ...]:
    """The sorted class names, identical in every domain (and as many as expected)."""
    first = next(iter(per_domain))
    classes = per_domain[first]
    for domain, names in per_domain.items():
        if names != classes:
            raise ValueError(
                f"dataset {dataset!r}: domain {domain!r} has a different class set than "
                f"{first!r}: missing {sorted(classes - names)}, extra {sorted(names - classes)}"
            )
    if expect_num_classes is not None and len(classes) != expect_num_classes:
        raise ValueError(
            f"dataset {dataset!r}: found {len(classes)} classes, expected "
            f"{expect_num_classes}: {sorted(classes)}"
        )
    return tuple(sorted(classes))


def _seeded_split(
    domain: str, files: Sequence[tuple[Path, str]], seed: int
) -> dict[str, list[tuple[Path, str]]]:
    """Stratified 60/20/20 split of one domain: per class ⌊3n/5⌋ / ⌊n/5⌋ / rest."""
    rng = np.random.default_rng([seed, _SPLIT_STREAM, *multi_input.name_words(domain)])
    by_class: dict[str, list[tuple[Path, str]]] = {}
    for item in files:  # sorted by path, so the permutation below is reproducible
        by_class.setdefault(item[1], []).append(item)
    out: dict[str, list[tuple[Path, str]]] = {split: [] for split in SPLITS}
    for name in sorted(by_class):
        items = by_class[name]
        order = [items[i] for i in rng.permutation(len(items))]
        n_train, n_val = len(items) * 3 // 5, len(items) // 5
        out["train"] += order[:n_train]
        out["val"] += order[n_train : n_train + n_val]
        out["test"] += order[n_train + n_val :]
    return out


def read_split_list(path: str | os.PathLike) -> list[tuple[str, int]]:
    """`(relative path, label)` of each line `<path> <label>` of a LibMTL split list.

    As LibMTL's `office_Dataset`: the path is everything before the last space (LibMTL
    splits on single spaces; its paths have none), the label an integer. Blank lines
    are skipped.

    Raises:
      FileNotFoundError: the file is missing.
      ValueError: a line that is not `<path> <integer label>` (naming file and line).
    """
    entries = []
    text = Path(path).read_text()
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.rsplit(" ", 1)
        if len(parts) != 2 or not parts[0] or not parts[1].lstrip("-").isdigit():
            raise ValueError(
                f"{str(path)!r} line {number}: expected '<path> <label>', got {line!r}"
            )
        entries.append((parts[0], int(parts[1])))
    return entries


def _listed_split(
    dataset: str, root: Path, split_lists: Path, domains: Sequence[str]
) -> tuple[dict[str, dict[str, list[tuple[Path, str]]]], dict[str, set[str]]]:
    """Files of each domain and split from LibMTL's lists, after checking their labels."""
    files: dict[str, dict[str, list[tuple[Path, str]]]] = {split: {} for split in SPLITS}
    per_domain: dict[str, set[str]] = {}
    label_of: dict[str, tuple[int, str]] = {}  # class -> (LibMTL label, where first seen)
    class_of: dict[int, str] = {}
    for domain in domains:
        folder = domain_dir(dataset, root, domain)
        per_domain[domain] = set()
        for split in SPLITS:
            list_path = split_lists / f"{domain}_{split}.txt"
            if not list_path.is_file():
                raise FileNotFoundError(
                    f"dataset {dataset!r}: split list {str(list_path)!r} is missing (LibMTL "
                    f"ships them in examples/office/data_txt/{dataset}/)"
                )
            entries = []
            for relative, label in read_split_list(list_path):
                parts = Path(relative).parts
                # Paths are rooted at the dataset root; the domain folder may be spelt
                # differently on disk ("Real World").
                path = folder.joinpath(*parts[1:]) if parts[0] == domain else root / relative
                if not path.is_file():
                    raise FileNotFoundError(
                        f"dataset {dataset!r}: {str(path)!r}, listed in {str(list_path)!r}, "
                        "does not exist (list paths are relative to the dataset root)"
                    )
                name = path.parent.name
                where = f"{list_path.name} ({relative})"
                known, first = label_of.setdefault(name, (label, where))
                if known != label or class_of.setdefault(label, name) != name:
                    raise ValueError(
                        f"dataset {dataset!r}: inconsistent labels in the split lists: class "
                        f"{name!r} is {label} in {where}, but label {known} in {first} and "
                        f"label {label} is class {class_of[label]!r}"
                    )
                entries.append((path, name))
                per_domain[domain].add(name)
            files[split][domain] = entries
    return files, per_domain


@dataclasses.dataclass(frozen=True)
class OfficeSplits:
    """Which image files form each split of each domain (nothing decoded yet).

    Attributes:
      dataset: `"office-31"` or `"office-home"`.
      root: the dataset root (holding the domain folders).
      class_names: sorted class names; label `k` is `class_names[k]`.
      files: `{split: {domain: (image path, ...)}}`.
      labels: `{split: {domain: int32 [N]}}`, aligned with `files`.
    """

    dataset: str
    root: Path
    class_names: tuple[str, ...]
    files: Mapping[str, Mapping[str, tuple[Path, ...]]]
    labels: Mapping[str, Mapping[str, np.ndarray]] = dataclasses.field(repr=False)

    def sizes(self) -> dict[str, dict[str, int]]:
        """`{split: {domain: N}}`."""
        return {s: {d: len(f) for d, f in per.items()} for s, per in self.files.items()}


def split_files(
    dataset: str,
    root: str | os.PathLike,
    *,
    seed: int = 0,
    split_lists: str | os.PathLike | None = None,
    domains: Sequence[str] | None = None,
    expect_num_classes: int | None = None,
) -> OfficeSplits:
    """Finds the images of every domain and splits them into train / val / test.

    Args:
      dataset: `"office-31"` or `"office-home"`.
      root: the directory holding the domain folders (LibMTL's `--dataset_path`).
      seed: the seed of the stratified 60/20/20 split (ignored with `split_lists`).
      split_lists: None to split from `seed`; else a directory of LibMTL split lists
        `<domain>_{train,val,test}.txt` (its `examples/office/data_txt/<dataset>/`).
      domains: the domains to read (default: all of `DOMAINS[dataset]`).
      expect_num_classes: if given, the number of classes every domain must have
        (`NUM_CLASSES[dataset]` for the real data).

    Raises:
      FileNotFoundError: the root, a domain folder, a split list or a listed image is
        missing (the message names the dataset, the path and how to get the data).
      ValueError: an unknown dataset or domain; domains with different class sets; not
        `expect_num_classes` classes; inconsistent labels in the split lists.
    """
    _check_dataset(dataset)
    domains = tuple(DOMAINS[dataset] if domains is None else domains)
    unknown = sorted(set(domains) - set(DOMAINS[dataset]))
    if unknown or not domains:
        raise ValueError(
            f"dataset {dataset!r} has domains {list(DOMAINS[dataset])}; got {list(domains)}"
        )
    root = Path(root).expanduser()
    if split_lists is None:
        found = {domain: discover(dataset, root, domain) for domain in domains}
        per_domain = {domain: {name for _, name in items} for domain, items in found.items()}
        parts = {domain: _seeded_split(domain, found[domain], seed) for domain in domains}
        files = {split: {d: parts[d][split] for d in domains} for split in SPLITS}
    else:
        files, per_domain = _listed_split(dataset, root, Path(split_lists), domains)
    class_names = _check_classes(dataset, per_domain, expect_num_classes)
    index = {name: k for k, name in enumerate(class_names)}
    return OfficeSplits(
        dataset=dataset,
        root=root,
        class_names=class_names,
        files={s: {d: tuple(p for p, _ in files[s][d]) for d in domains} for s in SPLITS},
        labels={
            s: {d: np.asarray([index[n] for _, n in files[s][d]], np.int32) for d in domains}
            for s in SPLITS
        },
    )


_MEAN = np.asarray(MEAN, np.float32)
_STD = np.asarray(STD, np.float32)


def decode(path: str | os.PathLike, out: np.ndarray | None = None) -> np.ndarray:
    """One image as the network sees it: RGB, 224×224 bilinear, normalised.

    `(x / 255 − mean) / std` per channel, with the ImageNet `MEAN` and `STD`.

    Args:
      path: an image file PIL can read.
      out: float32 [224, 224, 3] to write into (a row of a split's array), or None.

    Returns:
      float32 [224, 224, 3] (`out` when given).
    """
    import PIL.Image

    with PIL.Image.open(path) as image:
        rgb = image.convert("RGB").resize((SIZE, SIZE), PIL.Image.Resampling.BILINEAR)
    if out is None:
        out = np.empty((SIZE, SIZE, 3), np.float32)
    out[...] = np.asarray(rgb)
    out /= 255.0
    out -= _MEAN
    out /= _STD
    return out


def read_split(splits: OfficeSplits, split: str) -> dict[str, Arrays]:
    """Decodes one split: `{domain: {"image": float32 [N, 224, 224, 3], "label": int32 [N]}}`.

    The per-task arrays `multi_input.train_batches` and `eval_batches` take. Each image
    is decoded straight into its row of a preallocated array.

    Raises:
      ValueError: an unknown split.
    """
    if split not in SPLITS:
        raise ValueError(f"dataset {splits.dataset!r} has no split {split!r}; splits: {SPLITS}")
    out = {}
    for domain, paths in splits.files[split].items():
        images = np.empty((len(paths), SIZE, SIZE, 3), np.float32)
        for i, path in enumerate(paths):
            decode(path, out=images[i])
        out[domain] = {"image": images, "label": splits.labels[split][domain]}
    return out


def load(
    dataset: str,
    root: str | os.PathLike,
    *,
    splits: Sequence[str] = SPLITS,
    seed: int = 0,
    split_lists: str | os.PathLike | None = None,
    domains: Sequence[str] | None = None,
    expect_num_classes: int | None = None,
) -> tuple[dict[str, dict[str, Arrays]], tuple[str, ...]]:
    """`split_files` then `read_split` for each of `splits`.

    Returns:
      `({split: {domain: {"image", "label"}}}, class_names)`.
    """
    found = split_files(
        dataset,
        root,
        seed=seed,
        split_lists=split_lists,
        domains=domains,
        expect_num_classes=expect_num_classes,
    )
    return {split: read_split(found, split) for split in splits}, found.class_names


def tasks(
    dataset: str, *, class_names: Sequence[str] = (), domains: Sequence[str] | None = None
) -> dict[str, Task]:
    """One `Classification` task per domain, named as the domain.

    Args:
      dataset: `"office-31"` or `"office-home"`.
      class_names: the classes (`OfficeSplits.class_names`); empty: `NUM_CLASSES[dataset]`
        unnamed classes.
      domains: the domains (default: all).
    """
    _check_dataset(dataset)
    num_classes = len(class_names) or NUM_CLASSES[dataset]
    return {
        domain: Classification(domain, num_classes=num_classes, class_names=tuple(class_names))
        for domain in (DOMAINS[dataset] if domains is None else domains)
    }


# `config.dataset.config` of the Office datasets: the seeded stratified split (seed 0),
# or LibMTL's split lists, read from `<root>/data_txt` (a copy of LibMTL's
# `examples/office/data_txt/<dataset>/`).
SEEDED = "seeded"
LIBMTL_LISTS = "libmtl_lists"
CONFIGS = (SEEDED, LIBMTL_LISTS)
SPLIT_LIST_DIR = "data_txt"


def source(dataset: str, config: str, data_dir: str) -> DatasetSource:
    """Office-31 / Office-Home under `<data_dir>/<dataset>` as a multi-input
    `DatasetSource` (`DATASETS["office_31"]`, `DATASETS["office_home"]`): the files are
    found and split at once, each split decoded when it is read.

    Raises:
      ValueError: an unknown config (listing them).
      FileNotFoundError: the data is missing (naming the path and how to get it).
    """
    if config not in CONFIGS:
        raise ValueError(
            f"dataset {dataset!r} has no config {config!r}; valid configs: {list(CONFIGS)}"
        )
    root = Path(data_dir).expanduser() / dataset
    lists = root / SPLIT_LIST_DIR if config == LIBMTL_LISTS else None
    if lists is not None and not lists.is_dir():
        raise _missing(
            dataset,
            root,
            f"config {LIBMTL_LISTS!r} reads LibMTL's split lists from {str(lists)!r}, which "
            f"does not exist (copy LibMTL's examples/office/data_txt/{dataset}/ there)",
        )
    found = split_files(dataset, root, split_lists=lists, expect_num_classes=NUM_CLASSES[dataset])
    return DatasetSource(
        name=dataset,
        builder_config=SourceConfig(config),
        location=str(root),
        splits=SPLITS,
        image_shape=(SIZE, SIZE, 3),
        read=lambda split: read_split(found, split),
    )
