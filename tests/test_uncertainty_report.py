"""`urn uncertainty-report`: AUROC / AP from histograms against hand-computed values, and the report's
counts on a hand-built uncertainty folder."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from urn.data.layout import DatasetLayout
from urn.io import atomic_save_npy, save_palette_png
from urn.stages.uncertainty_report import (
    auroc_from_histograms,
    average_precision_from_histograms,
    build_uncertainty_report,
)


def test_auroc_perfect_reversed_tied_and_hand_computed():
    assert auroc_from_histograms(np.array([0, 3]), np.array([2, 0])) == 1.0
    assert auroc_from_histograms(np.array([3, 0]), np.array([0, 2])) == 0.0
    assert auroc_from_histograms(np.array([0, 4, 0]), np.array([0, 5, 0])) == 0.5  # all tied
    # pos scores {1, 2}, neg scores {0, 1}: pairs (1>0)=1, (1=1)=.5, (2>0)=1, (2>1)=1 -> 3.5 / 4
    assert auroc_from_histograms(np.array([0, 1, 1]), np.array([1, 1, 0])) == pytest.approx(0.875)
    assert math.isnan(auroc_from_histograms(np.array([0, 0]), np.array([1, 1])))


def test_average_precision_hand_computed():
    # ranked high to low: bin 2 = {pos}, bin 1 = {pos, neg}, bin 0 = {neg}
    # recall steps 0.5 at precision 1, then 0.5 at precision 2/3 -> 0.5 + 1/3
    ap = average_precision_from_histograms(np.array([0, 1, 1]), np.array([1, 1, 0]))
    assert ap == pytest.approx(0.5 + 1 / 3)
    assert average_precision_from_histograms(np.array([0, 2]), np.array([5, 0])) == 1.0


def test_report_counts_wrong_pixels_and_what_the_hard_rule_mutes(demo_copy, tmp_path):
    layout = DatasetLayout.open(demo_copy, "voc", None)
    ids = layout.ids("train")
    udir = tmp_path / "unc"
    wrong_total = pixels = muted_fg = fg = muted_bg = bg = right_tied = 0
    for image_id in ids:
        gt = layout.read_gt(image_id)
        cyclic = gt.copy()
        cyclic[cyclic == 255] = 0
        h, w = gt.shape
        cyclic[:, : w // 4] = 0  # wrong wherever the GT has an object in the left quarter
        u = np.zeros((h, w), np.float32)
        u[:, : w // 4] = 1.0  # ... and those columns are the most uncertain, with the right half's top rows
        u[: h // 2, w // 2 :] = 1.0
        save_palette_png(udir / "masks" / f"{image_id}.png", cyclic)
        atomic_save_npy(udir / "uncertainty" / f"{image_id}.npy", u.astype(np.float16))
        valid = gt != 255
        wrong_total += int(((cyclic != gt) & valid).sum())
        pixels += int(valid.sum())
        right_tied += int(((cyclic == gt) & valid & (u == 1.0)).sum())
        fg += int((cyclic != 0).sum())
        bg += int((cyclic == 0).sum())
        muted_bg += int(((cyclic == 0) & (u >= 0.95)).sum())
        muted_fg += int(((cyclic != 0) & (u >= 0.95)).sum())
    report = build_uncertainty_report(layout, "train", udir, tmp_path / "out", weight_thresh=0.05, quiet=True)
    assert report["images"] == len(ids)
    assert report["wrong_pixel_rate"] == pytest.approx(wrong_total / pixels)
    assert wrong_total > 0
    # every wrong pixel has u = 1; right pixels have u = 0 except those in the u = 1 areas, which tie
    assert report["wrong_pixels_downweighted_by_hard"] == 1.0
    right = pixels - wrong_total
    assert report["auroc"] == pytest.approx((right - right_tied + 0.5 * right_tied) / right)
    assert 0 < muted_fg < fg
    assert report["foreground_downweighted_by_hard"] == pytest.approx(muted_fg / fg)
    assert report["background_downweighted_by_hard"] == pytest.approx(muted_bg / bg)
    assert json.loads((tmp_path / "out" / "uncertainty_report.json").read_text())["images"] == len(ids)
    assert (tmp_path / "out" / "error_by_decile.png").is_file()
    assert (tmp_path / "out" / "most_uncertain.png").is_file()
