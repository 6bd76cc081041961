"""Segmentor: output dict, sizes, aux only in training, registry errors, channels_last."""

from __future__ import annotations

import pytest
import torch

from urn.config import BackboneConfig, ModelConfig, load_config
from urn.errors import ConfigError
from urn.models import Segmentor, build_segmentor


def _cfg(**kw: object) -> ModelConfig:
    return ModelConfig(backbone=BackboneConfig(name="resnet18"), head_channels=16, aux_channels=8, **kw)


def test_outputs_in_train_and_eval() -> None:
    model = build_segmentor(_cfg(), num_classes=4)
    assert isinstance(model, Segmentor)
    x = torch.rand(2, 3, 65, 47)  # not a multiple of 8: logits still come back at input size
    out = model.train()(x)
    assert set(out) == {"out", "aux"}
    assert out["out"].shape == out["aux"].shape == (2, 4, 65, 47)
    (out["out"].mean() + out["aux"].mean()).backward()
    with torch.no_grad():
        out = model.eval()(x)
    assert set(out) == {"out"} and out["out"].shape == (2, 4, 65, 47)


def test_no_aux_head() -> None:
    model = build_segmentor(_cfg(aux_head=False), num_classes=3)
    assert model.aux_head is None
    assert set(model.train()(torch.rand(2, 3, 32, 32))) == {"out"}


def test_deeplabv3plus_segmentor() -> None:
    model = build_segmentor(_cfg(head="deeplabv3plus", aux_head=False), num_classes=3).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 64))["out"].shape == (1, 3, 64, 64)


def test_unknown_head_lists_valid_keys() -> None:
    with pytest.raises(ConfigError, match="unknown head 'nope'.*psp, fcn, deeplabv3plus"):
        build_segmentor(_cfg(head="nope"), num_classes=3)


def test_channels_last_matches_contiguous() -> None:
    torch.manual_seed(0)
    model = build_segmentor(_cfg(), num_classes=3).eval()
    x = torch.rand(1, 3, 48, 48)
    with torch.no_grad():
        ref = model(x)["out"]
        model = model.to(memory_format=torch.channels_last)
        out = model(x.contiguous(memory_format=torch.channels_last))["out"]
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_norm_eval_freezes_backbone_bn_statistics_but_not_the_heads() -> None:
    """``model.backbone.norm_eval`` (the ResNet-101 presets): backbone BN running stats fixed through a
    training step, its BN scale/shift and the heads' BN still learn."""
    assert load_config("voc12_r101").model.backbone.norm_eval
    assert not load_config("voc12_r2n").model.backbone.norm_eval
    torch.manual_seed(0)
    cfg = ModelConfig(backbone=BackboneConfig(name="resnet18", norm_eval=True), head_channels=16, aux_channels=8)
    model = build_segmentor(cfg, 3).train()
    bb_bn = model.backbone.model.bn1
    head_bns = [m for m in model.head.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before_bb, before_head = bb_bn.running_mean.clone(), head_bns[0].running_mean.clone()
    out = model(torch.randn(2, 3, 32, 32))
    out["out"].mean().backward()
    assert torch.equal(bb_bn.running_mean, before_bb)
    assert not torch.equal(head_bns[0].running_mean, before_head)
    assert bb_bn.weight.grad is not None
