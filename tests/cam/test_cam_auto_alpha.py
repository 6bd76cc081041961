"""``pmm.bg_power: auto``: Otsu's threshold of the smoothed CAMs, turned into alpha, from CAM files only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from urn.cam.make_masks import AUTO_ALPHA_FILE, auto_bg_power, pseudo_mask
from urn.cam.make_masks import run as make_masks
from urn.cam.pmm import bg_power_for_threshold, otsu_threshold, smoothed_foreground_values
from urn.config import PMMConfig, load_config
from urn.data.layout import DatasetLayout


def test_otsu_splits_two_modes() -> None:
    values = np.r_[np.full(300, 0.2), np.full(100, 0.8)]
    t = otsu_threshold(values)
    assert 0.2 < t <= 0.8
    # between-class variance is flat across the gap: the first cut after the low mode wins
    assert t == pytest.approx(np.ceil(0.2 * 256) / 256, abs=1 / 256)


def test_otsu_of_nothing_or_a_constant_is_the_middle() -> None:
    assert otsu_threshold(np.zeros(0)) == 0.5
    assert otsu_threshold(np.full(10, 0.3)) == 0.5


def test_alpha_crosses_at_the_threshold() -> None:
    assert bg_power_for_threshold(0.5) == pytest.approx(1.0)
    for tau in (0.155, 0.3, 0.72):
        alpha = bg_power_for_threshold(tau)
        assert (1 - tau) ** alpha == pytest.approx(tau, rel=1e-9)
    # the reference's alpha = 11 is the crossing at tau ~ 0.155
    assert bg_power_for_threshold(0.155) == pytest.approx(11.0, abs=0.2)


def test_smoothed_values_drop_inactive_pixels() -> None:
    cams = np.array([[[0.0, 0.04], [0.5, 1.0]]], np.float32)
    # CV = 0.1 (test_cam_pmm): smoothed actives are 0.5 ** 0.9 and 1.0
    np.testing.assert_allclose(np.sort(smoothed_foreground_values(cams)), [0.5**0.9, 1.0], rtol=1e-6)


def _write_cams(demo: Path, out: Path, high: float) -> DatasetLayout:
    """CAMs with a strong square (``high``) on a weak plateau (0.3) for every tagged class."""
    layout = DatasetLayout.open(str(demo), "voc", None)
    out.mkdir()
    tags = layout.image_labels()
    for image_id in layout.ids("train"):
        h, w = layout.image_size(image_id)
        classes = np.array(tags[image_id], np.int64)
        cams = np.full((len(classes), h, w), 0.3, np.float16)
        cams[:, h // 4 : h // 2, w // 4 : w // 2] = high
        np.savez(out / f"{image_id}.npz", classes=classes, cams=cams)
    return layout


def test_auto_alpha_reads_cams_only_and_is_written(demo_copy: Path, tmp_path: Path) -> None:
    layout = _write_cams(demo_copy, tmp_path / "cams", high=1.0)
    # the ground truth is not needed: remove it
    for png in (demo_copy / "SegmentationClass").glob("*.png"):
        png.unlink()
    chosen = auto_bg_power(layout, layout.ids("train"), tmp_path / "cams", PMMConfig())
    assert 0.3 < chosen["otsu_threshold"] <= 1.0
    assert chosen["images"] == len(layout.ids("train"))
    cfg = load_config("demo", [f"data.root={demo_copy}", "pmm.bg_power=auto"])
    out = make_masks(cfg, tmp_path / "cams", "train", tmp_path / "masks")
    written = json.loads((out / AUTO_ALPHA_FILE).read_text())
    assert written["bg_power"] == pytest.approx(chosen["bg_power"])
    assert len(list(out.glob("*.png"))) == len(layout.ids("train"))


def test_auto_alpha_follows_the_cams(demo_copy: Path, tmp_path: Path) -> None:
    """Sharper objects (a higher mode) move the threshold up and alpha down: the rule adapts to the CAMs."""
    layout = _write_cams(demo_copy, tmp_path / "weak", high=0.6)
    _write_cams(demo_copy, tmp_path / "strong", high=1.0)
    weak = auto_bg_power(layout, layout.ids("train"), tmp_path / "weak", PMMConfig())
    strong = auto_bg_power(layout, layout.ids("train"), tmp_path / "strong", PMMConfig())
    assert strong["otsu_threshold"] > weak["otsu_threshold"]
    assert strong["bg_power"] < weak["bg_power"]


def test_pseudo_mask_refuses_an_unresolved_auto() -> None:
    with pytest.raises(ValueError, match="auto"):
        pseudo_mask(np.zeros((4, 4, 3), np.uint8), [1], np.zeros((1, 4, 4), np.float32), PMMConfig(bg_power="auto"))
