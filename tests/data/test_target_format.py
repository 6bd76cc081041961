"""RGB pseudo-masks: the reference's 3-channel URN file is told from colour masks by R = G (issue 17, item 4)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from urn.data.target_format import classify_rgb_target, split_rgb_target
from urn.errors import DataError
from urn.io import colorize
from urn.uncertainty_core import reference_png_array


def _label(h: int = 24, w: int = 32) -> np.ndarray:
    label = np.zeros((h, w), np.uint8)
    label[4:14, 5:20] = 1
    label[10:20, 18:30] = 3
    label[13, 5:20] = 255  # an ignore band
    return label


def _read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_reference_file_written_by_cv2_is_urn3(tmp_path):
    label = _label()
    u = np.random.default_rng(0).random(label.shape).astype(np.float32)
    cv2.imwrite(str(tmp_path / "ref.png"), reference_png_array(label, u))  # the reference's [label, w, w]
    rgb = _read_rgb(tmp_path / "ref.png")
    assert classify_rgb_target(rgb) == "urn3"
    got, weight = split_rgb_target(rgb, tmp_path / "ref.png")
    assert np.array_equal(got, label)
    assert np.array_equal(weight, reference_png_array(label, u)[:, :, 1])
    assert got.flags.c_contiguous and weight.flags.c_contiguous


def test_voc_coloured_mask_is_colour_and_refused_saying_how_it_was_read(tmp_path):
    path = tmp_path / "2007_000032.png"
    Image.fromarray(colorize(_label())).save(path)  # aeroplane (128, 0, 0), bird (128, 128, 0), border (224, 224, 192)
    rgb = _read_rgb(path)
    assert classify_rgb_target(rgb) == "colour"
    with pytest.raises(DataError) as err:
        split_rgb_target(rgb, path)
    message = str(err.value)
    assert message.startswith(f"{path}: ")
    assert "read as the reference's 3-channel URN file (R = G = loss weight, B = label)" in message
    n = int((_label() == 1).sum())  # only aeroplane's colour has R != G
    assert f"R != G at {n} of 768 pixels (first at x=5, y=4: RGB (128, 0, 0))" in message
    assert "colour mask" in message and "single-channel" in message
    assert "\n" not in message


def test_mask_that_only_the_blue_channel_would_silently_empty_is_refused(tmp_path):
    label = (_label() == 1).astype(np.uint8)  # aeroplane only: B = 0 everywhere, read as all background
    rgb = colorize(label)
    assert not rgb[:, :, 2].any()
    assert classify_rgb_target(rgb) == "colour"
    with pytest.raises(DataError, match="colour mask"):
        split_rgb_target(rgb, tmp_path / "a.png")


def test_grey_mask_stored_as_rgb_is_read_as_that_mask_without_weights(tmp_path):
    label = _label()
    path = tmp_path / "grey.png"
    Image.fromarray(label, mode="L").convert("RGB").save(path)
    rgb = _read_rgb(path)
    assert classify_rgb_target(rgb) == "grey"
    got, weight = split_rgb_target(rgb, path)
    assert np.array_equal(got, label) and weight is None


def test_all_background_with_full_weight_is_urn3():
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[:, :, :2] = 255  # w = 255 (U = 0), label 0
    assert classify_rgb_target(rgb) == "urn3"


@pytest.mark.parametrize("value", [0, 255])
def test_a_file_of_one_value_reads_the_same_either_way_and_keeps_its_weight(value):
    rgb = np.full((4, 5, 3), value, np.uint8)  # e.g. all ignore with constant uncertainty: w = 255
    assert classify_rgb_target(rgb) == "urn3"
    label, weight = split_rgb_target(rgb, "x.png")
    assert (label == value).all() and weight is not None and (weight == value).all()


def test_colour_mask_with_only_r_equal_g_colours_cannot_be_told_apart():
    """The documented limit: background + bird (128, 128, 0) has R = G everywhere."""
    rgb = colorize((_label() == 3).astype(np.uint8) * 3)
    assert classify_rgb_target(rgb) == "urn3"


def test_not_an_rgb_array():
    with pytest.raises(ValueError, match="expected an \\(H, W, 3\\) RGB array"):
        classify_rgb_target(np.zeros((4, 5), np.uint8))
