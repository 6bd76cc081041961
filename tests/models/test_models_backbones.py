"""Every registered backbone: stride-8 stage features with the documented channels."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from urn.config import BackboneConfig
from urn.errors import ConfigError, UrnError
from urn.models import BACKBONES, build_backbone
from urn.models.backbones import ScaleNet, TimmBackbone, WideResNet38

CHANNELS = {
    "resnet18": [64, 128, 256, 512],
    "resnet50": [256, 512, 1024, 2048],
    "resnet101": [256, 512, 1024, 2048],
    "resnet101c": [256, 512, 1024, 2048],
    "res2net101": [256, 512, 1024, 2048],
    "mobilenetv3": [24, 40, 112, 960],
    "efficientnet_lite0": [24, 40, 112, 320],
    "wide_resnet38": [256, 512, 1024, 4096],
    "scalenet101": [256, 512, 1024, 2048],
}


def test_every_registered_backbone_is_listed_here() -> None:
    assert set(BACKBONES) == set(CHANNELS)


@pytest.mark.parametrize("name", sorted(CHANNELS))
def test_backbone_gives_stride_8_features(name: str) -> None:
    backbone = build_backbone(BackboneConfig(name=name)).eval()
    assert backbone.out_channels == CHANNELS[name]
    assert backbone.reductions == [4, 8, 8, 8]
    with torch.no_grad():
        feats = backbone(torch.rand(1, 3, 64, 48))
    assert [tuple(f.shape) for f in feats] == [
        (1, c, 64 // r, 48 // r) for c, r in zip(CHANNELS[name], [4, 8, 8, 8], strict=True)
    ]


def test_any_timm_name_output_stride_and_levels() -> None:
    backbone = build_backbone(BackboneConfig(name="resnet10t", output_stride=16), out_indices=(0, 2, 4)).eval()
    assert backbone.reductions == [2, 8, 16]
    with torch.no_grad():
        feats = backbone(torch.rand(1, 3, 64, 64))
    assert [f.shape[-1] for f in feats] == [32, 8, 4]
    assert [f.shape[1] for f in feats] == backbone.out_channels


def test_unknown_backbone_lists_names() -> None:
    with pytest.raises(ConfigError, match="resnet101c.*wide_resnet38"):
        build_backbone(BackboneConfig(name="resnet_nope"))


def test_bad_output_stride_and_levels() -> None:
    with pytest.raises(UrnError, match="output_stride"):
        build_backbone(BackboneConfig(name="resnet18", output_stride=4))
    with pytest.raises(UrnError, match="out_indices"):
        build_backbone(BackboneConfig(name="resnet18"), out_indices=(1, 5))
    with pytest.raises(UrnError, match="output stride 8 only"):
        WideResNet38(output_stride=16)
    with pytest.raises(UrnError, match="res38d"):
        WideResNet38(pretrained=True)


def test_res2net_uses_reference_dilation() -> None:
    """Reference Res2Net: every block of layer3/layer4 dilated 2/4, identity pool in the shortcut."""
    model = build_backbone(BackboneConfig(name="res2net101")).model
    for layer, d in ((model.layer3, 2), (model.layer4, 4)):
        assert all(conv.dilation == (d, d) and conv.padding == (d, d) for conv in layer[0].convs)
        assert isinstance(layer[0].downsample[0], nn.Identity)
    assert isinstance(model.layer2[0].downsample[0], nn.AvgPool2d)  # the strided stage keeps its pool
    assert model.conv1[0].out_channels == 32 and model.conv1[3].out_channels == 32  # deep stem 32-32-64


def test_resnet101_contracts_dilation_like_mmseg() -> None:
    model = build_backbone(BackboneConfig(name="resnet101")).model
    assert model.layer3[0].conv2.dilation == (1, 1) and model.layer3[1].conv2.dilation == (2, 2)
    assert model.layer4[0].conv2.dilation == (2, 2) and model.layer4[1].conv2.dilation == (4, 4)


def test_wide_resnet38_reference_names_and_shapes() -> None:
    shapes = {k: tuple(v.shape) for k, v in WideResNet38().state_dict().items()}
    assert shapes["conv1a.weight"] == (64, 3, 3, 3)
    assert shapes["b2.conv_branch1.weight"] == (128, 64, 1, 1)
    assert shapes["b5.conv_branch2a.weight"] == (512, 512, 3, 3)
    assert shapes["b6.conv_branch2b1.weight"] == (1024, 512, 3, 3)
    assert shapes["b7.conv_branch2b2.weight"] == (4096, 2048, 1, 1)
    assert shapes["bn7.running_mean"] == (4096,)
    assert "b2_1.conv_branch1.weight" not in shapes  # same-shape blocks have an identity shortcut


def test_scalenet_branch_widths_follow_structure() -> None:
    net = ScaleNet()
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert shapes["layer1.0.conv2.0.weight"] == (61, 64, 3, 3)
    assert "layer1.2.conv2.3.weight" not in shapes  # width 0: the /7 branch is dropped
    assert shapes["layer4.2.conv2.3.weight"] == (1, 512, 1, 1)  # side 7 / 8 <= 1: a 1x1 conv
    assert shapes["layer4.2.conv3.weight"] == (2048, 84 + 442 + 155 + 1, 1, 1)
    assert shapes["layer2.0.downsample.0.weight"] == (512, 256, 1, 1)
    assert net.layer4[1].conv2["0"].dilation == (4, 4)


def test_native_variants_for_the_pmm_classifiers() -> None:
    assert WideResNet38(b7_dilation=2).b7.conv_branch2b1.dilation == (2, 2)
    net = ScaleNet(layers=(1, 1, 1, 1), structure=[(8, 8, 8, 8, 56)] * 4, dilations=(1, 1, 1, 1))
    assert net.layer4[0].conv2["0"].dilation == (1, 1) and net.reductions == [4, 8, 8, 8]


def test_scalenet_odd_sizes() -> None:
    """Maps smaller than a pool and sizes that do not divide evenly (bilinear branch upsampling)."""
    net = ScaleNet(
        layers=(1, 1, 1, 1), structure=[(8, 8, 8, 8, 56), (8, 8, 8, 0, 28), (8, 8, 8, 8, 14), (8, 8, 8, 8, 7)]
    )
    with torch.no_grad():
        feats = net.eval()(torch.rand(1, 3, 72, 40))
    assert [tuple(f.shape[-2:]) for f in feats] == [(18, 10), (9, 5), (9, 5), (9, 5)]


def test_freeze_bn_survives_train_and_eval() -> None:
    backbone = build_backbone(BackboneConfig(name="resnet18"))
    backbone.freeze_bn()
    bns = [m for m in backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    convs_trainable = all(p.requires_grad for p in backbone.parameters())
    backbone.train()
    assert all(not m.training for m in bns)
    assert backbone.training and backbone.model.layer1.training  # other modules follow train()
    assert convs_trainable  # affine stays trainable by default (mmseg norm_eval)
    before = bns[0].running_mean.clone()
    backbone(torch.rand(2, 3, 32, 32))
    assert torch.equal(bns[0].running_mean, before)
    backbone.eval()
    assert not backbone.training
    backbone.train()
    assert all(not m.training for m in bns)
    backbone.freeze_bn(affine=True)
    assert not any(p.requires_grad for m in bns for p in m.parameters())


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_lite0"])
def test_timm_freeze_stem(name: str) -> None:
    backbone = build_backbone(BackboneConfig(name=name))
    assert isinstance(backbone, TimmBackbone)
    backbone.freeze_stem()
    frozen = [n for n, p in backbone.model.named_parameters() if not p.requires_grad]
    first = "layer1." if name == "resnet18" else "blocks.1."
    assert any(n.startswith(first) for n in frozen)
    assert all(p.requires_grad for n, p in backbone.model.named_parameters() if n.startswith(("layer2.", "blocks.2.")))


def test_native_freeze_stem() -> None:
    net = ScaleNet(layers=(1, 1, 1, 1), structure=[(8, 8, 8, 8, 56)] * 4)
    net.freeze_stem()
    assert not net.conv1.weight.requires_grad and not any(p.requires_grad for p in net.layer1.parameters())
    assert all(p.requires_grad for p in net.layer2.parameters())
