"""Local backbone weights: timm / torchvision / wrapped / renamed files, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from urn.config import BackboneConfig, ModelConfig
from urn.errors import UrnError
from urn.models import build_backbone, build_segmentor
from urn.models.backbones import EFFICIENTNET_LITE0_PACKAGE, TimmBackbone
from urn.models.backbones.weights import rename_lukemelas_efficientnet, rename_mmseg_stem


def _outputs(backbone: torch.nn.Module) -> list[torch.Tensor]:
    torch.manual_seed(0)
    with torch.no_grad():
        return backbone.eval()(torch.rand(1, 3, 32, 32))


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.allclose(x, y) for x, y in zip(a, b, strict=True))


def test_timm_state_dict_in_wrappers(tmp_path: Path) -> None:
    import timm

    full = timm.create_model("resnet18")  # a full classifier: its fc.* keys are skipped
    state = {f"module.{k}": v for k, v in full.state_dict().items()}
    path = tmp_path / "w.pth"
    torch.save({"state_dict": state, "meta": {"epoch": 3}}, path)
    backbone = build_backbone(BackboneConfig(name="resnet18", weights=str(path)))
    assert torch.equal(backbone.model.conv1.weight, full.conv1.weight)
    skipped = backbone.load_weights(path)
    assert skipped == ["fc.weight", "fc.bias"]


def test_torchvision_file_without_bn_counters(tmp_path: Path) -> None:
    import torchvision

    state = torchvision.models.resnet18(weights=None).state_dict()
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}  # pre-2018 files
    torch.save(state, tmp_path / "tv.pth")
    backbone = build_backbone(BackboneConfig(name="resnet18", weights=str(tmp_path / "tv.pth")))
    assert torch.equal(backbone.model.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])


def test_segmentor_checkpoint_gives_its_backbone(tmp_path: Path) -> None:
    cfg = ModelConfig(backbone=BackboneConfig(name="resnet18"))
    model = build_segmentor(cfg, 3)
    torch.save({"model": model.state_dict(), "iteration": 5}, tmp_path / "seg.pt")
    backbone = build_backbone(BackboneConfig(name="resnet18", weights=str(tmp_path / "seg.pt")))
    assert _same(_outputs(backbone), _outputs(model.backbone))


def test_mismatch_is_one_line_naming_keys(tmp_path: Path) -> None:
    import timm

    torch.save(timm.create_model("resnet18").state_dict(), tmp_path / "r18.pth")
    with pytest.raises(UrnError) as err:
        build_backbone(BackboneConfig(name="resnet10t", weights=str(tmp_path / "r18.pth")))
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path / "r18.pth") in msg
    assert "missing conv1.0.weight" in msg and "more)" in msg

    state = timm.create_model("resnet18").state_dict()
    state["layer1.0.conv1.weight"] = torch.zeros(1, 1, 1, 1)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(UrnError, match=r"layer1\.0\.conv1\.weight is \(1, 1, 1, 1\) in the file, \(64, 64, 3, 3\)"):
        build_backbone(BackboneConfig(name="resnet18", weights=str(tmp_path / "bad.pth")))


def test_unreadable_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(UrnError, match="unreadable weights file"):
        build_backbone(BackboneConfig(name="resnet18", weights=str(tmp_path / "junk.pth")))
    with pytest.raises(UrnError, match="not found"):
        build_backbone(BackboneConfig(name="resnet18", weights=str(tmp_path / "nope.pth")))
    torch.save({"epoch": 1}, tmp_path / "empty.pth")
    with pytest.raises(UrnError, match="no state dict"):
        build_backbone(BackboneConfig(name="resnet18", weights=str(tmp_path / "empty.pth")))


def test_efficientnet_lite0_package_weights() -> None:
    random_init = build_backbone(BackboneConfig(name="efficientnet_lite0"))
    loaded = build_backbone(BackboneConfig(name="efficientnet_lite0", weights=EFFICIENTNET_LITE0_PACKAGE))
    assert isinstance(loaded, TimmBackbone)
    skipped = loaded.load_weights(EFFICIENTNET_LITE0_PACKAGE)  # every backbone key matched (else UrnError)
    assert sorted(skipped) == sorted(
        ["conv_head.weight", "classifier.weight", "classifier.bias"]
        + [f"bn2.{s}" for s in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]
    )
    assert not _same(_outputs(loaded), _outputs(random_init))
    assert not torch.allclose(loaded.model.bn1.running_var, torch.ones(32))  # ImageNet statistics


def test_renamers_on_hand_made_keys() -> None:
    t = torch.zeros(1)
    stem = rename_mmseg_stem(
        {"stem.0.weight": t, "stem.4.bias": t, "stem.7.running_mean": t, "layer1.0.conv1.weight": t}
    )
    assert sorted(stem) == ["bn1.running_mean", "conv1.0.weight", "conv1.4.bias", "layer1.0.conv1.weight"]
    luke = rename_lukemelas_efficientnet(
        {
            "_conv_stem.weight": t,
            "_blocks.0._depthwise_conv.weight": t,
            "_blocks.0._bn2.bias": t,
            "_blocks.2._expand_conv.weight": t,
            "_blocks.2._bn0.weight": t,
            "_blocks.2._project_conv.weight": t,
            "_bn1.weight": t,
            "_fc.bias": t,
        },
        stage_depths=[1, 2],
    )
    assert sorted(luke) == [
        "blocks.0.0.bn2.bias",
        "blocks.0.0.conv_dw.weight",
        "blocks.1.1.bn1.weight",
        "blocks.1.1.conv_pw.weight",
        "blocks.1.1.conv_pwl.weight",
        "bn2.weight",
        "classifier.bias",
        "conv_stem.weight",
    ]
