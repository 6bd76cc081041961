"""RGB colour masks given as pseudo-masks, through the real CLI (issue 17, item 4).

An RGB PNG in a pseudo-mask folder used to be taken for the reference's 3-channel URN file whatever it
held: VOC-coloured masks became background (or "label values [192] not among the classes"), with no
word about how the file had been read. :mod:`urn.data.target_format` tells the formats apart by R = G,
and :func:`urn.data.layout.read_target` uses it.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from tests.reliability.conftest import assert_no_temp_files, assert_user_error
from tests.tiny import tiny_segmentor

from urn.io import IGNORE_INDEX, colorize
from urn.uncertainty_core import reference_png_array

TINY_SEG = [
    *tiny_segmentor("mobilenetv3_small_050", 8),
    "train.batch_size=2",
    "train.iters=2",
    "train.val_every=0",
]


@pytest.fixture(autouse=True)
def _no_progress_bars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("URN_NO_PROGRESS", "1")


def _masks(root: Path, folder: Path, to_rgb) -> Path:  # noqa: ANN001 - (H, W) labels -> (H, W, 3) RGB
    """One RGB PNG per train image, made from its ground truth by ``to_rgb``."""
    folder.mkdir()
    for image_id in (root / "ImageSets/Segmentation/train.txt").read_text().split():
        label = np.asarray(Image.open(root / "SegmentationClass" / f"{image_id}.png"))
        Image.fromarray(to_rgb(label)).save(folder / f"{image_id}.png")
    return folder


def _train(cli, root: Path, out: Path, masks: Path):
    return cli(
        "train", "demo", f"data.root={root}", *TINY_SEG, f"data.pseudo_masks={masks}",
        "--phase", "seg1", "--out", out, "--quiet",
    )  # fmt: skip


def _silent(label: np.ndarray) -> np.ndarray:
    """Every object as VOC's aeroplane colour (128, 0, 0), no ignore band: B = 0 everywhere."""
    return colorize(np.where((label > 0) & (label != IGNORE_INDEX), 1, 0).astype(np.uint8))


def test_voc_coloured_pseudo_masks_are_refused_saying_how_they_were_read(cli, demo_root, tmp_path):
    masks = _masks(demo_root, tmp_path / "colour", colorize)
    result = _train(cli, demo_root, tmp_path / "run", masks)
    assert_user_error(result, str(masks), ".png", "read as the reference's 3-channel URN file", "colour mask")
    assert not (tmp_path / "run" / "last.pt").exists()
    assert_no_temp_files(tmp_path / "run")


def test_colour_masks_that_would_read_as_all_background_are_refused(cli, demo_root, tmp_path):
    masks = _masks(demo_root, tmp_path / "colour", _silent)
    result = _train(cli, demo_root, tmp_path / "run", masks)  # trained on all-background targets, exit 0, before
    assert_user_error(result, str(masks), "R != G", "colour mask")
    assert not (tmp_path / "run" / "last.pt").exists()


def test_data_check_names_colour_pseudo_masks(cli, demo_root, tmp_path):
    masks = _masks(demo_root, tmp_path / "colour", _silent)
    result = cli("data", "check", demo_root, "--split", "train", "--masks", masks)
    assert result.code == 1 and "Traceback" not in result.text, result.text
    lines = [line for line in result.out.splitlines() if line.strip()]
    assert lines and all(str(masks) in line and "colour mask" in line for line in lines), lines


def test_reference_three_channel_masks_still_pass(cli, demo_root, tmp_path):
    rng = np.random.default_rng(0)

    def reference(label: np.ndarray) -> np.ndarray:  # what the reference's cv2.imwrite([label, w, w]) leaves
        bgr = reference_png_array(label, rng.random(label.shape).astype(np.float32))
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    masks = _masks(demo_root, tmp_path / "ref", reference)
    result = cli("data", "check", demo_root, "--split", "train", "--masks", masks)
    assert result.code == 0, result.text
