"""Multi-crop tiling, CAM computation (shapes, flip and scale consistency), the infer stage."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from urn.cam.data import multi_crop_boxes
from urn.cam.infer import compute_cams, normalize_cams, read_cams, save_cams
from urn.cam.network import build_cam_net
from urn.config import CAMConfig

REF_SCALES = (0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 2.75, 3.0)


def test_tiling_voc_image_gives_87_tiles() -> None:
    per_scale = multi_crop_boxes(500, 375, REF_SCALES, crop=448, stride=300)
    assert [len(b) for b in per_scale] == [1, 2, 4, 6, 6, 9, 12, 12, 15, 20]
    assert sum(len(b) for b in per_scale) == 87
    # scale 0.75: 375x281 fits one tile: the whole image (281 / 0.75 truncates to 374)
    assert per_scale[0] == [(0, 0, 500, 374)]
    # scale 1: a 300-px first tile (Q3), the last one 448 px wide ending at the border
    assert per_scale[1] == [(0, 0, 300, 375), (52, 0, 500, 375)]
    # scale 1.25 (625x468): columns outer, rows inner, coordinates / 1.25 truncated
    assert per_scale[2] == [(0, 0, 240, 240), (0, 16, 240, 374), (141, 0, 500, 240), (141, 16, 500, 374)]
    for box in (b for s in per_scale for b in s):
        x1, y1, x2, y2 = box
        assert 0 <= x1 < x2 <= 500 and 0 <= y1 < y2 <= 375


def test_tiling_coco_image_gives_136_tiles() -> None:
    assert sum(len(b) for b in multi_crop_boxes(640, 480, REF_SCALES)) == 136


def test_normalize_cams_reference_formula() -> None:
    x = np.array([[[-1.0, 0.0, 1.0, 3.0]], [[2.0, 2.0, 4.0, 6.0]]], np.float32)
    out = normalize_cams(x)
    # class 0 after ReLU: min 0, max 3 -> x / (3 + 1e-5); class 1: min 2 -> values at min are 0
    np.testing.assert_allclose(out[0, 0], [0, 0, 1 / 3.00001, 3 / 3.00001], rtol=1e-6)
    np.testing.assert_allclose(out[1, 0], [0, 0, 2 / 4.00001, 4 / 4.00001], rtol=1e-6)


def test_cam_file_roundtrip_without_pickle(tmp_path: Path) -> None:
    cams = np.random.default_rng(0).random((2, 5, 7)).astype(np.float32)
    save_cams(tmp_path / "a.npz", [3, 7], cams)
    classes, back = read_cams(tmp_path / "a.npz")
    assert classes.tolist() == [3, 7] and back.dtype == np.float16 and back.shape == (2, 5, 7)
    with np.load(tmp_path / "a.npz", allow_pickle=False) as z:
        assert sorted(z.files) == ["cams", "classes"]


class ToyBackbone(nn.Module):
    """Pointwise convs + 2x2 average pools: exactly flip-equivariant on even-sized inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.out_channels = [8, 8, 8, 8]
        self.reductions = [2, 4, 4, 4]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f2 = F.avg_pool2d(torch.tanh(self.conv(x)), 2)
        f4 = F.avg_pool2d(f2, 2)
        return [f2, f4, f4, f4]


@pytest.fixture
def toy_net() -> nn.Module:
    torch.manual_seed(0)
    return build_cam_net(CAMConfig(network="plain"), 6, backbone=ToyBackbone()).eval()


def test_compute_cams_shapes_and_range(toy_net: nn.Module) -> None:
    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    cfg = CAMConfig(scales=(1.0, 0.5, 1.5, 2.0), flip=True)
    cams = compute_cams(toy_net, image, [2, 5], cfg)
    assert cams.shape == (2, 48, 64) and cams.dtype == np.float32
    assert cams.min() >= 0 and cams.max() <= 1
    np.testing.assert_allclose(cams.reshape(2, -1).max(1), 1.0, atol=1e-4)
    assert compute_cams(toy_net, image, [], cfg).shape == (0, 48, 64)
    tiled = compute_cams(
        toy_net,
        image,
        [1],
        CAMConfig(multi_crop=True, crop_size=32, crop_stride=24, crop_scales=(1.0, 1.5), batch_views=5),
    )
    assert tiled.shape == (1, 48, 64) and tiled.min() >= 0 and tiled.max() <= 1


