"""Office-31 / Office-Home: the real folder layouts, splits, LibMTL's split lists, decoding."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest

from mtl_jax.data import multi_input, office
from mtl_jax.tasks import Classification

CLASSES = ("mug", "bike", "calculator")  # a reduced class list (the real ones: 31 / 65)


def write_jpeg(path, rng=None, colour=None, size=(30, 20)):
    """A 20×30 JPEG: random pixels, or one constant colour."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if colour is None:
        pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    else:
        pixels = np.full((size[1], size[0], 3), colour, np.uint8)
    PIL.Image.fromarray(pixels).save(path, quality=95)


def write_tree(root, dataset, counts=None, classes=CLASSES, folders=None, seed=0):
    """The real layout: Office-31 `<domain>/images/<class>/frame_NNNN.jpg`, Office-Home
    `<domain>/<class>/NNNNN.jpg`; `counts[class]` images per class (default 5)."""
    rng = np.random.default_rng(seed)
    for domain in office.DOMAINS[dataset]:
        folder = root / (folders or {}).get(domain, domain)
        for name in classes:
            for i in range((counts or {}).get(name, 5)):
                if dataset == office.OFFICE_31:
                    write_jpeg(folder / "images" / name / f"frame_{i + 1:04d}.jpg", rng)
                else:
                    write_jpeg(folder / name / f"{i + 1:05d}.jpg", rng)
    return root


@pytest.fixture(scope="module")
def office31(tmp_path_factory):
    return write_tree(tmp_path_factory.mktemp("office31"), office.OFFICE_31)


@pytest.fixture(scope="module")
def office_home(tmp_path_factory):
    # The official zip spells the last domain "Real World".
    root = tmp_path_factory.mktemp("officehome")
    return write_tree(root, office.OFFICE_HOME, folders={"Real_World": "Real World"})


def test_reads_both_layouts_with_shapes_and_dtypes(office31, office_home):
    for dataset, root in ((office.OFFICE_31, office31), (office.OFFICE_HOME, office_home)):
        splits = office.split_files(dataset, root, seed=0)
        assert splits.class_names == tuple(sorted(CLASSES))  # discovered from the folders
        domains = office.DOMAINS[dataset]
        # 5 images per class: 3 / 1 / 1 per class, 3 classes.
        assert splits.sizes() == {"train": dict.fromkeys(domains, 9)} | {
            s: dict.fromkeys(domains, 3) for s in ("val", "test")
        }
        for domain in domains:
            for split in office.SPLITS:
                for path, label in zip(
                    splits.files[split][domain], splits.labels[split][domain], strict=True
                ):
                    assert path.parent.name == splits.class_names[label]
    arrays = office.read_split(office.split_files(office.OFFICE_31, office31), "val")
    assert sorted(arrays) == ["amazon", "dslr", "webcam"]
    for domain in arrays:
        image, label = arrays[domain]["image"], arrays[domain]["label"]
        assert image.shape == (3, 224, 224, 3) and image.dtype == np.float32
        assert label.shape == (3,) and label.dtype == np.int32
        assert sorted(label.tolist()) == [0, 1, 2]  # stratified: one per class
        assert np.isfinite(image).all() and image.min() > -2.2 and image.max() < 2.7


def test_constant_colour_decodes_to_the_normalised_value(tmp_path):
    colour = (200, 100, 30)
    write_jpeg(tmp_path / "c.jpg", colour=colour)
    image = office.decode(tmp_path / "c.jpg")
    assert image.shape == (224, 224, 3) and image.dtype == np.float32
    expected = (np.asarray(colour) / 255.0 - np.asarray(office.MEAN)) / np.asarray(office.STD)
    # JPEG may move a flat colour by a couple of levels: 3/255 in [0, 1] units.
    tolerance = 3.0 / 255.0 / np.asarray(office.STD)
    assert np.all(np.abs(image - expected) <= tolerance)
    # Grey-scale and palette images are converted to RGB first, as LibMTL does.
    PIL.Image.fromarray(np.full((20, 30), 128, np.uint8)).save(tmp_path / "g.png")
    grey = office.decode(tmp_path / "g.png")
    np.testing.assert_allclose(
        grey[0, 0], (128 / 255.0 - np.asarray(office.MEAN)) / np.asarray(office.STD), rtol=1e-5
    )


