"""Evaluation and prediction over a split: MS + flip (+ dense CRF) inference, mIoU, palette PNGs.

Work is sharded over ``torchrun`` ranks (rank r takes ids[r::W]); confusion matrices are summed
across ranks; only the owning rank writes each prediction file, atomically. Prediction is
resumable: files that already exist and decode are skipped.
"""

from __future__ import annotations

import dataclasses
import gzip
import tarfile
from pathlib import Path

import numpy as np
import torch

from urn.config import Config, InferConfig
from urn.engine import distributed
from urn.engine.distributed import DistInfo
from urn.engine.inference import predict_probs
from urn.io import TMP_SUFFIX, atomic_open, read_mask, remove_stale_temps, save_palette_png
from urn.metrics import ConfusionMatrix, Scores
from urn.progress import progress_bar

VOC_SERVER_DIR = Path("results/VOC2012/Segmentation/comp6_test_cls")
TARBALL = "results.tar.gz"


def uses_crf(cfg: Config, infer: InferConfig) -> bool:
    """Whether inference ends with the dense CRF: ``infer.crf`` and the global switch ``crf.enabled``."""
    return infer.crf and cfg.crf.enabled


def quick_infer_config(cfg: InferConfig) -> InferConfig:
    """Single scale, no flip, whole image, no CRF: the cheap protocol for periodic validation."""
    return dataclasses.replace(cfg, scales=(1.0,), flip=False, mode="whole", crf=False)


def segment(
    model: torch.nn.Module, image: np.ndarray, cfg: Config, infer: InferConfig, info: DistInfo
) -> tuple[np.ndarray, np.ndarray]:
    """Run inference on one image.

    Returns:
        ``(probs (C, H, W) float32, mask (H, W) uint8)``; probs are the CRF marginals when
        ``infer.crf`` and ``crf.enabled`` are set (:func:`uses_crf`), else the averaged softmax.
    """
    probs = predict_probs(model, image, infer, info.device, amp=cfg.train.amp)
    if uses_crf(cfg, infer):
        from urn.crf import CRFParams, dense_crf

        probs = dense_crf(image, probs, CRFParams.from_config(cfg.crf), backend=cfg.crf.backend)
    return probs, probs.argmax(0).astype(np.uint8)


@torch.no_grad()
def evaluate_segmentor(
    model: torch.nn.Module,
    layout,
    split: str,
    cfg: Config,
    info: DistInfo,
    *,
    quick: bool = False,
    infer: InferConfig | None = None,
    pred_dir: Path | None = None,
    quiet: bool = True,
) -> Scores:
    """mIoU of ``model`` on ``split`` against ground truth (evaluation only).

    Args:
        quick: single-scale whole-image protocol (periodic validation during training).
        infer: inference settings (default ``cfg.infer``).
        pred_dir: also write each prediction as a palette PNG there (original label ids).
    """
    infer = infer or cfg.infer
    if quick:
        infer = quick_infer_config(infer)
    was_training = model.training
    model.eval()
    classes = layout.classes
    cm = ConfusionMatrix(classes.num_classes)
    ids = distributed.shard(layout.ids(split), info)
    bar = progress_bar(total=len(ids), desc=f"eval {split}", unit="img", disable=quiet or not info.is_main)
    for image_id in ids:
        image = layout.read_image(image_id)
        _, mask = segment(model, image, cfg, infer, info)
        gt = layout.read_gt(image_id)
        cm.update(gt, mask)
        if pred_dir is not None:
            save_palette_png(Path(pred_dir) / f"{image_id}.png", classes.to_raw(mask))
        bar.update(1)
    bar.close()
    cm.all_reduce()
    model.train(was_training)
    return cm.compute()


@torch.no_grad()
def predict_split(
    model: torch.nn.Module,
    layout,
    split: str,
    cfg: Config,
    info: DistInfo,
    out: Path,
    *,
    voc_server: bool = False,
    quiet: bool = False,
) -> Path:
    """Write one palette PNG per image of ``split`` (raw label ids, e.g. COCO category ids).

    With ``voc_server``, files go to ``out/results/VOC2012/Segmentation/comp6_test_cls/<id>.png`` and
    ``out/results.tar.gz`` is packed for the PASCAL VOC evaluation server. Resumable.
    """
    model.eval()
    target = Path(out) / (VOC_SERVER_DIR if voc_server else Path("predictions"))
    target.mkdir(parents=True, exist_ok=True)
    if info.is_main:
        remove_stale_temps(target)
        for tmp in Path(out).glob(f".{TARBALL}.*{TMP_SUFFIX}"):  # an archive a killed run was packing
            tmp.unlink(missing_ok=True)
    distributed.barrier()  # no rank starts writing its temp files while rank 0 is sweeping stale ones
    ids = distributed.shard(layout.ids(split), info)
    todo = [i for i in ids if not _complete_png(target / f"{i}.png")]
    bar = progress_bar(
        total=len(ids),
        initial=len(ids) - len(todo),
        desc=f"predict {split}",
        unit="img",
        disable=quiet or not info.is_main,
    )
    for image_id in todo:
        image = layout.read_image(image_id)
        _, mask = segment(model, image, cfg, cfg.infer, info)
        save_palette_png(target / f"{image_id}.png", layout.classes.to_raw(mask))
        bar.update(1)
    bar.close()
    distributed.barrier()
    if voc_server and info.is_main:
        write_tarball(Path(out) / TARBALL, Path(out) / "results", "results")
    return target


def write_tarball(path: Path, folder: Path, arcname: str) -> None:
    """Pack ``folder`` as ``arcname`` into the gzipped tar ``path``, atomically and reproducibly.

    The bytes depend only on the files' names and contents (sorted members, no timestamps, owners
    or permissions of this machine), so a resumed run writes the same archive as an uninterrupted one.
    """

    def plain(member: tarfile.TarInfo) -> tarfile.TarInfo:
        member.mtime, member.uid, member.gid, member.uname, member.gname = 0, 0, 0, "", ""
        member.mode = 0o755 if member.isdir() else 0o644
        return member

    with (
        atomic_open(path, "wb") as fh,
        gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w") as tar,
    ):
        tar.add(folder, arcname=arcname, filter=plain)


def _complete_png(path: Path) -> bool:
    """True if ``path`` exists and decodes (a resumed run re-does anything else)."""
    if not path.is_file():
        return False
    try:
        read_mask(path)
    except Exception:
        return False
    return True