@pytest.mark.parametrize("multi_crop", [False, True])
def test_cam_of_flipped_image_is_flipped_cam(toy_net: nn.Module, multi_crop: bool) -> None:
    image = np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    # tiles symmetric about the vertical axis: 64 = 16 + 32 + 16 at stride 32 -> boxes [0,32], [32,64]
    cfg = CAMConfig(
        scales=(1.0, 0.5, 2.0), flip=True, multi_crop=multi_crop, crop_size=32, crop_stride=32, crop_scales=(1.0,)
    )
    a = compute_cams(toy_net, image, [1, 3], cfg)
    b = compute_cams(toy_net, np.ascontiguousarray(image[:, ::-1]), [1, 3], cfg)
    np.testing.assert_allclose(b[..., ::-1], a, atol=1e-4)


def test_multi_scale_close_to_single_scale_for_a_scale_free_net(toy_net: nn.Module) -> None:
    # a pointwise network sees the same colours at every scale: fusing scales barely moves the CAM
    yy, xx = np.mgrid[0:48, 0:64]
    image = np.stack([xx * 4, yy * 5, (xx + yy) * 2], -1).clip(0, 255).astype(np.uint8)  # smooth image
    one = compute_cams(toy_net, image, [2], CAMConfig(scales=(1.0,), flip=False))
    many = compute_cams(toy_net, image, [2], CAMConfig(scales=(1.0, 0.5, 1.5, 2.0), flip=True))
    assert np.abs(one - many).mean() < 0.03


def test_infer_stage_resume_and_shards(tiny_run: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from urn.cam import infer
    from urn.data.layout import DatasetLayout

    cfg, ckpt = tiny_run["cfg"], tiny_run["checkpoint"]
    layout = DatasetLayout.open(cfg.data.root)
    ids, labels = layout.ids("train"), layout.image_labels()
    out = tmp_path / "cams"

    # rank 1 of 2 writes only ids[1::2]
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    infer.run(cfg, ckpt, "train", out)
    assert sorted(p.stem for p in out.glob("*.npz")) == sorted(ids[1::2])
    monkeypatch.setenv("RANK", "0")
    infer.run(cfg, ckpt, "train", out)
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")

    for image_id in ids:
        classes, cams = read_cams(out / f"{image_id}.npz")
        assert classes.tolist() == list(labels[image_id])
        assert cams.shape[1:] == layout.image_size(image_id)

    # resume: complete files stay untouched, a corrupt one and a stale temp are replaced / swept
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.npz")}
    (out / f"{ids[0]}.npz").write_bytes(b"broken")
    stale = out / f".{ids[0]}.npz.abc.urn-tmp"
    stale.write_bytes(b"half")
    infer.run(cfg, ckpt, "train", out)
    assert not stale.exists()
    read_cams(out / f"{ids[0]}.npz")
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("*.npz")}
    changed = [k for k in after if after[k] != before[k]]
    assert changed == [f"{ids[0]}.npz"]
    assert os.environ.get("RANK") is None


def test_load_classifier_of_a_reference_preset_reads_no_imagenet_weights(tiny_run: dict, tmp_path: Path) -> None:
    """A classifier trained under a reference preset (``allow_random_init: false``, ImageNet weights from a
    file) loads from its checkpoint alone: the file may be gone, and the init check does not refuse."""
    from urn.cam.infer import load_classifier
    from urn.engine.checkpoint import load_checkpoint

    ckpt = load_checkpoint(tiny_run["checkpoint"])
    backbone = ckpt["config"]["cam"]["backbone"]
    backbone.update(allow_random_init=False, weights=str(tmp_path / "gone_imagenet.pth"))
    path = tmp_path / "last.pt"
    torch.save(ckpt, path)
    net, trained = load_classifier(path)
    assert trained.cam.backbone.allow_random_init is False and not net.training
