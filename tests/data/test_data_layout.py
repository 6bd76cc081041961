"""Dataset layouts: VOC, COCO voc_format and a generic 6-class dataset; split files; label files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from urn.data.label_writing import derive_labels, write_labels
from urn.data.labels import load_labels_file
from urn.data.layout import DatasetLayout
from urn.errors import DataError
from urn.io import save_palette_png


def _image(path: Path, h: int = 6, w: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), 120, np.uint8)).save(path, quality=90)


def _grey(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8), mode="L").save(path)


def make_voc(root: Path, ids: tuple[str, ...] = ("a", "b", "c")) -> Path:
    for i, image_id in enumerate(ids):
        _image(root / "JPEGImages" / f"{image_id}.jpg")
        mask = np.zeros((6, 8), np.uint8)
        mask[1:4, 1:4] = 1 + i  # classes 1, 2, 3
        mask[0, 0] = 255
        save_palette_png(root / "SegmentationClass" / f"{image_id}.png", mask)
    split = root / "ImageSets" / "Segmentation"
    split.mkdir(parents=True, exist_ok=True)
    (split / "train.txt").write_text("".join(f"{i}\n" for i in ids))
    return root


def make_coco(root: Path) -> Path:
    ids = ("COCO_train2014_000000000009", "COCO_train2014_000000000025")
    for image_id, cat in zip(ids, (90, 13), strict=True):
        _image(root / "images" / f"{image_id}.jpg")
        mask = np.zeros((6, 8), np.uint8)
        mask[2:5, 2:6] = cat
        _grey(root / "voc_format" / "class_labels" / f"{image_id}.png", mask)
    (root / "voc_format" / "train.txt").write_text("\n".join(ids) + "\n")
    vectors = {}
    for image_id, cat in zip(ids, (90, 13), strict=True):
        v = np.zeros(90, np.float32)
        v[cat - 1] = 1
        vectors[image_id] = v
    np.save(root / "voc_format" / "cls_labels.npy", vectors)
    return root


# ------------------------------------------------------------------------------------------- VOC
def test_voc_layout_reads(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "voc")
    ds = DatasetLayout.open(root)
    assert ds.kind == "voc" and ds.classes.num_classes == 21
    assert ds.gt_dir == root / "SegmentationClass"
    assert ds.ids("train") == ["a", "b", "c"]
    assert ds.image_path("a") == root / "JPEGImages" / "a.jpg"
    img = ds.read_image("b")
    assert img.shape == (6, 8, 3) and img.dtype == np.uint8
    gt = ds.read_gt("b", check_size=True)
    assert gt.dtype == np.uint8 and gt.shape == (6, 8) and set(np.unique(gt)) == {0, 2, 255}


def test_voc_prefers_segmentation_class_aug(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "voc")
    aug = root / "SegmentationClassAug"
    _grey(aug / "a.png", np.full((6, 8), 7))
    ds = DatasetLayout.open(root, "voc")
    assert ds.gt_dir == aug and set(np.unique(ds.read_gt("a"))) == {7}


def test_voc_gt_errors(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "voc")
    _grey(root / "SegmentationClass" / "a.png", np.full((5, 8), 21))
    ds = DatasetLayout.open(root)
    with pytest.raises(DataError, match=r"a\.png.*21"):
        ds.read_gt("a")
    _grey(root / "SegmentationClass" / "a.png", np.full((5, 8), 3))
    with pytest.raises(DataError, match=r"a\.png: mask size 8x5 != image size 8x6"):
        ds.read_gt("a", check_size=True)
    (root / "SegmentationClass" / "b.png").unlink()
    with pytest.raises(DataError, match="b.png: file not found"):
        ds.read_gt("b")


@pytest.mark.parametrize(("on_disk", "asked"), [("train_aug", "trainaug"), ("trainaug", "train_aug")])
def test_trainaug_alias(tmp_path: Path, on_disk: str, asked: str) -> None:
    root = make_voc(tmp_path / "voc")
    (root / "ImageSets" / "Segmentation" / f"{on_disk}.txt").write_text("a\nb\n")
    assert DatasetLayout.open(root).ids(asked) == ["a", "b"]


def test_split_file_tolerates_formatting(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "voc")
    split = root / "ImageSets" / "Segmentation" / "messy.txt"
    split.write_bytes(b"\xef\xbb\xbfa  \r\n\r\n  b\t\r\n/JPEGImages/c.jpg /SegmentationClassAug/c.png\r\n\n")
    assert DatasetLayout.open(root).ids("messy") == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("a\nb\na\n", r"messy\.txt: line 3: duplicate id 'a' \(first on line 1\)"),
        ("a\n..\n", r"messy\.txt: line 2: .*'\.\.'"),
        ("../secret\n", r"line 1: "),
        ("a\nsub/b\n", r"line 2: .*path separator"),
        ("a\\b\n", r"line 1: .*path separator"),
        ("/etc/passwd\n", r"line 1: .*path separator"),
        ("C:evil\n", r"line 1: .*absolute"),
        ("a b c\n", r"line 1: expected one id per line"),
        ("\n \r\n", r"messy\.txt: no ids"),
        ("", r"messy\.txt: no ids"),
    ],
)
def test_split_file_rejects(tmp_path: Path, content: str, match: str) -> None:
    root = make_voc(tmp_path / "voc")
    (root / "ImageSets" / "Segmentation" / "messy.txt").write_text(content)
    with pytest.raises(DataError, match=match):
        DatasetLayout.open(root).ids("messy")


def test_missing_split_and_unsafe_lookups(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "voc")
    ds = DatasetLayout.open(root)
    with pytest.raises(DataError, match=r"val\.txt: split file not found \(available: train\)"):
        ds.ids("val")
    with pytest.raises(DataError):
        ds.ids("../train")
    with pytest.raises(DataError):
        ds.image_path("../x")


def test_layout_detection_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        DatasetLayout.open(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="neither"):
        DatasetLayout.open(tmp_path / "empty")
    make_voc(tmp_path / "devkit" / "VOC2012")
    with pytest.raises(DataError, match="did you mean"):
        DatasetLayout.open(tmp_path / "devkit")
    with pytest.raises(DataError):
        DatasetLayout.open(tmp_path / "devkit" / "VOC2012", "coco")


def test_image_path_other_extension(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "voc")
    (root / "JPEGImages" / "a.jpg").rename(root / "JPEGImages" / "a.png")
    ds = DatasetLayout.open(root)
    assert ds.image_path("a").suffix == ".png" and ds.read_image("a").shape == (6, 8, 3)
    assert ds.image_path("zz") == root / "JPEGImages" / "zz.jpg"


# ---------------------------------------------------------------------------------- image labels
def test_labels_json_and_missing_file(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "voc")
    ds = DatasetLayout.open(root)
    with pytest.raises(DataError, match=r"cls_labels\.json: .*urn data labels"):
        ds.image_labels()
    (root / "cls_labels.json").write_text(json.dumps({"a": [3, 1], "b": [0, 20], "c": []}))
    ds.forget_labels()
    assert ds.image_labels() == {"a": (1, 3), "b": (20,), "c": ()}
    (root / "cls_labels.json").write_text(json.dumps({"a": [21]}))
    ds.forget_labels()
    with pytest.raises(DataError, match=r"cls_labels\.json: id 'a': label 21"):
        ds.image_labels()
    (root / "cls_labels.json").write_text("{oops")
    with pytest.raises(DataError, match="invalid JSON"):
        load_labels_file(root / "cls_labels.json", ds.classes)


def test_labels_npy_voc_seam_and_irn(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "voc")
    v = np.zeros(20, np.float32)
    v[[0, 14]] = 1  # aeroplane (1), person (15)
    np.save(root / "cls_labels.npy", {"a": v, 2007000032: np.eye(20, dtype=np.float32)[2]})
    labels = DatasetLayout.open(root).image_labels()
    assert labels == {"a": (1, 15), "2007_000032": (3,)}
    np.save(root / "cls_labels.npy", {"a": np.zeros(21, np.float32)})
    with pytest.raises(DataError, match=r"cls_labels\.npy: id 'a': label vector has 21 entries, expected 20"):
        DatasetLayout.open(root).image_labels()
    np.save(root / "cls_labels.npy", np.zeros((3, 20)))
    with pytest.raises(DataError, match="plain array"):
        DatasetLayout.open(root).image_labels()
    np.save(root / "cls_labels.npy", {"a": np.full(20, np.nan)})
    with pytest.raises(DataError, match="NaN"):
        DatasetLayout.open(root).image_labels()


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {_Evil.marker}",))

    marker = ""


def test_labels_npy_refuses_arbitrary_pickles(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "voc")
    _Evil.marker = str(tmp_path / "pwned")
    np.save(root / "cls_labels.npy", np.array({"a": _Evil()}, dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="refusing to load"):
        DatasetLayout.open(root).image_labels()
    assert not (tmp_path / "pwned").exists()


def test_derive_and_write_labels_merges(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "voc")
    ds = DatasetLayout.open(root)
    (root / "cls_labels.json").write_text(json.dumps({"other": [5], "a": [9]}))
    labels = derive_labels(ds, "train")
    assert labels == {"a": (1,), "b": (2,), "c": (3,)}
    write_labels(ds, labels)
    data = json.loads((root / "cls_labels.json").read_text())
    assert data == {"other": [5], "a": [1], "b": [2], "c": [3]}
    assert ds.image_labels()["a"] == (1,)
    assert not list(root.glob("*.urn-tmp"))
    # the classifier's multi-hot targets from these labels: entry k - 1 = class k (torch: import here)
    from urn.cam.data import CAMTrainDataset
    from urn.config import CAMConfig

    targets = CAMTrainDataset(ds, ["a", "c"], {"a": (1, 3), "c": (3,)}, CAMConfig()).targets
    assert targets.shape == (2, 20) and targets.dtype == np.float32
    assert np.argwhere(targets).tolist() == [[0, 0], [0, 2], [1, 2]]


# ------------------------------------------------------------------------------------------ COCO
def test_coco_voc_format(tmp_path: Path) -> None:
    root = make_coco(tmp_path / "coco")
    ds = DatasetLayout.open(root)
    assert ds.kind == "coco" and ds.classes.num_classes == 81
    ids = ds.ids("train")
    assert ids == ["COCO_train2014_000000000009", "COCO_train2014_000000000025"]
    assert set(np.unique(ds.read_gt(ids[0], check_size=True))) == {0, 80}  # raw 90 -> 80
    assert set(np.unique(ds.read_gt(ids[1]))) == {0, 12}  # raw 13 -> 12
    assert ds.labels_file() == root / "voc_format" / "cls_labels.npy"
    assert ds.image_labels() == {ids[0]: (80,), ids[1]: (12,)}
    # the same labels as urn's JSON (raw category ids) take precedence
    (root / "cls_labels.json").write_text(json.dumps({ids[0]: [90, 1]}))
    ds.forget_labels()
    assert ds.image_labels() == {ids[0]: (1, 80)}
    derived = derive_labels(ds, "train")
    write_labels(ds, derived)
    assert json.loads((root / "cls_labels.json").read_text()) == {ids[0]: [90], ids[1]: [13]}


def test_coco_npy_rejects_unused_ids_and_bad_masks(tmp_path: Path) -> None:
    root = make_coco(tmp_path / "coco")
    v = np.zeros(90, np.float32)
    v[11] = 1  # category 12 is unused
    np.save(root / "voc_format" / "cls_labels.npy", {"x": v})
    with pytest.raises(DataError, match=r"labels \[12\]"):
        DatasetLayout.open(root).image_labels()
    np.save(root / "voc_format" / "cls_labels.npy", {"x": np.zeros(80, np.float32)})
    with pytest.raises(DataError, match="80 entries, expected 90"):
        DatasetLayout.open(root).image_labels()
    ds = DatasetLayout.open(root)
    _grey(ds.gt_path("bad"), np.full((6, 8), 26))
    with pytest.raises(DataError, match=r"bad\.png.*26"):
        ds.read_gt("bad")


# --------------------------------------------------------------------------------------- generic
def test_generic_dataset_with_own_classes(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "gen", ids=("x1", "x2", "x3"))
    (root / "classes.txt").write_text("background\nsky\ntree\ncar\nroad\nperson\n")
    _grey(root / "SegmentationClass" / "x3.png", np.full((6, 8), 5))
    ds = DatasetLayout.open(root)
    assert ds.classes.names[5] == "person" and ds.classes.num_classes == 6
    assert set(np.unique(ds.read_gt("x3"))) == {5}
    _grey(root / "SegmentationClass" / "x3.png", np.full((6, 8), 6))
    with pytest.raises(DataError, match="outside|not among"):
        ds.read_gt("x3")
    np.save(root / "cls_labels.npy", {"x1": np.array([0, 0, 0, 0, 1.0])})
    assert ds.image_labels() == {"x1": (5,)}
    np.save(root / "cls_labels.npy", {"x1": np.zeros(20)})
    ds.forget_labels()
    with pytest.raises(DataError, match="expected 5"):
        ds.image_labels()
    # an explicit classes file wins over ROOT/classes.txt
    other = tmp_path / "two.txt"
    other.write_text("bg\nthing\n")
    assert DatasetLayout.open(root, classes_file=other).classes.num_classes == 2
