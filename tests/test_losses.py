"""Losses against hand-computed values: CE with ignore, PUS (3 types x 2 mean modes), weighting."""

from __future__ import annotations

import math

import pytest
import torch

from urn.config import PUSConfig, TrainConfig
from urn.errors import UrnError
from urn.losses import (
    SegmentationLoss,
    balance_per_class,
    pixel_cross_entropy,
    pus_transform,
    uncertainty_weights,
)

# One image, 2 x 2 pixels; the bottom-right pixel is ignored (its loss is 0).
LOSS = torch.tensor([[[0.1, 0.9], [0.3, 0.0]]])
VALID = torch.tensor([[[True, True], [True, False]]])
# Means: over valid pixels 1.3 / 3 = 0.4333, over all pixels 1.3 / 4 = 0.325.


def test_pixel_cross_entropy_and_ignore() -> None:
    logits = torch.zeros(1, 4, 2, 2)
    target = torch.tensor([[[0, 3], [255, 1]]])
    loss = pixel_cross_entropy(logits, target)
    assert loss.shape == (1, 2, 2)
    torch.testing.assert_close(loss, torch.tensor([[[math.log(4), math.log(4)], [0.0, math.log(4)]]]))


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("clamp", [0.1, 0.5, 0.3, 0.0]),
        ("pow", [math.sqrt(0.1), math.sqrt(0.9), math.sqrt(0.3), 0.0]),
        ("ignore", [0.1, 0.0, 0.3, 0.0]),
    ],
)
@pytest.mark.parametrize("valid_mean", [True, False])
def test_pus_triggered(kind: str, expected: list[float], valid_mean: bool) -> None:
    cfg = PUSConfig(enabled=True, type=kind, beta=0.5, k=0.5)  # both means are below 0.5
    out, triggered = pus_transform(LOSS, VALID, cfg, valid_mean)
    assert bool(triggered)
    torch.testing.assert_close(out.flatten(), torch.tensor(expected), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", ["clamp", "pow", "ignore"])
def test_pus_trigger_depends_on_the_mean(kind: str) -> None:
    cfg = PUSConfig(enabled=True, type=kind, beta=0.4, k=0.5)
    out, triggered = pus_transform(LOSS, VALID, cfg, valid_mean=True)  # m = 0.433 >= 0.4: untouched
    assert not bool(triggered) and torch.equal(out, LOSS)
    out, triggered = pus_transform(LOSS, VALID, cfg, valid_mean=False)  # m = 0.325 < 0.4: transformed
    assert bool(triggered) and not torch.equal(out, LOSS)


def test_pus_clamp_stops_gradient_of_hard_pixels() -> None:
    loss = LOSS.clone().requires_grad_(True)
    out, _ = pus_transform(loss, VALID, PUSConfig(enabled=True, beta=0.5, k=0.5), valid_mean=True)
    out.sum().backward()
    assert loss.grad.flatten().tolist() == [1.0, 0.0, 1.0, 1.0]


def test_uncertainty_weights_hand_values() -> None:
    w = torch.tensor([0.0, 0.04, 0.05, 0.06, 0.5, 1.0])
    assert uncertainty_weights(w, "hard").tolist() == pytest.approx([0.05, 0.05, 0.05, 1.0, 1.0, 1.0])
    assert uncertainty_weights(w, "soft").tolist() == pytest.approx(w.tolist())
    assert uncertainty_weights(w, "none").tolist() == [1.0] * 6
    # The reference compares byte / 255 with 0.05: bytes 0..12 are down-weighted, 13 and up are not.
    bytes_ = torch.tensor([0, 12, 13, 28, 113, 255], dtype=torch.float32) / 255
    assert uncertainty_weights(bytes_, "hard").tolist() == pytest.approx([0.05, 0.05, 1, 1, 1, 1])
    assert uncertainty_weights(w, "hard", thresh=0.5).tolist() == pytest.approx([0.5] * 5 + [1.0])


def _logits_with_ce(values: list[float]) -> torch.Tensor:
    """(1, 2, 1, n) logits whose CE against class 0 is ``values`` (softplus inverse)."""
    z = torch.tensor([math.log(math.expm1(v)) for v in values])
    return torch.stack([torch.zeros_like(z), z])[None, :, None, :]


def test_segmentation_loss_means_and_aux() -> None:
    target = torch.tensor([[[0, 0, 0, 255]]])
    outputs = {"out": _logits_with_ce([0.2, 0.4, 0.6, 5.0]), "aux": _logits_with_ce([1.0, 1.0, 1.0, 1.0])}
    loss, parts = SegmentationLoss(aux_weight=0.4)(outputs, target)
    assert parts["loss_out"] == pytest.approx(0.4, rel=1e-4)  # (0.2 + 0.4 + 0.6) / 3 valid pixels
    assert parts["loss_aux"] == pytest.approx(1.0, rel=1e-4)
    assert float(loss) == pytest.approx(0.4 + 0.4 * 1.0, rel=1e-4) == parts["loss"]
    _, parts = SegmentationLoss(valid_mean=False)(outputs, target)
    assert parts["loss_out"] == pytest.approx(1.2 / 4, rel=1e-4)  # the reference: all pixels count (Q9)


def test_segmentation_loss_hard_weighting_then_pus() -> None:
    target = torch.tensor([[[0, 0, 0, 0]]])
    outputs = {"out": _logits_with_ce([0.2, 0.4, 0.6, 0.8])}
    weight = torch.tensor([[[1.0, 0.0, 1.0, 0.5]]])  # the second pixel is the most uncertain
    crit = SegmentationLoss(weighting="hard")
    _, parts = crit(outputs, target, weight)
    assert parts["loss_out"] == pytest.approx((0.2 + 0.05 * 0.4 + 0.6 + 0.8) / 4, rel=1e-4)
    assert "loss_aux" not in parts and "pus_out" not in parts
    # PUS runs on the weighted losses (reference order): mean 0.405 < 0.5 -> clamp at 0.5.
    crit = SegmentationLoss(weighting="hard", pus=PUSConfig(enabled=True, beta=0.5, k=0.5))
    _, parts = crit(outputs, target, weight)
    assert parts["pus_out"] == 1.0
    assert parts["loss_out"] == pytest.approx((0.2 + 0.02 + 0.5 + 0.5) / 4, rel=1e-4)
    _, parts = SegmentationLoss(weighting="none")(outputs, target, weight)  # weights ignored
    assert parts["loss_out"] == pytest.approx(0.5, rel=1e-4)


def test_balance_per_class_hand_values() -> None:
    # Class 0: weights 1, 1, 0.05 -> total 2.05 over 3 pixels; class 1: 0.05, 1 -> 1.05 over 2; one ignored.
    target = torch.tensor([[[0, 0, 0, 1, 1, 255]]])
    w = torch.tensor([[[1.0, 1.0, 0.05, 0.05, 1.0, 0.05]]])
    out = balance_per_class(w, target, target != 255, num_classes=3)
    s0, s1 = 3 / 2.05, 2 / 1.05
    assert out.flatten().tolist() == pytest.approx([s0, s0, 0.05 * s0, 0.05 * s1, s1, 0.05])
    assert float(out[target == 0].sum()) == pytest.approx(3.0) and float(out[target == 1].sum()) == pytest.approx(2.0)
    # Inside a class the reference's ratio (muted / kept = 0.05) is unchanged.
    assert float(out[0, 0, 2] / out[0, 0, 0]) == pytest.approx(0.05)


def test_segmentation_loss_class_balanced_hard_weighting() -> None:
    target = torch.tensor([[[0, 0, 1, 1]]])
    logits = torch.stack([_logits_with_ce([0.2, 0.4, 0.6, 0.8])[0, 1], torch.zeros(1, 4)])[None]
    weight = torch.tensor([[[1.0, 1.0, 0.0, 1.0]]])  # one pixel of class 1 is muted
    ce = pixel_cross_entropy(logits, target)[0, 0].tolist()
    _, parts = SegmentationLoss(weighting="hard", weight_balance="class")({"out": logits}, target, weight)
    s1 = 2 / 1.05  # class 1 keeps its total weight 2: its pixels weigh 0.05 * s1 and s1
    assert parts["loss_out"] == pytest.approx((ce[0] + ce[1] + 0.05 * s1 * ce[2] + s1 * ce[3]) / 4, rel=1e-4)
    with pytest.raises(UrnError, match="weight_balance: unknown 'x'"):
        SegmentationLoss(weighting="hard", weight_balance="x")


def test_all_ignored_batch_is_zero_and_differentiable() -> None:
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    target = torch.full((2, 4, 4), 255)
    loss, parts = SegmentationLoss(pus=PUSConfig(enabled=True))({"out": logits}, target)
    loss.backward()
    assert parts["loss"] == 0.0 and torch.all(logits.grad == 0)


def test_from_config_and_errors() -> None:
    tcfg = TrainConfig(weighting="soft", weight_thresh=0.1, valid_mean=False, pus=PUSConfig(enabled=True, k=0.7))
    crit = SegmentationLoss.from_config(tcfg, aux_weight=0.3)
    assert (crit.weighting, crit.weight_thresh, crit.valid_mean, crit.aux_weight, crit.pus.k) == (
        "soft",
        0.1,
        False,
        0.3,
        0.7,
    )
    with pytest.raises(UrnError, match="needs per-pixel weights"):
        crit({"out": torch.zeros(1, 2, 2, 2)}, torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(UrnError, match="unknown 'fuzzy'"):
        SegmentationLoss(weighting="fuzzy")
    with pytest.raises(ValueError, match="differ in size"):
        SegmentationLoss()({"out": torch.zeros(1, 2, 4, 4)}, torch.zeros(1, 2, 2, dtype=torch.long))
