"""COCO label spaces: every mask file holds raw category ids; every reader maps them to 0..80.

A tiny dataset in the reference's ``voc_format`` layout whose objects use raw ids next to the unused
ones (11 and 13 around 12, 25 and 27 around 26) and ids above 80 (81, 90), so that writing contiguous
indices instead of raw ids either hits an unused id or shifts a class, and a reader that skips the
mapping sees ids it cannot place. Masks go through the real writers (``urn pmm``'s
:func:`urn.cam.make_masks.run`, ``urn uncertainty``) and are read back through the training dataset,
Seg-2 training, the uncertainty report and the coverage check.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from urn.config import load_config
from urn.data.classes import COCO_UNUSED_IDS, coco, write_classes_text
from urn.data.dataset import SegmentationDataset
from urn.data.layout import DatasetLayout
from urn.io import read_mask

H, W = 24, 32
# Two objects per image: raw category ids on either side of the unused 12 and 26, and above 80.
OBJECTS = {
    "COCO_train2014_000000000009": (13, 90),
    "COCO_train2014_000000000025": (11, 27),
    "COCO_train2014_000000000030": (81, 25),
}
TINY = [
    "data.layout=coco",
    "data.pseudo_masks=null",
    "model.backbone.name=resnet18",
    "model.backbone.weights=null",
    "model.head_channels=16",
    "model.aux_channels=8",
    "data.crop_size=16",
    "data.base_size=[32, 24]",
    "data.num_workers=0",
    "infer.base_size=[32, 24]",
    "infer.scales=[1.0]",
    "crf.iters=3",
    "pmm.num_workers=0",
]


def _colour(raw: int) -> tuple[int, int, int]:
    return (37 * raw % 256, 91 * raw % 256, 200 - raw)


def make_coco_root(root: Path) -> Path:
    """Images with two flat-coloured boxes each, raw-id ground truth, a ``cls_labels.npy``, splits."""
    (root / "images").mkdir(parents=True)
    (root / "voc_format" / "class_labels").mkdir(parents=True)
    tags = {}
    for image_id, (a, b) in OBJECTS.items():
        image = np.full((H, W, 3), 128, np.uint8)
        gt = np.zeros((H, W), np.uint8)
        for raw, (ys, xs) in ((a, (slice(2, 12), slice(2, 14))), (b, (slice(12, 22), slice(16, 30)))):
            image[ys, xs] = _colour(raw)
            gt[ys, xs] = raw
        gt[0, 0] = 255
        Image.fromarray(image).save(root / "images" / f"{image_id}.png")
        Image.fromarray(gt, mode="L").save(root / "voc_format" / "class_labels" / f"{image_id}.png")
        vector = np.zeros(90, np.float32)
        vector[[a - 1, b - 1]] = 1
        tags[image_id] = vector
    np.save(root / "voc_format" / "cls_labels.npy", tags)
    for split in ("train", "val"):
        (root / "voc_format" / f"{split}.txt").write_text("".join(f"{i}\n" for i in OBJECTS))
    return root


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_coco_root(tmp_path_factory.mktemp("coco") / "coco")


def _cfg(root: Path, *extra: str):
    return load_config("demo", [f"data.root={root}", *TINY, *extra])


def _gt_train(layout: DatasetLayout) -> dict[str, np.ndarray]:
    return {i: layout.read_gt(i) for i in OBJECTS}


def _probs_from_gt(layout: DatasetLayout, out: Path) -> Path:
    """Confident (C, H, W) probability maps that agree with the ground truth."""
    out.mkdir(parents=True, exist_ok=True)
    for image_id, gt in _gt_train(layout).items():
        gt = np.where(gt == 255, 0, gt)
        p = np.full((81, H, W), 0.02 / 80, np.float32)
        np.put_along_axis(p, gt[None].astype(np.int64), 0.98, axis=0)
        np.save(out / f"{image_id}.npy", p)
    return out


def _assert_raw_ids_on_disk(folder: Path, layout: DatasetLayout) -> None:
    """Each mask holds exactly its image's raw ids (plus 0), never a contiguous index."""
    for image_id, objects in OBJECTS.items():
        values = set(np.unique(read_mask(folder / f"{image_id}.png")).tolist()) - {255}
        assert values == {0, *objects}, (image_id, values)
        assert not values & set(COCO_UNUSED_IDS)


def test_fixture_has_gaps_and_ids_above_80(coco_root: Path) -> None:
    layout = DatasetLayout.open(coco_root)
    assert layout.kind == "coco" and layout.classes == coco()
    raw = {r for pair in OBJECTS.values() for r in pair}
    assert {11, 13, 25, 27} <= raw and max(raw) > 80
    # past the first gap contiguous indices differ from raw ids: a missed mapping cannot pass
    assert all(coco().raw_to_index(r) != r for r in raw if r > 12) and coco().raw_to_index(13) == 12