def test_decode_resizes_like_pil_bilinear(tmp_path):
    rng = np.random.default_rng(1)
    write_jpeg(tmp_path / "r.jpg", rng)
    with PIL.Image.open(tmp_path / "r.jpg") as image:
        resized = np.asarray(image.convert("RGB").resize((224, 224), PIL.Image.BILINEAR))
    expected = (resized / 255.0 - np.asarray(office.MEAN)) / np.asarray(office.STD)
    np.testing.assert_allclose(office.decode(tmp_path / "r.jpg"), expected, atol=1e-5)


def test_split_is_deterministic_stratified_and_disjoint(tmp_path):
    counts = {"mug": 10, "bike": 7, "calculator": 23}
    root = write_tree(tmp_path, office.OFFICE_31, counts=counts)
    a = office.split_files(office.OFFICE_31, root, seed=3)
    b = office.split_files(office.OFFICE_31, root, seed=3)
    c = office.split_files(office.OFFICE_31, root, seed=4)
    assert a.files == b.files
    assert any(a.files["train"][d] != c.files["train"][d] for d in office.DOMAINS["office-31"])
    for domain in office.DOMAINS[office.OFFICE_31]:
        parts = [set(a.files[split][domain]) for split in office.SPLITS]
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
        assert len(set().union(*parts)) == sum(counts.values())
        # Per class ⌊3n/5⌋ / ⌊n/5⌋ / rest (LibMTL's lists follow the same rule).
        for name, n in counts.items():
            k = a.class_names.index(name)
            got = [int(np.sum(a.labels[split][domain] == k)) for split in office.SPLITS]
            assert got == [n * 3 // 5, n // 5, n - n * 3 // 5 - n // 5]
    assert a.sizes()["train"]["amazon"] == 6 + 4 + 13


def test_split_sizes_are_60_20_20(tmp_path):
    root = write_tree(tmp_path, office.OFFICE_HOME, counts=dict.fromkeys(CLASSES, 10))
    sizes = office.split_files(office.OFFICE_HOME, root).sizes()
    for domain in office.DOMAINS[office.OFFICE_HOME]:
        assert [sizes[s][domain] for s in office.SPLITS] == [18, 6, 6]


def _write_lists(directory, dataset, splits, label_of, folders=None):
    """LibMTL's `<domain>_{train,val,test}.txt`: `<path from the root> <label>` lines."""
    directory.mkdir(parents=True, exist_ok=True)
    for split in office.SPLITS:
        for domain, paths in splits.files[split].items():
            lines = []
            for path in paths:
                relative = path.relative_to(splits.root).as_posix()
                on_disk = (folders or {}).get(domain, domain)
                relative = domain + relative[len(on_disk) :]  # LibMTL spells Real_World
                lines.append(f"{relative} {label_of[path.parent.name]}\n")
            (directory / f"{domain}_{split}.txt").write_text("".join(lines))


def test_reads_libmtl_split_lists(office31, office_home, tmp_path):
    # LibMTL numbers the classes in its own order (e.g. back_pack 0, paper_notebook 1).
    label_of = {"mug": 0, "bike": 1, "calculator": 2}
    for dataset, root, folders in (
        (office.OFFICE_31, office31, None),
        (office.OFFICE_HOME, office_home, {"Real_World": "Real World"}),
    ):
        reference = office.split_files(dataset, root, seed=11)
        lists = tmp_path / dataset
        _write_lists(lists, dataset, reference, label_of, folders)
        if dataset == office.OFFICE_31:
            first = (lists / "amazon_train.txt").read_text().splitlines()[0]
            assert first.startswith("amazon/images/") and first.endswith((" 0", " 1", " 2"))
        else:
            assert (lists / "Real_World_test.txt").read_text().startswith("Real_World/")
        listed = office.split_files(dataset, root, split_lists=lists, seed=99)
        assert listed.files == reference.files  # the lists' split, not the seed's
        assert listed.class_names == reference.class_names == ("bike", "calculator", "mug")
        for split in office.SPLITS:
            for domain in office.DOMAINS[dataset]:
                # Remapped to the sorted-class index.
                np.testing.assert_array_equal(
                    listed.labels[split][domain], reference.labels[split][domain]
                )


def test_split_list_format_and_errors(office31, tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("amazon/images/back_pack/frame_0065.jpg 0\n\nArt/Calendar/00017.jpg 12")
    assert office.read_split_list(path) == [
        ("amazon/images/back_pack/frame_0065.jpg", 0),
        ("Art/Calendar/00017.jpg", 12),
    ]
    path.write_text("amazon/images/back_pack/frame_0065.jpg\n")
    with pytest.raises(ValueError, match="line 1: expected '<path> <label>'"):
        office.read_split_list(path)
    reference = office.split_files(office.OFFICE_31, office31)
    lists = tmp_path / "lists"
    _write_lists(lists, office.OFFICE_31, reference, {"mug": 0, "bike": 1, "calculator": 2})
    # A class with two labels.
    text = (lists / "dslr_val.txt").read_text().replace(" 0\n", " 1\n")
    (lists / "dslr_val.txt").write_text(text)
    with pytest.raises(ValueError, match="inconsistent labels.*class 'mug'"):
        office.split_files(office.OFFICE_31, office31, split_lists=lists)
    # A listed image that is not there.
    (lists / "dslr_val.txt").write_text("dslr/images/mug/frame_9999.jpg 0\n")
    with pytest.raises(FileNotFoundError, match="frame_9999.jpg.*relative to the dataset root"):
        office.split_files(office.OFFICE_31, office31, split_lists=lists)
    (lists / "dslr_val.txt").unlink()
    with pytest.raises(FileNotFoundError, match="dslr_val.txt.*examples/office/data_txt"):
        office.split_files(office.OFFICE_31, office31, split_lists=lists)


def test_class_sets_and_expected_count(tmp_path, office31):
    # The count is checked only when asked for.
    assert len(office.split_files(office.OFFICE_31, office31).class_names) == 3
    office.split_files(office.OFFICE_31, office31, expect_num_classes=3)
    with pytest.raises(ValueError, match="found 3 classes, expected 31"):
        office.split_files(
            office.OFFICE_31, office31, expect_num_classes=office.NUM_CLASSES["office-31"]
        )
    root = write_tree(tmp_path, office.OFFICE_31)
    write_jpeg(root / "webcam" / "images" / "stapler" / "frame_0001.jpg", np.random.default_rng())
    with pytest.raises(ValueError, match="domain 'webcam' has a different class set.*stapler"):
        office.split_files(office.OFFICE_31, root)
    # Only some domains may be read.
    some = office.split_files(office.OFFICE_31, root, domains=["amazon", "dslr"])
    assert sorted(some.files["train"]) == ["amazon", "dslr"]
    with pytest.raises(ValueError, match="has domains"):
        office.split_files(office.OFFICE_31, root, domains=["Art"])


def test_missing_directories_say_how_to_get_the_data(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as info:
        office.split_files(office.OFFICE_31, missing)
    message = str(info.value)
    assert "'office-31'" in message and str(missing) in message
    assert "domain_adaptation_images.tar.gz" in message and "cc.gatech.edu" in message
    assert "amazon/images/back_pack" in message
    write_tree(tmp_path / "home", office.OFFICE_HOME)
    (tmp_path / "home" / "Clipart").rename(tmp_path / "home" / "clip")
    with pytest.raises(FileNotFoundError) as info:
        office.split_files(office.OFFICE_HOME, tmp_path / "home")
    message = str(info.value)
    assert "'office-home'" in message and "domain 'Clipart'" in message
    assert str(tmp_path / "home" / "Clipart") in message
    assert "OfficeHomeDataset_10072016.zip" in message and "hemanthdv.org" in message
    with pytest.raises(ValueError, match="unknown Office dataset 'office-32'"):
        office.split_files("office-32", tmp_path)


def test_tasks_and_multi_input_batches(office31):
    splits = office.split_files(office.OFFICE_31, office31)
    tasks = office.tasks(office.OFFICE_31, class_names=splits.class_names)
    assert sorted(tasks) == ["amazon", "dslr", "webcam"]
    for name, task in tasks.items():
        assert isinstance(task, Classification) and task.name == name
        assert task.num_classes == 3 and task.class_names == splits.class_names
    assert office.tasks(office.OFFICE_HOME)["Art"].num_classes == 65
    train = office.read_split(splits, "train")
    batch = next(multi_input.train_batches(train, batch_size=4, seed=0))
    assert batch["inputs"]["dslr"].shape == (4, 224, 224, 3)
    for name, task in tasks.items():
        task.check_targets(batch["targets"][name])
