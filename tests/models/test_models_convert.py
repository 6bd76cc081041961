"""Reference (mmseg 0.x) PSPNet checkpoints -> urn, checked with a strict load.

The fake checkpoints below are written from the reference's layer definitions (mmseg ResNet /
ResNetV1c, URN's Res2Net, mmseg PSPHead and FCNHead): key names and shapes, random values.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from urn.config import BackboneConfig, Config, DataConfig, ModelConfig
from urn.errors import UrnError
from urn.models import build_segmentor
from urn.models.convert import convert_checkpoint_file, convert_reference_checkpoint

LAYERS_101 = (3, 4, 23, 3)
NUM_CLASSES = 21


def _conv(sd: dict, key: str, out: int, inp: int, k: int) -> None:
    sd[f"{key}.weight"] = torch.randn(out, inp, k, k)


def _bn(sd: dict, key: str, c: int) -> None:
    sd[f"{key}.weight"] = torch.rand(c)
    sd[f"{key}.bias"] = torch.randn(c)
    sd[f"{key}.running_mean"] = torch.randn(c)
    sd[f"{key}.running_var"] = torch.rand(c) + 0.5
    sd[f"{key}.num_batches_tracked"] = torch.tensor(7)


def _deep_stem(sd: dict, names: tuple[str, ...]) -> None:
    """3x3 convs 3-32 (stride 2), 32-32, 32-64, each followed by BN, under mmseg's or Gao's names."""
    conv0, bn0, conv1, bn1, conv2, bn2 = names
    _conv(sd, conv0, 32, 3, 3), _bn(sd, bn0, 32)
    _conv(sd, conv1, 32, 32, 3), _bn(sd, bn1, 32)
    _conv(sd, conv2, 64, 32, 3), _bn(sd, bn2, 64)


def mmseg_resnet(deep_stem: bool, layers: tuple[int, ...] = LAYERS_101) -> dict:
    """mmseg ``ResNetV1c`` (deep stem) or ``ResNet`` (7x7 stem) bottleneck keys under ``backbone.``."""
    sd: dict = {}
    if deep_stem:
        _deep_stem(sd, ("stem.0", "stem.1", "stem.3", "stem.4", "stem.6", "stem.7"))
    else:
        _conv(sd, "conv1", 64, 3, 7), _bn(sd, "bn1", 64)
    inplanes = 64
    for i, (n, planes) in enumerate(zip(layers, (64, 128, 256, 512), strict=True)):
        for b in range(n):
            p = f"layer{i + 1}.{b}"
            _conv(sd, f"{p}.conv1", planes, inplanes, 1), _bn(sd, f"{p}.bn1", planes)
            _conv(sd, f"{p}.conv2", planes, planes, 3), _bn(sd, f"{p}.bn2", planes)
            _conv(sd, f"{p}.conv3", planes * 4, planes, 1), _bn(sd, f"{p}.bn3", planes * 4)
            if b == 0:
                _conv(sd, f"{p}.downsample.0", planes * 4, inplanes, 1), _bn(sd, f"{p}.downsample.1", planes * 4)
            inplanes = planes * 4
    return {f"backbone.{k}": v for k, v in sd.items()}


def reference_res2net(layers: tuple[int, ...] = LAYERS_101) -> dict:
    """URN's ``Res2Net`` (v1b, 26w4s): Gao's names, avg-pool shortcut (``downsample.1/2``)."""
    sd: dict = {}
    _deep_stem(sd, ("conv1.0", "conv1.1", "conv1.3", "conv1.4", "conv1.6", "bn1"))
    inplanes = 64
    for i, (n, planes) in enumerate(zip(layers, (64, 128, 256, 512), strict=True)):
        width = math.floor(planes * 26 / 64)
        for b in range(n):
            p = f"layer{i + 1}.{b}"
            _conv(sd, f"{p}.conv1", width * 4, inplanes, 1), _bn(sd, f"{p}.bn1", width * 4)
            for j in range(3):
                _conv(sd, f"{p}.convs.{j}", width, width, 3), _bn(sd, f"{p}.bns.{j}", width)
            _conv(sd, f"{p}.conv3", planes * 4, width * 4, 1), _bn(sd, f"{p}.bn3", planes * 4)
            if b == 0:
                _conv(sd, f"{p}.downsample.1", planes * 4, inplanes, 1), _bn(sd, f"{p}.downsample.2", planes * 4)
            inplanes = planes * 4
    return {f"backbone.{k}": v for k, v in sd.items()}


def mmseg_psp_heads(in_channels: int = 2048, aux_in: int = 1024, channels: int = 512, aux_channels: int = 256) -> dict:
    """``decode_head`` (PSPHead: PPM 1/2/3/6, bottleneck, conv_seg) and ``auxiliary_head`` (FCNHead)."""
    sd: dict = {}
    for i in range(4):
        _conv(sd, f"decode_head.psp_modules.{i}.1.conv", channels, in_channels, 1)
        _bn(sd, f"decode_head.psp_modules.{i}.1.bn", channels)
    _conv(sd, "decode_head.bottleneck.conv", channels, in_channels + 4 * channels, 3)
    _bn(sd, "decode_head.bottleneck.bn", channels)
    _conv(sd, "decode_head.conv_seg", NUM_CLASSES, channels, 1)
    sd["decode_head.conv_seg.bias"] = torch.randn(NUM_CLASSES)
    _conv(sd, "auxiliary_head.convs.0.conv", aux_channels, aux_in, 3)
    _bn(sd, "auxiliary_head.convs.0.bn", aux_channels)
    _conv(sd, "auxiliary_head.conv_seg", NUM_CLASSES, aux_channels, 1)
    sd["auxiliary_head.conv_seg.bias"] = torch.randn(NUM_CLASSES)
    return sd


def _cfg(name: str, **kw: object) -> ModelConfig:
    return ModelConfig(backbone=BackboneConfig(name=name), **kw)


def _check_forward(cfg: ModelConfig, state: dict) -> None:
    model = build_segmentor(cfg, NUM_CLASSES)
    model.load_state_dict(state, strict=True)
    with torch.no_grad():
        assert model.eval()(torch.rand(1, 3, 32, 32))["out"].shape == (1, NUM_CLASSES, 32, 32)


@pytest.fixture(scope="module")
def v1c_checkpoint() -> dict:
    """An mmseg PSPNet-R101-V1c checkpoint as ``torch.load`` returns it (full depth)."""
    return {"meta": {"CLASSES": ["bg"]}, "state_dict": {**mmseg_resnet(deep_stem=True), **mmseg_psp_heads()}}


def test_resnet_v1c_pspnet(v1c_checkpoint: dict) -> None:
    out = convert_reference_checkpoint(v1c_checkpoint, _cfg("resnet101c"))
    sd = v1c_checkpoint["state_dict"]
    assert torch.equal(out["backbone.model.conv1.6.weight"], sd["backbone.stem.6.weight"])
    assert torch.equal(out["backbone.model.bn1.running_var"], sd["backbone.stem.7.running_var"])
    assert torch.equal(out["backbone.model.layer3.22.conv2.weight"], sd["backbone.layer3.22.conv2.weight"])
    assert torch.equal(out["head.psp_modules.2.1.bn.bias"], sd["decode_head.psp_modules.2.1.bn.bias"])
    assert torch.equal(out["head.bottleneck.conv.weight"], sd["decode_head.bottleneck.conv.weight"])
    assert torch.equal(out["aux_head.convs.0.conv.weight"], sd["auxiliary_head.convs.0.conv.weight"])
    assert torch.equal(out["aux_head.conv_seg.bias"], sd["auxiliary_head.conv_seg.bias"])
    _check_forward(_cfg("resnet101c"), out)


def test_res2net_pspnet() -> None:
    src = {f"module.{k}": v for k, v in {**reference_res2net(), **mmseg_psp_heads()}.items()}
    out = convert_reference_checkpoint({"state_dict": src, "meta": {"iter": 20000}}, _cfg("res2net101"))
    assert torch.equal(out["backbone.model.conv1.3.weight"], src["module.backbone.conv1.3.weight"])
    assert torch.equal(
        out["backbone.model.layer4.0.downsample.1.weight"], src["module.backbone.layer4.0.downsample.1.weight"]
    )
    assert torch.equal(
        out["backbone.model.layer2.3.bns.2.running_mean"], src["module.backbone.layer2.3.bns.2.running_mean"]
    )
    _check_forward(_cfg("res2net101"), out)


def test_torchvision_layout_file_round_trip(tmp_path: Path) -> None:
    """mmseg ``ResNet`` (7x7 stem, as URN's ResNet-101 config) from a file; aux weights dropped."""
    src = {**mmseg_resnet(deep_stem=False, layers=(3, 4, 6, 3)), **mmseg_psp_heads(channels=32, aux_channels=16)}
    torch.save({"state_dict": src, "meta": {"iter": 20000}}, tmp_path / "iter_20000.pth")
    cfg = Config(model=_cfg("resnet50", head_channels=32, aux_head=False))
    path = convert_checkpoint_file(tmp_path / "iter_20000.pth", tmp_path / "out" / "seg1.pt", cfg)
    assert sorted(p.name for p in path.parent.iterdir()) == ["seg1.pt"]  # no temporary file left
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert ckpt["num_classes"] == NUM_CLASSES and ckpt["config"]["model"]["backbone"]["name"] == "resnet50"
    state = ckpt["model"]
    assert not any(k.startswith("aux_head.") for k in state)  # dropped: the config has no aux head
    assert torch.equal(state["backbone.model.conv1.weight"], src["backbone.conv1.weight"])
    assert torch.equal(state["head.conv_seg.bias"], src["decode_head.conv_seg.bias"])
    _check_forward(cfg.model, state)


def test_mismatches_are_named(v1c_checkpoint: dict) -> None:
    with pytest.raises(UrnError) as err:
        convert_reference_checkpoint(v1c_checkpoint, _cfg("resnet101"))
    msg = str(err.value)
    assert "\n" not in msg and "missing backbone.model.conv1.weight" in msg
    assert "unexpected backbone.model.conv1.0.weight" in msg and "resnet101c" in msg
    with pytest.raises(UrnError, match=r"conv_seg.weight is \(21, 512, 1, 1\) in the checkpoint, \(5, 512, 1, 1\)"):
        convert_reference_checkpoint(v1c_checkpoint, _cfg("resnet101c"), num_classes=5)
    with pytest.raises(UrnError, match="not an mmseg segmentor"):
        convert_reference_checkpoint({"backbone.conv1.weight": torch.zeros(1)}, _cfg("resnet18"))


def test_reference_coco_checkpoint_keeps_the_81_used_class_rows(tmp_path: Path) -> None:
    """The reference's COCO models have 91 rows (row r = raw id r); urn's COCO model has 81 classes."""
    from urn.data.classes import COCO_UNUSED_IDS, coco
    from urn.engine.checkpoint import load_model_weights

    src = {**mmseg_resnet(deep_stem=False, layers=(3, 4, 6, 3)), **mmseg_psp_heads(channels=32, aux_channels=16)}
    for head, channels in (("decode_head", 32), ("auxiliary_head", 16)):
        src[f"{head}.conv_seg.weight"] = torch.randn(91, channels, 1, 1)
        src[f"{head}.conv_seg.bias"] = torch.arange(91, dtype=torch.float32)  # bias r marks raw id r
    torch.save({"state_dict": src, "meta": {"iter": 40000}}, tmp_path / "coco.pth")
    data = DataConfig(root=str(tmp_path / "no_dataset_here"), layout="coco")
    cfg = Config(model=_cfg("resnet50", head_channels=32, aux_channels=16), data=data)
    path = convert_checkpoint_file(tmp_path / "coco.pth", tmp_path / "seg2.pt", cfg)

    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    raw = torch.tensor(coco().raw_ids)
    assert ckpt["num_classes"] == 81
    for ours, theirs in (("head", "decode_head"), ("aux_head", "auxiliary_head")):
        assert torch.equal(ckpt["model"][f"{ours}.conv_seg.bias"], raw.float())  # class i <- raw id raw_ids[i]
        assert torch.equal(ckpt["model"][f"{ours}.conv_seg.weight"], src[f"{theirs}.conv_seg.weight"][raw])
    assert not set(COCO_UNUSED_IDS) & set(ckpt["model"]["head.conv_seg.bias"].int().tolist())
    load_model_weights(build_segmentor(cfg.model, 81), path)  # the COCO model loads it strictly

    # a state that already has a row per class, or a class list without gaps, is left alone
    from urn.data.classes import voc
    from urn.models.convert import select_class_rows

    voc_rows = {"decode_head.conv_seg.weight": torch.zeros(21, 4, 1, 1)}

    assert select_class_rows(voc_rows, voc()) is voc_rows
    assert (
        select_class_rows({"decode_head.conv_seg.weight": torch.zeros(81, 4, 1, 1)}, coco())[
            "decode_head.conv_seg.weight"
        ].shape[0]
        == 81
    )
