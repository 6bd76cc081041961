"""Heads: logits at feature stride, mmseg layer names, typed keyword-only constructors."""

from __future__ import annotations

import pytest
import torch

from urn.errors import UrnError
from urn.models import HEADS
from urn.models.heads import DeepLabV3PlusHead, FCNHead, PSPHead

CHANNELS = [16, 24, 32, 40]


def _features(n: int = 2) -> list[torch.Tensor]:
    sizes = [(16, 12), (8, 6), (8, 6), (8, 6)]  # strides 4, 8, 8, 8 of a 64 x 48 input
    return [torch.rand(n, c, *s) for c, s in zip(CHANNELS, sizes, strict=True)]


def test_psp_head_shape_and_names() -> None:
    head = PSPHead(in_channels=CHANNELS, num_classes=5, channels=8, pool_sizes=(1, 2, 3, 6))
    assert head(_features()).shape == (2, 5, 8, 6)
    shapes = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    assert shapes["psp_modules.3.1.conv.weight"] == (8, 40, 1, 1)
    assert shapes["psp_modules.0.1.bn.running_var"] == (8,)
    assert shapes["bottleneck.conv.weight"] == (8, 40 + 4 * 8, 3, 3)
    assert shapes["conv_seg.weight"] == (5, 8, 1, 1)
    assert "bottleneck.conv.bias" not in shapes  # bias-free conv before BN
    assert head.conv_seg.weight.std() < 0.05 and torch.all(head.conv_seg.bias == 0)


def test_fcn_head_uses_third_stage() -> None:
    head = FCNHead(in_channels=CHANNELS, num_classes=5, channels=8)
    assert head(_features()).shape == (2, 5, 8, 6)
    assert tuple(head.state_dict()["convs.0.conv.weight"].shape) == (8, 32, 3, 3)


def test_deeplabv3plus_head_at_stride_4() -> None:
    head = DeepLabV3PlusHead(in_channels=CHANNELS, num_classes=5, channels=8, low_level_channels=4)
    head.train()
    out = head(_features())
    assert out.shape == (2, 5, 16, 12)
    out.sum().backward()
    assert head.c1_bottleneck.conv.weight.grad is not None


def test_heads_are_keyword_only_and_registered() -> None:
    assert {"psp": PSPHead, "fcn": FCNHead, "deeplabv3plus": DeepLabV3PlusHead} == HEADS
    for cls in HEADS.values():
        with pytest.raises(TypeError):
            cls(CHANNELS, 5)  # type: ignore[misc]
        head = cls(in_channels=CHANNELS, num_classes=3, channels=8, dropout=0.0).eval()
        with torch.no_grad():
            assert head(_features(1)).shape[:2] == (1, 3)


@pytest.mark.parametrize("cls", [PSPHead, DeepLabV3PlusHead])
def test_pooled_heads_need_two_images_in_training(cls: type) -> None:
    head = cls(in_channels=CHANNELS, num_classes=3, channels=8).train()
    with pytest.raises(UrnError, match="at least 2 images per device"):
        head(_features(1))
    with torch.no_grad():
        assert head.eval()(_features(1)).shape[:2] == (1, 3)  # inference is fine with one image