def test_pseudo_masks_are_written_as_raw_ids_and_train_on_the_right_classes(coco_root: Path, tmp_path: Path) -> None:
    from urn.cam.infer import save_cams
    from urn.cam.make_masks import run
    from urn.scoring import score_mask_folders

    layout = DatasetLayout.open(coco_root)
    gt = _gt_train(layout)
    cams_dir = tmp_path / "cams"
    for image_id, objects in OBJECTS.items():
        idx = sorted(coco().raw_to_index(r) for r in objects)
        cams = np.stack([(gt[image_id] == c).astype(np.float32) for c in idx])
        save_cams(cams_dir / f"{image_id}.npz", idx, cams)
    cfg = _cfg(coco_root, "pmm.method=threshold", "pmm.bg_threshold=0.5", "pmm.bg_power=11")
    out = run(cfg, cams_dir, "train", tmp_path / "masks")
    _assert_raw_ids_on_disk(out, layout)
    ds = SegmentationDataset(layout, "train", target_dir=out)
    for n, image_id in enumerate(ds.ids):
        expected = np.where(gt[image_id] == 255, 0, gt[image_id])
        assert np.array_equal(ds.load(n)["target"], expected), image_id
    classes_file = tmp_path / "classes.txt"
    classes_file.write_text(write_classes_text(coco()))
    split = coco_root / "voc_format" / "train.txt"
    table = score_mask_folders(out, layout.gt_dir, ids_file=split, classes_file=classes_file)  # `urn score-masks`
    assert table.endswith("mIoU=100.00")


def test_cyclic_and_reference_masks_hold_raw_ids_through_seg2(coco_root: Path, tmp_path: Path) -> None:
    from urn.coverage import mask_coverage
    from urn.data.layout import read_target
    from urn.stages.segmentation import run_train
    from urn.stages.uncertainty import run_uncertainty
    from urn.stages.uncertainty_report import build_uncertainty_report

    layout = DatasetLayout.open(coco_root)
    gt = _gt_train(layout)
    probs = _probs_from_gt(layout, tmp_path / "probs")
    u = run_uncertainty(
        _cfg(coco_root, "uncertainty.reference_format=true"), tmp_path / "u", probs_dir=probs, quiet=True
    )
    _assert_raw_ids_on_disk(u / "masks", layout)
    for image_id in OBJECTS:  # the reference file's label channel (B) is the same raw mask
        rgb = np.asarray(Image.open(u / "reference" / f"{image_id}.png").convert("RGB"))
        assert np.array_equal(rgb[..., 2], read_mask(u / "masks" / f"{image_id}.png"))

    # read back as Seg-2 reads them: the contiguous classes of the ground truth
    for folder in ("masks", "reference"):
        ds = SegmentationDataset(layout, "train", target_dir=u / folder, uncertainty_dir=u / "uncertainty")
        for n, image_id in enumerate(ds.ids):
            assert np.array_equal(ds.load(n)["target"], np.where(gt[image_id] == 255, 0, gt[image_id]))

    # the readers of cyclic masks: uncertainty report (against GT) and the label-free coverage
    report = build_uncertainty_report(
        layout, "train", u, tmp_path / "report", weight_thresh=0.05, pseudo_mask_dir=u / "masks", quiet=True
    )
    assert report["miou_cyclic"] == pytest.approx(100.0) and report["miou_pseudo_masks"] == pytest.approx(100.0)
    coverage = mask_coverage(layout, list(OBJECTS), layout.image_labels(), u / "masks")
    assert coverage.missing_tag_rate == 0.0

    # keep_original_mask: the user's raw pseudo-masks (here the GT) are kept, still raw
    user_masks = f"data.pseudo_masks={coco_root}/voc_format/class_labels"
    kept = run_uncertainty(
        _cfg(coco_root, "uncertainty.keep_original_mask=true", user_masks),
        tmp_path / "kept",
        probs_dir=probs,
        quiet=True,
    )
    for image_id in OBJECTS:
        assert np.array_equal(read_target(kept / "masks" / f"{image_id}.png", layout)[0], gt[image_id])

    # Seg-2 trains on them (a contiguous-index file would stop on raw id 12 or 26 or shift classes)
    seg2 = [
        f"data.pseudo_masks={u / 'masks'}",
        f"data.uncertainty={u / 'uncertainty'}",
        "seg2.batch_size=2",
        "seg2.iters=1",
        "seg2.val_every=0",
        "seg2.ckpt_every=1",
        "data.skip_bad_samples=0",
    ]
    assert run_train(_cfg(coco_root, *seg2), tmp_path / "seg2", phase="seg2", quiet=True).is_file()
