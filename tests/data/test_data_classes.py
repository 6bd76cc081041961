"""Class lists: VOC/COCO constants, raw <-> contiguous mapping, classes.txt, COCO mIoU equivalence."""

from __future__ import annotations

import numpy as np
import pytest

from urn.data.classes import (
    COCO_CATEGORY_IDS,
    COCO_CLASSES,
    VOC_CLASSES,
    ClassList,
    coco,
    read_classes_file,
    voc,
    write_classes_text,
)
from urn.errors import DataError
from urn.metrics import ConfusionMatrix


def test_constants() -> None:
    assert len(VOC_CLASSES) == 21 and VOC_CLASSES[0] == "background"
    assert VOC_CLASSES[1] == "aeroplane" and VOC_CLASSES[15] == "person" and VOC_CLASSES[20] == "tvmonitor"
    assert len(COCO_CATEGORY_IDS) == 80 and len(COCO_CLASSES) == 81
    assert not {12, 26, 29, 30, 45, 66, 68, 69, 71, 83} & set(COCO_CATEGORY_IDS)
    assert COCO_CATEGORY_IDS[0] == 1 and COCO_CATEGORY_IDS[-1] == 90
    assert COCO_CLASSES[1] == "person" and COCO_CLASSES[-1] == "toothbrush"
    assert voc().num_classes == 21 and voc().is_identity
    assert coco().num_classes == 81 and not coco().is_identity and coco().max_raw_id == 90


def test_coco_round_trip_and_ignore() -> None:
    cl = coco()
    rng = np.random.default_rng(0)
    raw = rng.choice(np.array((0, *COCO_CATEGORY_IDS, 255)), size=(7, 9)).astype(np.uint8)
    train = cl.to_train(raw)
    assert train.dtype == np.uint8
    assert set(np.unique(train)) <= set(range(81)) | {255}
    assert np.array_equal(train == 255, raw == 255)
    assert np.array_equal(cl.to_raw(train), raw)
    assert cl.to_train(np.array([90]))[0] == 80 and cl.to_train(np.array([13]))[0] == 12


@pytest.mark.parametrize("bad", [12, 83, 91, 254])
def test_unknown_raw_id_raises(bad: int) -> None:
    with pytest.raises(ValueError, match=str(bad)):
        coco().to_train(np.array([[0, bad]], dtype=np.uint8))


def test_to_raw_out_of_range_and_identity() -> None:
    with pytest.raises(ValueError):
        coco().to_raw(np.array([81]))
    with pytest.raises(ValueError):
        voc().to_train(np.array([21]))
    with pytest.raises(ValueError):
        voc().to_train(np.array([-1]))
    mask = np.array([[0, 20, 255]], dtype=np.uint8)
    assert np.array_equal(voc().to_train(mask), mask)


def test_classlist_validation() -> None:
    with pytest.raises(ValueError):
        ClassList(("background",), (0,))
    with pytest.raises(ValueError):
        ClassList(("a", "b"), (0,))
    with pytest.raises(ValueError):
        ClassList(("a", "a"), (0, 1))
    with pytest.raises(ValueError):
        ClassList(("a", "b"), (0, 255))


def test_read_classes_file(tmp_path) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("background\r\n\n# comment\ncat \ndog\n", encoding="utf-8")
    cl = read_classes_file(plain)
    assert cl.names == ("background", "cat", "dog") and cl.raw_ids == (0, 1, 2)

    raw = tmp_path / "raw.txt"
    raw.write_text("0: background\n7: traffic light\n9: dog\n")
    cl = read_classes_file(raw)
    assert cl.names == ("background", "traffic light", "dog") and cl.raw_ids == (0, 7, 9)
    assert read_classes_file_text_round_trip(cl, tmp_path) == cl

    mixed = tmp_path / "mixed.txt"
    mixed.write_text("0: background\ncat\n")
    with pytest.raises(DataError, match="line 2"):
        read_classes_file(mixed)
    dup = tmp_path / "dup.txt"
    dup.write_text("background\ncat\ncat\n")
    with pytest.raises(DataError, match="dup.txt"):
        read_classes_file(dup)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(DataError, match="empty"):
        read_classes_file(empty)
    with pytest.raises(DataError):
        read_classes_file(tmp_path / "missing.txt")


def read_classes_file_text_round_trip(cl: ClassList, tmp_path) -> ClassList:
    path = tmp_path / "round.txt"
    path.write_text(write_classes_text(cl))
    return read_classes_file(path)


def test_coco_81_contiguous_miou_equals_reference_91_slots() -> None:
    """mmseg scores COCO over 91 raw slots with nanmean; unused slots are NaN, so 81 contiguous match."""
    cl = coco()
    rng = np.random.default_rng(1)
    used = np.array((0, *COCO_CATEGORY_IDS))
    # GT uses a subset of classes (some classes absent from GT but predicted, some absent from both).
    gt_ids = rng.choice(used[:40], size=(4, 30, 40))
    gt_ids[:, :2] = 255
    pred_ids = np.where(rng.random(gt_ids.shape) < 0.6, gt_ids, rng.choice(used[:60], size=gt_ids.shape))
    pred_ids[gt_ids == 255] = rng.choice(used, size=int((gt_ids == 255).sum()))

    ref = ConfusionMatrix(91)
    ref.update(gt_ids, pred_ids)
    ours = ConfusionMatrix(81)
    ours.update(cl.to_train(gt_ids.astype(np.uint8)), cl.to_train(pred_ids.astype(np.uint8)))
    ref_scores, our_scores = ref.compute(), ours.compute()

    assert np.isnan(ref_scores.iou[[12, 26, 29, 30, 45, 66, 68, 69, 71, 83]]).all()
    assert np.allclose(ref_scores.iou[list(cl.raw_ids)], our_scores.iou, equal_nan=True)
    assert our_scores.miou == pytest.approx(ref_scores.miou, abs=1e-12)
    assert our_scores.pixel_acc == pytest.approx(ref_scores.pixel_acc)
