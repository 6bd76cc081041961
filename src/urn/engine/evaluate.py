"""Evaluation and prediction over a split: MS + flip (+ dense CRF) inference, mIoU, palette PNGs.

Work is sharded over ``torchrun`` ranks (rank r takes ids[r::W]); confusion matrices are summed
across ranks; only the owning rank writes each prediction file, atomically. Prediction is
resumable: files that already exist and decode are skipped.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from urn.config import Config, InferConfig
from urn.engine import distributed
from urn.engine.distributed import DistInfo
from urn.engine.inference import predict_probs
from urn.io import mask_complete, remove_stale_temps, save_palette_png
from urn.metrics import ConfusionMatrix, Scores
from urn.progress import progress_bar


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
        from urn.crf import dense_crf

        probs = dense_crf(image, probs, cfg.crf, backend=cfg.crf.backend)
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
    pred_dir: Path | None = None,
    quiet: bool = True,
) -> Scores:
    """mIoU of ``model`` on ``split`` against ground truth (evaluation only).

    Args:
        quick: :func:`quick_infer_config` of ``cfg.infer`` (periodic validation during training);
            otherwise ``cfg.infer`` as it is.
        pred_dir: also write each prediction as a palette PNG there (original label ids).
    """
    infer = quick_infer_config(cfg.infer) if quick else cfg.infer
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
    target: Path,
    *,
    quiet: bool = False,
) -> Path:
    """Write one palette PNG per image of ``split`` into ``target`` (raw label ids, e.g. COCO category
    ids); returns ``target``. Resumable: files that exist and decode are kept."""
    model.eval()
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    if info.is_main:
        remove_stale_temps(target)
    distributed.barrier()  # no rank starts writing its temp files while rank 0 is sweeping stale ones
    ids = distributed.shard(layout.ids(split), info)
    todo = [i for i in ids if not mask_complete(target / f"{i}.png")]
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
    return target
