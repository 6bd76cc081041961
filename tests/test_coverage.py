"""Label-free checks: tags vs masks, hand-computed on tiny folders; the pipeline's collapse warning."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from urn.coverage import mask_coverage, summary_line
from urn.data.classes import ClassList
from urn.data.layout import DatasetLayout
from urn.errors import DataError
from urn.io import save_palette_png


def _layout(root: Path) -> DatasetLayout:
    classes = ClassList.from_names(("background", "cat", "dog", "car"))
    return DatasetLayout(root, "voc", classes, root, None, root)


def _grey(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8), mode="L").save(path)


def test_hand_computed_rates_and_shares(tmp_path: Path) -> None:
    masks = tmp_path / "masks"
    a = np.zeros((4, 4), np.uint8)
    a[0, :4] = 1  # 4 cat pixels, no dog
    a[3, :2] = 255  # 2 ignored: 14 valid pixels
    b = np.zeros((4, 4), np.uint8)
    b[0] = 255  # 12 valid pixels, all background: cat missing, image empty
    c = np.zeros((4, 4), np.uint8)
    c[:2] = 2  # 8 dog
    c[2] = 3  # 4 car
    e = np.zeros((4, 4), np.uint8)
    e[0, :2] = 3  # 2 car
    e[1, 0] = 1  # 1 cat, not tagged: foreground, but no class's share
    for name, mask in {"a": a, "b": b, "c": c, "e": e}.items():
        save_palette_png(masks / f"{name}.png", mask)
    tags = {"a": (1, 2), "b": (1,), "c": (2, 3), "d": (), "e": (3,)}  # "d": untagged, its mask is never read

    cov = mask_coverage(_layout(tmp_path), ["a", "b", "c", "d", "e"], tags, masks)

    assert (cov.images, cov.tagged_images, cov.pairs, cov.missing_pairs, cov.empty_images) == (5, 4, 6, 2, 1)
    assert cov.missing_tag_rate == pytest.approx(2 / 6)  # a: dog, b: cat
    assert cov.empty_share == pytest.approx(1 / 4)  # b
    assert cov.foreground_share == pytest.approx((4 + 0 + 12 + 3) / (14 + 12 + 16 + 16))
    assert cov.per_class["cat"].tags == 2 and cov.per_class["cat"].foreground_share == pytest.approx(4 / (14 + 12))
    assert cov.per_class["dog"].tags == 2 and cov.per_class["dog"].foreground_share == pytest.approx(8 / (14 + 16))
    assert cov.per_class["car"].tags == 2 and cov.per_class["car"].foreground_share == pytest.approx(6 / (16 + 16))
    d = cov.as_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["per_class"]["dog"] == {"tags": 2, "foreground_share": pytest.approx(8 / 30)}
    line = summary_line(d)
    assert "missing from 33% of (image, tag) pairs" in line and "(cat)" in line


def test_nothing_tagged_and_a_missing_mask(tmp_path: Path) -> None:
    layout = _layout(tmp_path)
    cov = mask_coverage(layout, ["x"], {}, tmp_path)
    assert cov.missing_tag_rate is None and cov.empty_share is None and cov.per_class == {}
    assert summary_line(cov.as_dict()) == "no tagged image to check"
    with pytest.raises(DataError, match="file not found"):
        mask_coverage(layout, ["x"], {"x": (1,)}, tmp_path / "masks")


def test_coco_raw_ids_are_read_as_the_training_dataset_reads_them(tmp_path: Path) -> None:
    """COCO masks hold raw category ids; tags are contiguous indices (raw 90 -> 80, raw 13 -> 12)."""
    root = tmp_path / "coco"
    (root / "images").mkdir(parents=True)
    ids = ["COCO_train2014_000000000009", "COCO_train2014_000000000025"]
    (root / "voc_format").mkdir()
    (root / "voc_format" / "train.txt").write_text("\n".join(ids) + "\n")
    vectors = {}
    for image_id, cat in zip(ids, (90, 13), strict=True):
        v = np.zeros(90, np.float32)
        v[cat - 1] = 1
        vectors[image_id] = v
    np.save(root / "voc_format" / "cls_labels.npy", vectors)
    layout = DatasetLayout.open(root)
    tags = layout.image_labels()
    assert tags == {ids[0]: (80,), ids[1]: (12,)}
    masks = tmp_path / "masks"
    for image_id, raw in zip(ids, (90, 13), strict=True):
        mask = np.zeros((6, 8), np.uint8)
        mask[:3, :4] = raw  # 12 of 48 pixels
        _grey(masks / f"{image_id}.png", mask)

    cov = mask_coverage(layout, ids, tags, masks)

    # comparing raw values with contiguous tags would call both classes missing
    assert cov.missing_tag_rate == 0.0 and cov.empty_share == 0.0
    assert set(cov.per_class) == {"toothbrush", "stop sign"}
    assert cov.per_class["stop sign"].foreground_share == pytest.approx(12 / 48)
    # a contiguous index that is an unused raw id is refused, as training refuses it
    bad = np.zeros((6, 8), np.uint8)
    bad[0, 0] = 12
    _grey(masks / f"{ids[1]}.png", bad)
    with pytest.raises(DataError, match="12"):
        mask_coverage(layout, ids, tags, masks)


# ------------------------------------------------------------------------------ pipeline helpers
@pytest.mark.parametrize("stage", ["pseudo_masks", "uncertainty"])
def test_warning_fires_at_the_threshold_and_not_below(stage: str, capsys: pytest.CaptureFixture[str]) -> None:
    from urn.stages.checks import COLLAPSE_MISSING_TAG_RATE, warn_if_collapsed

    assert COLLAPSE_MISSING_TAG_RATE == 0.5
    assert not warn_if_collapsed(stage, {"missing_tag_rate": 0.49, "empty_share": 0.3})
    assert not warn_if_collapsed(stage, {"missing_tag_rate": None, "empty_share": None})
    assert capsys.readouterr() == ("", "")
    assert warn_if_collapsed(stage, {"missing_tag_rate": 0.5, "empty_share": 0.25})
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"WARNING [urn run] {stage}:") and err.count("\n") > 3
    assert "50% of (image, tag) pairs" in err and "25% of tagged images" in err
    if stage == "pseudo_masks":
        assert "pmm.bg_power" in err and "pmm.method=threshold" in err and "CAMs" in err
    else:
        assert "Seg-1 did not learn the objects" in err and "train.iters" in err and "train.pus" in err


def test_diagnose_notes_a_collapse() -> None:
    from urn.stages.checks import diagnose

    good = {"pseudo_masks": 60.0, "cyclic_masks": 63.0, "seg1": 40.0, "seg2": 42.0}
    healthy = {"pseudo_masks": {"missing_tag_rate": 0.1}, "cyclic_masks": {"missing_tag_rate": 0.49}}
    assert diagnose(good, None, healthy) == []
    assert diagnose(good, None, {"pseudo_masks": None, "cyclic_masks": None}) == []
    notes = diagnose({**good, "pseudo_masks": None}, None, {**healthy, "cyclic_masks": {"missing_tag_rate": 0.8}})
    assert len(notes) == 1 and notes[0].startswith("The cyclic masks lost most tagged objects") and "80%" in notes[0]


def test_check_coverage_writes_prints_and_warns(demo_copy: Path, tmp_path: Path, capsys) -> None:
    """The stage hook on the demo's 6 train images: ground truth as masks is healthy, all-background collapses."""
    from urn.config import load_config
    from urn.stages.checks import COVERAGE, check_coverage
    from urn.stages.configs import stage_configs

    masks = tmp_path / "masks"
    run = tmp_path / "run"
    ids = (demo_copy / "ImageSets/Segmentation/train.txt").read_text().split()
    masks.mkdir()
    for i in ids:
        (masks / f"{i}.png").write_bytes((demo_copy / "SegmentationClass" / f"{i}.png").read_bytes())
    cfg = load_config("demo", [f"data.root={demo_copy}", f"data.pseudo_masks={masks}"])
    configs = stage_configs(cfg, run)

    cov = check_coverage(configs, run, "pseudo_masks")
    out, err = capsys.readouterr()
    assert cov is not None and cov["missing_tag_rate"] == 0.0 and cov["masks"] == str(masks)
    assert json.loads((run / "pseudo_masks" / COVERAGE).read_text()) == cov
    assert out.startswith("[urn run] pseudo_masks: tagged classes missing from 0% of (image, tag) pairs")
    assert "WARNING" not in err

    for i in ids:
        save_palette_png(masks / f"{i}.png", np.zeros((48, 64), np.uint8))
    cov = check_coverage(configs, run, "pseudo_masks", quiet=True)
    out, err = capsys.readouterr()
    assert cov is not None and cov["missing_tag_rate"] == 1.0 and cov["empty_share"] == 1.0
    assert out == "" and "WARNING [urn run] pseudo_masks" in err

    (demo_copy / "cls_labels.json").unlink()  # no tags: the check is skipped, the run is not stopped
    assert check_coverage(configs, run, "pseudo_masks") is None
    assert "label-free check skipped" in capsys.readouterr().err
