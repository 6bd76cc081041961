"""Confusion-matrix metrics against hand-computed values."""

import numpy as np
import pytest

from urn.metrics import ConfusionMatrix


def test_hand_computed_confusion_matrix():
    gt = np.array([[0, 0, 1, 1], [2, 2, 255, 1]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 2, 0]])
    cm = ConfusionMatrix(3)
    cm.update(gt, pred)
    # rows = gt, cols = pred; the 255 pixel is ignored
    assert cm.mat.tolist() == [[1, 1, 0], [1, 2, 0], [1, 0, 1]]
    s = cm.compute()
    # IoU_0 = 1 / (2 + 3 - 1) = 0.25, IoU_1 = 2 / (3 + 3 - 2) = 0.5, IoU_2 = 1 / (2 + 1 - 1) = 0.5
    np.testing.assert_allclose(s.iou, [0.25, 0.5, 0.5])
    assert s.miou == pytest.approx(0.4166666, rel=1e-5)
    assert s.pixel_acc == pytest.approx(4 / 7)
    table = cm.table(["bg", "a", "b"])
    assert table.splitlines()[-1] == "mIoU=41.67"


def test_absent_class_is_nan_and_left_out_of_the_mean():
    cm = ConfusionMatrix(4)
    cm.update(np.array([0, 1, 1]), np.array([0, 1, 1]))
    s = cm.compute()
    assert np.isnan(s.iou[2]) and np.isnan(s.iou[3])
    assert s.miou == 1.0
    # a class predicted but absent from gt scores 0 (the reference's nanmean-over-union rule)
    cm.update(np.array([0]), np.array([3]))
    assert cm.compute().iou[3] == 0.0


def test_parts_add_up_to_joint_update_and_are_int64():
    rng = np.random.default_rng(0)
    gt, pred = rng.integers(0, 5, (2, 1000)), rng.integers(0, 5, (2, 1000))
    a, b, joint = ConfusionMatrix(5), ConfusionMatrix(5), ConfusionMatrix(5)
    a.update(gt[0], pred[0])
    b.update(gt[1], pred[1])
    joint.update(gt, pred)
    assert (a.mat + b.mat).tolist() == joint.mat.tolist()  # what all_reduce sums
    assert joint.mat.dtype == np.int64


def test_out_of_range_prediction_is_an_error():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="outside"):
        cm.update(np.array([0]), np.array([7]))


def test_update_mask_counts_unsure_pixels_as_background() -> None:
    from urn.metrics import ConfusionMatrix

    gt = np.array([[0, 1], [1, 255]])
    mask = np.array([[255, 1], [255, 1]])  # two unsure pixels (255), one on an object; gt 255 is skipped
    cm = ConfusionMatrix(2)
    cm.update_mask(gt, mask)
    assert cm.mat.tolist() == [[1, 0], [1, 1]]
