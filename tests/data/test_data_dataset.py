"""SegmentationDataset: targets, weights, formats, errors, determinism, GT isolation."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, default_collate

from urn.config import DataConfig
from urn.data.dataset import SegmentationDataset
from urn.data.layout import DatasetLayout, read_target
from urn.data.transforms import train_transforms
from urn.errors import DataError, UrnError
from urn.io import read_mask, save_palette_png


def pseudo_from_gt(root: Path, name: str = "pseudo") -> Path:
    """Pseudo-masks = GT with the ignore band set to background (like PMM output: no 255)."""
    out = root / name
    out.mkdir()
    for gt in sorted((root / "SegmentationClass").glob("*.png")):
        mask = read_mask(gt).copy()
        mask[mask == 255] = 0
        save_palette_png(out / gt.name, mask)
    return out


def hide_gt(root: Path) -> None:
    """Move the GT folder away (as root, chmod would not stop reads) and leave a trap file instead."""
    (root / "SegmentationClass").rename(root / "gt_hidden")
    (root / "SegmentationClass").write_text("not a folder")


def test_pseudo_masks_never_touch_ground_truth(demo_copy: Path) -> None:
    pseudo = pseudo_from_gt(demo_copy)
    hide_gt(demo_copy)
    layout = DatasetLayout.open(demo_copy)
    assert layout.gt_dir is None
    ds = SegmentationDataset(layout, "train", target_dir=pseudo)
    assert len(ds) == 6
    for key in range(len(ds)):
        item = ds[key]
        assert item["image"].dtype == torch.float32 and item["image"].shape == (3, 48, 64)
        assert item["target"].dtype == torch.int64 and item["target"].shape == (48, 64)
        assert item["weight"].dtype == torch.float32 and bool((item["weight"] == 1).all())
        assert item["id"] == f"train_{key:04d}" and item["index"] == key
        assert int(item["target"].max()) < 6


def test_requires_pseudo_masks_unless_fully_supervised(demo_copy: Path) -> None:
    layout = DatasetLayout.open(demo_copy)
    with pytest.raises(UrnError, match="no pseudo-mask folder"):
        SegmentationDataset(layout, "train", target_dir=None)
    ds = SegmentationDataset(layout, "val", target_dir=None, fully_supervised=True)
    item = ds[1]
    assert np.array_equal(item["target"].numpy(), layout.read_gt("val_0001"))
    with pytest.raises(DataError, match="pseudo-mask folder not found"):
        SegmentationDataset(layout, "train", target_dir="nope")


def test_relative_target_dir_is_found_under_root(demo_copy: Path) -> None:
    pseudo_from_gt(demo_copy, "ppmg")
    ds = SegmentationDataset(DatasetLayout.open(demo_copy), "train", target_dir="ppmg")
    assert ds.target_dir == demo_copy / "ppmg"


def test_keys_wrap_and_augmentations_are_reproducible(demo_copy: Path) -> None:
    pseudo = pseudo_from_gt(demo_copy)
    layout = DatasetLayout.open(demo_copy)
    tf = train_transforms(DataConfig(base_size=(96, 48), crop_size=32))
    ds = SegmentationDataset(layout, "train", target_dir=pseudo, transform=tf, seed=3)
    n = len(ds)
    a, b, c = ds[2], ds[2], ds[2 + n]
    assert a["index"] == c["index"] == 2 and a["id"] == c["id"]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["target"], b["target"])
    assert not torch.equal(a["image"], c["image"])  # epoch 1 augments differently
    other_seed = SegmentationDataset(layout, "train", target_dir=pseudo, transform=tf, seed=4)[2]
    assert not torch.equal(a["image"], other_seed["image"])
    assert a["image"].shape == (3, 32, 32)
    # padded pixels: target 255, weight 0; elsewhere weight 1
    padded = a["target"] == 255
    assert bool((a["weight"][padded] == 0).all()) and bool((a["weight"][~padded] == 1).all())
    with pytest.raises(IndexError):
        ds[-1]


def test_worker_processes_give_the_same_samples(demo_copy: Path) -> None:
    pseudo = pseudo_from_gt(demo_copy)
    tf = train_transforms(DataConfig(base_size=(96, 48), crop_size=32))
    ds = SegmentationDataset(DatasetLayout.open(demo_copy), "train", target_dir=pseudo, transform=tf)
    keys = [7, 1, 12, 5]
    main = default_collate([ds[k] for k in keys])
    loader = DataLoader(ds, batch_size=2, sampler=keys, num_workers=2)
    batches = list(loader)
    assert torch.equal(torch.cat([b["image"] for b in batches]), main["image"])
    assert torch.equal(torch.cat([b["target"] for b in batches]), main["target"])
    assert main["index"].tolist() == [1, 1, 0, 5]


def test_reference_three_channel_png(demo_copy: Path) -> None:
    """URN writes cv2.imwrite([label, w, w]) -> on disk B = label, R = G = w."""
    layout = DatasetLayout.open(demo_copy)
    urn_dir = demo_copy / "urn_r2n"
    urn_dir.mkdir()
    expected = {}
    rng = np.random.default_rng(0)
    for image_id in layout.ids("train"):
        label = read_mask(layout.gt_path(image_id)).copy()
        label[label == 255] = 0
        w = rng.choice(np.array([255, 113, 28, 0], np.uint8), size=label.shape)
        assert cv2.imwrite(str(urn_dir / f"{image_id}.png"), np.dstack([label, w, w]))
        expected[image_id] = (label, w)
    image_id = "train_0002"
    target, byte = read_target(urn_dir / f"{image_id}.png", layout)
    assert np.array_equal(target, expected[image_id][0]) and np.array_equal(byte, expected[image_id][1])
    assert np.array_equal(np.asarray(Image.open(urn_dir / f"{image_id}.png"))[..., 2], expected[image_id][0])

    ds = SegmentationDataset(layout, "train", target_dir=urn_dir, uncertainty_dir=urn_dir)
    item = ds[2]
    assert np.array_equal(item["target"].numpy(), expected[image_id][0])
    assert np.allclose(item["weight"].numpy(), expected[image_id][1] / 255.0)
    # without data.uncertainty the reference files' own weight channel is used, not thrown away
    own = SegmentationDataset(layout, "train", target_dir=urn_dir)
    assert own.weight_source == "pseudo_masks"
    assert np.allclose(own[2]["weight"].numpy(), expected[image_id][1] / 255.0)
    plain = SegmentationDataset(layout, "train", target_dir=layout.gt_dir)
    assert plain.weight_source is None and bool((plain[2]["weight"] == 1).all())
    with pytest.raises(UrnError, match=r"seg2.weighting=hard needs per-pixel weights.*data.uncertainty"):
        plain.require_weights("hard", "seg2")
    plain.require_weights("none", "seg2")
    own.require_weights("hard", "seg2")
    # one single-channel file among reference ones has no weights to give: an error naming it
    save_palette_png(urn_dir / f"{image_id}.png", expected[image_id][0])
    with pytest.raises(DataError, match=f"{image_id}.png.*no weight channel"):
        own.load(2)


def test_npy_uncertainty_and_errors(demo_copy: Path) -> None:
    pseudo = pseudo_from_gt(demo_copy)
    layout = DatasetLayout.open(demo_copy)
    unc = demo_copy / "unc"
    unc.mkdir()
    u = np.random.default_rng(0).random((48, 64)).astype(np.float16)
    np.save(unc / "train_0000.npy", u)
    ds = SegmentationDataset(layout, "train", target_dir=pseudo, uncertainty_dir=unc)
    assert np.allclose(ds[0]["weight"].numpy(), 1 - u.astype(np.float32))
    with pytest.raises(DataError, match=r"train_0001\.npy: no uncertainty file"):
        ds[1]
    np.save(unc / "train_0001.npy", np.full((48, 64), np.nan, np.float32))
    with pytest.raises(DataError, match=r"train_0001\.npy: uncertainty holds NaN"):
        ds[1]
    np.save(unc / "train_0001.npy", np.full((48, 64), 2.0, np.float32))
    with pytest.raises(DataError, match=r"outside \[0, 1\]"):
        ds[1]
    np.save(unc / "train_0001.npy", np.zeros((40, 64), np.float32))
    with pytest.raises(DataError, match=r"train_0001\.npy: weight size 64x40 != image size 64x48"):
        ds[1]
    np.save(unc / "train_0001.npy", np.zeros((48, 64), np.int64))
    with pytest.raises(DataError, match="2-d float"):
        ds[1]


def test_bad_targets(demo_copy: Path) -> None:
    pseudo = pseudo_from_gt(demo_copy)
    layout = DatasetLayout.open(demo_copy)
    ds = SegmentationDataset(layout, "train", target_dir=pseudo)
    save_palette_png(pseudo / "train_0000.png", np.zeros((47, 64), np.uint8))
    with pytest.raises(DataError, match=r"train_0000\.png: mask size 64x47 != image size 64x48"):
        ds[0]
    save_palette_png(pseudo / "train_0001.png", np.full((48, 64), 9, np.uint8))
    with pytest.raises(DataError, match=r"train_0001\.png: .*\[9\]"):
        ds[1]
    (pseudo / "train_0002.png").unlink()
    with pytest.raises(DataError, match=r"train_0002\.png: file not found"):
        ds[2]
    Image.fromarray(np.zeros((48, 64, 4), np.uint8)).save(pseudo / "train_0003.png")
    with pytest.raises(DataError, match="mode RGBA"):
        ds[3]
    (pseudo / "train_0004.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"train_0004\.png"):
        ds[4]
