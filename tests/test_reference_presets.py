"""The VOC / COCO presets are the reference's configuration (issue 14 items 2 and 4).

fp32 unless asked, the reference's ImageNet weights as one local-file key per network (a missing file
stops with one line naming the key), PMM's undilated ScaleNet-101 classifier, and presets that start
from images (``data.pseudo_masks: null``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn

from urn.config import BackboneConfig, list_presets, load_config
from urn.errors import ConfigError
from urn.models import REFERENCE_WEIGHTS, build_backbone, check_backbone_init

REFERENCE = [n for n in list_presets() if n.startswith(("voc12_", "coco14_", "cam_voc12_", "cam_coco14_"))]
TRAINING = {"voc12_r2n", "voc12_r101", "voc12_s101", "voc12_wr38", "coco14_r2n", "coco14_r101"}


def test_reference_presets_are_listed() -> None:
    assert TRAINING | {"coco14_s101", "coco14_wr38", "cam_voc12_s101", "cam_voc12_wr38"} <= set(REFERENCE)


@pytest.mark.parametrize("name", REFERENCE)
def test_reference_presets_run_in_fp32(name: str) -> None:
    cfg = load_config(name)
    assert cfg.train.amp is False and cfg.seg2.amp is False  # train.amp also drives uncertainty and eval


@pytest.mark.parametrize("name", REFERENCE)
def test_reference_presets_need_imagenet_weights_from_a_local_file(name: str) -> None:
    cfg = load_config(name)
    for section in (cfg.model.backbone, cfg.cam.backbone):
        assert section.allow_random_init is False and section.pretrained is False
        assert section.weights and section.weights.startswith("data/models/"), section
        assert section.name in REFERENCE_WEIGHTS


@pytest.mark.parametrize("name", [n for n in REFERENCE if not n.endswith("_seg2")])
def test_presets_start_from_images(name: str) -> None:
    assert load_config(name).data.pseudo_masks is None


def test_r101_presets_load_torchvisions_resnet101() -> None:
    for name in ("voc12_r101", "coco14_r101"):
        assert load_config(name).model.backbone.weights == "data/models/resnet101-5d3b4d8f.pth"
    assert "torchvision" in REFERENCE_WEIGHTS["resnet101"]
    assert "Res2Net-PretrainedModels" in REFERENCE_WEIGHTS["res2net101"]


def test_scalenet_cam_classifier_is_undilated_as_pmm() -> None:
    for name in ("voc12_r2n", "coco14_r2n", "cam_voc12_s101", "cam_coco14_s101"):
        cam = load_config(name).cam
        assert cam.backbone.name == "scalenet101" and cam.backbone.dilations == (1, 1, 1, 1), name
        assert cam.network == "seam" and cam.multi_crop
    assert load_config("cam_voc12_wr38").cam.backbone.dilations is None
    assert load_config("voc12_s101").model.backbone.dilations is None  # segmentation: (1, 1, 2, 4)


def test_coco_scalenet_uses_the_reference_img_scale() -> None:
    cfg = load_config("coco14_s101")
    assert cfg.data.crop_size == 448 and cfg.data.base_size == (2048, 448)
    assert cfg.infer.base_size == (2048, 512)


def test_cam_sections_follow_pmm() -> None:
    voc, coco = load_config("voc12_r2n").cam, load_config("coco14_r2n").cam
    assert (voc.iters, voc.batch_size, voc.lr) == (13220, 16, 0.02)
    assert (coco.iters, coco.batch_size, coco.lr) == (206940, 8, 0.01)
    assert voc.heat_dir is None  # single stage: docs/differences.md


@pytest.mark.parametrize(("name", "key"), [("voc12_s101", "model.backbone"), ("voc12_r2n", "model.backbone")])
def test_missing_weights_file_stops_naming_the_key(name: str, key: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # no data/models here
    cfg = load_config(name)
    with pytest.raises(ConfigError) as err:
        build_backbone(cfg.model.backbone)
    text = str(err.value)
    assert "\n" not in text and f"{key}.weights" in text and f"{key}.allow_random_init=true" in text
    assert REFERENCE_WEIGHTS[cfg.model.backbone.name] in text


def test_unset_weights_stop_naming_the_key() -> None:
    cfg = load_config("voc12_s101", ["model.backbone.weights=null"])
    with pytest.raises(ConfigError, match=r"model\.backbone\.weights is not set.*scalenet101\.pth"):
        check_backbone_init(cfg.model.backbone)
    cam = load_config("voc12_r2n", ["cam.backbone.weights=null"]).cam.backbone
    with pytest.raises(ConfigError, match=r"cam\.backbone\.weights is not set"):
        check_backbone_init(cam, "cam.backbone")


def test_allow_random_init_is_the_escape_switch() -> None:
    over = ["model.backbone.name=resnet18", "model.backbone.weights=null", "model.backbone.allow_random_init=true"]
    backbone = build_backbone(load_config("voc12_r2n", over).model.backbone)
    assert backbone.out_channels == [64, 128, 256, 512]


def test_dilations_reach_scalenet_and_only_scalenet() -> None:
    tiny = BackboneConfig(name="scalenet101", dilations=(1, 1, 1, 1))
    net = build_backbone(tiny)
    dil = {m.dilation for m in net.layer4.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)}
    assert dil == {(1, 1)}
    default = build_backbone(BackboneConfig(name="scalenet101"))
    assert {m.dilation for m in default.layer4.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)} == {
        (4, 4)
    }
    with pytest.raises(ConfigError, match="only scalenet101"):
        build_backbone(BackboneConfig(name="resnet18", dilations=(1, 1, 1, 1)))


def test_urn_run_refuses_at_once_without_weights(tmp_path: Path, monkeypatch) -> None:
    from urn.stages.pipeline import run_pipeline

    monkeypatch.chdir(tmp_path)
    cfg = load_config("voc12_r2n", [f"data.root={tmp_path}/none"])
    with pytest.raises(ConfigError, match=r"cam\.backbone\.weights: .*scalenet101\.pth: file not found"):
        run_pipeline(cfg, tmp_path / "run", quiet=True)
    assert not (tmp_path / "run" / "cam_train").exists()
