"""``check_dataset`` on a deliberately broken copy of the demo set: every problem is found."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from urn.data.check import check_dataset
from urn.data.layout import DatasetLayout
from urn.io import read_mask, save_palette_png


def _find(problems: list[str], *needles: str) -> str:
    hits = [p for p in problems if all(n in p for n in needles)]
    assert hits, f"no problem line with {needles} in:\n" + "\n".join(problems)
    return hits[0]


def test_clean_demo_has_no_problems(demo_root: Path) -> None:
    assert check_dataset(demo_root, "train") == []


def test_broken_dataset_reports_every_problem(demo_copy: Path) -> None:
    root = demo_copy
    jpg, gt = root / "JPEGImages", root / "SegmentationClass"
    ds = DatasetLayout.open(root)
    tags = json.loads((root / "cls_labels.json").read_text())

    # images: truncated, zero bytes, a folder, and an id without an image
    data = (jpg / "train_0000.jpg").read_bytes()
    (jpg / "train_0000.jpg").write_bytes(data[: len(data) // 2])
    (jpg / "train_0001.jpg").write_bytes(b"")
    (jpg / "train_0002.jpg").unlink()
    (jpg / "train_0002.jpg").mkdir()
    split = root / "ImageSets" / "Segmentation" / "train.txt"
    split.write_text(split.read_text() + "ghost\ntrain_0004\n../escape\n")
    # masks: wrong size, out-of-range labels, a missing mask
    save_palette_png(gt / "train_0003.png", np.zeros((40, 64), np.uint8))
    bad = read_mask(gt / "train_0004.png").copy()
    bad[0, :3] = [7, 200, 255]
    save_palette_png(gt / "train_0004.png", bad)
    # labels contradicting the mask, in both directions
    in_mask = sorted(int(v) for v in np.unique(ds.read_gt("train_0005")) if 0 < v < 255)
    not_in_mask = next(k for k in range(1, 6) if k not in in_mask)
    tags["train_0005"] = [*in_mask[1:], not_in_mask]
    (root / "cls_labels.json").write_text(json.dumps(tags))

    problems = check_dataset(root, "train")
    text = "\n".join(problems)
    _find(problems, "train_0000.jpg", "unreadable image")
    _find(problems, "train_0001.jpg", "empty file")
    _find(problems, "train_0002.jpg", "not a file")
    _find(problems, "ghost.jpg", "no image for id 'ghost'", "train.txt")
    _find(problems, "train.txt", "line 8", "duplicate id 'train_0004'")
    _find(problems, "train.txt", "line 9", "'../escape' contains a path separator")
    _find(problems, "train_0003.png", "mask size 64x40 != image size 64x48")
    _find(problems, "train_0004.png", "[7, 200]")
    names = DatasetLayout.open(root).classes.names
    _find(problems, "train_0005.png", "in the mask but not in the image labels", names[in_mask[0]])
    _find(problems, "train_0005.png", "tagged", "absent from the mask", names[not_in_mask])
    _find(problems, "SegmentationClass", "no ground-truth mask for 1 of 7 ids", "ghost")
    assert all(line.startswith(str(root)) for line in problems), text
    for clean in ("train_0003.jpg", "train_0004.jpg", "train_0005.jpg"):
        assert clean not in text


def test_mask_folder_and_label_vectors(demo_copy: Path) -> None:
    root = demo_copy
    masks = root / "pseudo"
    shutil.copytree(root / "SegmentationClass", masks)
    (masks / "train_0001.png").unlink()
    save_palette_png(masks / "train_0002.png", np.zeros((48, 60), np.uint8))
    save_palette_png(masks / "train_0003.png", np.full((48, 64), 6, np.uint8))
    (root / "cls_labels.json").unlink()
    np.save(root / "cls_labels.npy", {f"train_{i:04d}": np.zeros(21, np.float32) for i in range(6)})

    problems = check_dataset(root, "train", masks=masks)
    _find(problems, "train_0001.png", "no pseudo-mask")
    _find(problems, "pseudo/train_0002.png", "mask size 60x48 != image size 64x48")
    _find(problems, "pseudo/train_0003.png", "[6]")
    _find(problems, "cls_labels.npy", "21 entries, expected 5")
    assert len(problems) == 4

    np.save(root / "cls_labels.npy", {"train_0000": np.zeros(5, np.float32)})
    problems = check_dataset(root, "train")
    _find(problems, "cls_labels.npy", "no image-level labels for 5 of 6 ids")
    assert check_dataset(root, "train", masks=root / "nope")[0] == f"{root / 'nope'}: mask folder not found"


def test_missing_split_and_labels_are_reported(demo_copy: Path) -> None:
    assert check_dataset(demo_copy, "nope")[0].endswith("split file not found (available: train, val)")
    (demo_copy / "cls_labels.json").unlink()
    problems = check_dataset(demo_copy, "val")
    assert len(problems) == 1 and "urn data labels" in problems[0]
