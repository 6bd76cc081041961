"""Mini-VOC and mini-COCO chains: the real ``voc12_r2n`` / ``coco14_r2n`` presets through every stage of
``urn run`` from images + image-level labels, with tiny sizes and a random-init ResNet-18 (issue 14); on VOC
with PMM's two classifier stages (``cam_voc12_wr38`` heat maps, then the heat-guided classifier)."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import yaml
from PIL import Image
from tests.test_coco_label_space import make_coco_root

from urn.config import load_config
from urn.data.classes import COCO_UNUSED_IDS
from urn.stages.pipeline import HEAT_STAGES, STAGES, run_pipeline

TINY = [
    "cam.backbone.name=resnet18",
    "cam.backbone.weights=null",
    "cam.backbone.dilations=null",
    "cam.backbone.allow_random_init=true",
    "cam.iters=2",
    "cam.batch_size=2",
    "cam.crop_size=32",
    "cam.resize_long=[32, 48]",
    "cam.crop_scales=[1.0]",
    "cam.crop_stride=24",
    "cam.batch_views=4",
    "cam.num_workers=0",
    "cam.ckpt_every=1",
    "pmm.num_workers=0",
    "model.backbone.name=resnet18",
    "model.backbone.weights=null",
    "model.backbone.allow_random_init=true",
    "model.head_channels=16",
    "model.aux_channels=8",
    "model.sync_bn=false",
    "data.crop_size=32",
    "data.num_workers=0",
    "train.batch_size=2",
    "train.iters=2",
    "train.ckpt_every=1",
    "train.val_every=0",
    "seg2.batch_size=2",
    "seg2.iters=2",
    "seg2.ckpt_every=1",
    "seg2.val_every=0",
    "infer.mode=whole",
    "infer.scales=[1.0]",
    "crf.iters=2",
]


def _pngs(folder: Path) -> list[Path]:
    files = sorted(folder.rglob("*.png"))
    assert files, f"no PNG under {folder}"
    return files


def _values(path: Path) -> set[int]:
    """Label values of a mask PNG (channel 0 of a 3-channel file)."""
    a = np.asarray(Image.open(path))
    return set(np.unique(a[..., 0] if a.ndim == 3 else a).tolist())


def _stage1(tmp_path: Path, base: str) -> Path:
    """A tiny stage-1 classifier on top of the preset ``base`` (what a user overriding cam_voc12_wr38 writes)."""
    cam: dict = {}
    for item in TINY:
        key, value = item.split("=", 1)
        if key.startswith("cam."):
            node = cam
            *parents, leaf = key.split(".")[1:]
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = yaml.safe_load(value)
    path = tmp_path / "stage1.yaml"
    path.write_text(yaml.safe_dump({"base": base, "cam": cam}))
    return path


def _run(cfg, run: Path) -> dict:
    metrics = run_pipeline(cfg, run, quiet=True)
    for stage in STAGES:
        if stage in HEAT_STAGES and not cfg.cam.heat_stage:
            continue
        assert (run / stage / "DONE.json").is_file(), stage
    return metrics


def test_mini_voc_chain_runs_voc12_r2n_from_images(demo_copy: Path, tmp_path: Path) -> None:
    demo_root = demo_copy
    sets = demo_root / "ImageSets" / "Segmentation"
    (sets / "test.txt").write_text((sets / "val.txt").read_text())  # a test split: images, no masks used
    over = [
        f"data.root={demo_root}",
        "data.train_split=train",
        "uncertainty.split=train",
        "data.base_size=[64, 48]",
        "infer.base_size=[64, 48]",
        f"cam.heat_stage={_stage1(tmp_path, 'cam_voc12_wr38')}",  # PMM's stage 1, tiny
    ]
    cfg = load_config("voc12_r2n", [*TINY, *over])
    assert cfg.data.pseudo_masks is None
    metrics = _run(cfg, tmp_path / "run")
    assert len(list((tmp_path / "run" / "heat_maps" / "heat").glob("*.npz"))) == 6
    assert set(metrics["miou"]) == {"pseudo_masks", "cyclic_masks", "seg1", "seg2"}
    n = len((demo_root / "classes.txt").read_text().split())
    for folder in ("pseudo_masks", "uncertainty/masks", "evaluate/seg1", "evaluate/seg2"):
        for png in _pngs(tmp_path / "run" / folder):
            assert _values(png) <= set(range(n)) | {255}, png
    # the export stage: Seg-2 on the test split, VOC server layout and tarball
    export = tmp_path / "run" / "export"
    pngs = _pngs(export / "results" / "VOC2012" / "Segmentation" / "comp6_test_cls")
    assert sorted(p.stem for p in pngs) == sorted((sets / "test.txt").read_text().split())
    assert all(Image.open(p).mode == "P" for p in pngs)
    assert all(_values(p) <= set(range(n)) for p in pngs)
    with tarfile.open(export / "results.tar.gz") as tar:
        assert len([m for m in tar.getmembers() if m.name.endswith(".png")]) == len(pngs)


def test_mini_coco_chain_runs_coco14_r2n_with_raw_ids(tmp_path: Path) -> None:
    root = make_coco_root(tmp_path / "coco")
    over = [
        f"data.root={root}",
        "data.base_size=[32, 24]",
        "infer.base_size=[32, 24]",
        "data.crop_size=16",
        "cam.crop_size=16",
        "cam.resize_long=[24, 32]",
        "cam.crop_stride=12",
    ]
    cfg = load_config("coco14_r2n", [*TINY, *over])
    _run(cfg, tmp_path / "run")
    allowed = set(range(91)) - set(COCO_UNUSED_IDS) | {255}
    for folder in ("pseudo_masks", "uncertainty/masks", "evaluate/seg1", "evaluate/seg2"):
        for png in _pngs(tmp_path / "run" / folder):
            assert _values(png) <= allowed, png
