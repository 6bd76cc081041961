"""Stage: train the multi-label CAM classifier (``urn cam train``).

Artifacts in ``OUT``:

- ``last.pt``: one dict, written atomically every ``cam.ckpt_every`` iterations and at the end:
  ``kind`` (``"classifier"``), ``model``, ``optimizer``, ``scaler``, ``iteration``, ``rng`` (every
  rank's full RNG state), ``config``, ``num_classes``, ``class_names``, ``identity``
  (:mod:`urn.engine.resume`). Load it with ``torch.load(..., weights_only=True)``.
- ``config.yaml``: the resolved config; ``log.jsonl``: one line per ``cam.log_every`` iterations;
- ``metrics.json``: classification mAP / F1 on ``data.val_split`` (image-level labels only).

A checkpoint already in ``OUT`` is resumed when it was trained with the same identity (classifier,
data, classes, schedule), refused with one line naming what differs otherwise; ``restart`` deletes the
run first (:mod:`urn.engine.resume`, the policy of every training).

Iteration-based poly LR SGD with the reference's four parameter groups, through the loop every
training shares (:mod:`urn.engine.loop`); ``torchrun`` DDP when ``WORLD_SIZE > 1`` (gloo on CPU, nccl
on GPU), rank 0 writes. Never reads ground-truth masks.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from urn import io
from urn.cam.data import CAMTrainDataset, normalize
from urn.cam.network import build_cam_net
from urn.cam.seam_losses import seam_loss
from urn.config import Config, config_to_dict, dump_yaml
from urn.data.layout import DatasetLayout
from urn.engine import resume as resume_policy
from urn.engine.distributed import barrier, setup
from urn.engine.loop import (
    LAST,
    LOG,
    TENSORBOARD,
    Loop,
    restore_rng,
    seed_everything,
    train_loop,
    training_loader,
    trim_log,
)
from urn.errors import ConfigError, DataError

log = logging.getLogger(__name__)
CHECKPOINT = LAST  # one checkpoint name for every training (urn.engine.loop)
_OLD_CHECKPOINT = "checkpoint.pth"  # the classifier's file name before the loop was shared


def classifier_checkpoint(folder: Path) -> Path:
    """The classifier checkpoint of a ``urn cam train`` folder: ``last.pt``, or ``checkpoint.pth`` in a
    folder an earlier urn wrote (so its finished runs still feed the CAM stages)."""
    old = Path(folder) / _OLD_CHECKPOINT
    return old if old.is_file() and not (Path(folder) / CHECKPOINT).exists() else Path(folder) / CHECKPOINT


# -------------------------------------------------------------------------------------------- stage
def run(
    cfg: Config,
    out: Path,
    resume: bool = False,
    restart: bool = False,
    *,
    device: str | None = None,
    quiet: bool = False,
) -> Path:
    """Train the classifier of ``cfg.cam`` on ``cfg.data.train_split``; returns the checkpoint path.

    Args:
        resume: continue ``OUT/last.pt``; a checkpoint of the same identity is resumed
            without it too, one of another identity is refused (:func:`urn.engine.resume.open_run`).
        restart: delete ``OUT``'s checkpoint, log and metrics first and train from the start.
        device: ``cpu`` or ``cuda`` (default: CUDA when available).
        quiet: no progress bar (``urn run --quiet``).

    Raises:
        UrnError: bad data or config, an existing run of another config, or a NaN loss (the last
            checkpoint is kept).
    """
    c = cfg.cam
    out = Path(out)
    info = setup(device)
    rank, world, device = info.rank, info.world_size, info.device
    if c.batch_size % world:
        raise ConfigError(f"cam.batch_size={c.batch_size} must be divisible by the {world} processes")
    ckpt_path = out / CHECKPOINT

    # 1. data: images and image-level labels only
    layout = DatasetLayout.open(cfg.data.root, cfg.data.layout, cfg.data.classes_file)
    ids = layout.ids(cfg.data.train_split)
    labels = layout.image_labels()
    dataset = CAMTrainDataset(layout, ids, labels, c, seed=c.seed)
    num_classes = layout.classes.num_classes

    # 2. what is in OUT already: resume it, refuse it, or start afresh (before anything is built)
    class_names = list(layout.classes.names)
    wanted = resume_policy.classifier_identity(config_to_dict(cfg), class_names)
    state = resume_policy.open_run(
        out,
        CHECKPOINT,
        wanted,
        "classifier",
        "urn cam train",
        leftovers=(LOG, TENSORBOARD, "metrics.json", "config.yaml"),
        restart=restart,
        resume=resume,
        is_main=rank == 0,
    )

    # 3. model and optimiser
    seed_everything(c.seed, rank)
    net = build_cam_net(c, num_classes).to(device)
    groups = net.param_groups(c.lr, c.weight_decay, c.head_lr_mult)
    momentum = c.weight_decay if c.momentum_quirk else c.momentum  # Q1, see CAMConfig
    optimizer = torch.optim.SGD(groups, lr=c.lr, momentum=momentum, weight_decay=0.0)
    start = 0
    if state is not None:
        resume_policy.restore(ckpt_path, "model", lambda: net.load_state_dict(state["model"]))
        resume_policy.restore(ckpt_path, "optimizer state", lambda: optimizer.load_state_dict(state["optimizer"]))
        start = int(state["iteration"])
        resume_policy.restore(ckpt_path, "RNG state", restore_rng(state.get("rng"), info))
        log.info("resumed %s at iteration %d", ckpt_path, start)
    model: nn.Module = net
    if world > 1:
        model = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    if rank == 0:
        io.remove_stale_temps(out)
        io.atomic_write_text(out / "config.yaml", dump_yaml(cfg))
        trim_log(out / LOG, start)

    # 4. the shared loop, with this task's step
    loader = training_loader(dataset, c.batch_size, c.iters, start, c.seed, info, c.num_workers)

    def step(batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        imgs = batch["image"].to(device, non_blocking=True)
        targets = batch["target"].to(device, non_blocking=True)
        if c.network == "seam":
            return seam_loss(model, imgs, targets, scale=c.seam_scale)
        return F.multilabel_soft_margin_loss(model(imgs), targets), {}

    def set_lr(it: int) -> float:
        for g in optimizer.param_groups:
            g["lr"] = g["initial_lr"] * (1 - it / c.iters) ** c.poly_power
        return optimizer.param_groups[0]["lr"]

    def fields() -> dict[str, Any]:
        return {
            "kind": "classifier",
            "config": config_to_dict(cfg),
            "num_classes": num_classes,
            "class_names": class_names,
            "identity": wanted,
        }

    model.train()
    if start < c.iters:
        loop = Loop(
            net=net,
            model=model,
            optimizer=optimizer,
            step=step,
            set_lr=set_lr,
            fields=fields,
            out=out,
            info=info,
            start=start,
            total=c.iters,
            log_every=c.log_every,
            ckpt_every=c.ckpt_every,
            skip_bad_samples=cfg.data.skip_bad_samples,
            lr_key="cam.lr",
            desc="cam train",
            quiet=quiet,
        )
        train_loop(loop, loader)
    elif rank == 0:
        log.info("training already complete (%d iterations)", c.iters)

    # 5. classification scores on val (image-level labels)
    if c.eval_val and rank == 0:
        metrics = {"iterations": c.iters, "train_split": cfg.data.train_split}
        val = _evaluate_split(net, layout, cfg, device)
        if val is not None:
            metrics["val"] = val
            log.info("classifier on %s: mAP=%.2f F1=%.2f", cfg.data.val_split, val["mAP"], val["f1_micro"])
        io.atomic_write_json(out / "metrics.json", metrics)
    barrier()
    return ckpt_path


# ------------------------------------------------------------------------------ classification eval
def classification_scores(scores: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """mAP and F1 (threshold: logit 0, i.e. probability 0.5) of multi-label predictions, in percent.

    Args:
        scores: ``(N, K)`` logits; targets: ``(N, K)`` 0/1.

    Returns:
        ``mAP`` (mean AP over classes with a positive), ``f1_micro``, ``f1_macro`` (over classes with
        a positive or a prediction), ``n_images``.
    """
    aps, f1s = [], []
    pred = scores > 0
    for k in range(targets.shape[1]):
        t = targets[:, k] > 0
        if t.any():
            order = np.argsort(-scores[:, k], kind="stable")
            hits = t[order]
            precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
            aps.append(float(precision[hits].mean()))
        if t.any() or pred[:, k].any():
            f1s.append(_f1(pred[:, k], t))
    return {
        "mAP": 100.0 * float(np.mean(aps)) if aps else math.nan,
        "f1_micro": 100.0 * _f1(pred.ravel(), targets.ravel() > 0),
        "f1_macro": 100.0 * float(np.mean(f1s)) if f1s else math.nan,
        "n_images": int(len(scores)),
    }


def _f1(pred: np.ndarray, true: np.ndarray) -> float:
    tp = float((pred & true).sum())
    denom = float(pred.sum() + true.sum())
    return 2 * tp / denom if denom else 1.0


@torch.no_grad()
def evaluate_classifier(
    net: nn.Module,
    layout: DatasetLayout,
    ids: list[str],
    labels: dict[str, tuple[int, ...]],
    device: torch.device,
    long_side: int,
) -> dict[str, float]:
    """Classify each image (long side resized to ``long_side``) and score it with :func:`classification_scores`."""
    was_training = net.training
    net.eval()
    num_fg = layout.classes.num_classes - 1
    scores, targets = np.zeros((len(ids), num_fg)), np.zeros((len(ids), num_fg))
    for i, image_id in enumerate(ids):
        img = normalize(layout.read_image(image_id))[None].to(device)
        ratio = long_side / max(img.shape[2:])
        size = (max(1, round(img.shape[2] * ratio)), max(1, round(img.shape[3] * ratio)))
        img = F.interpolate(img, size, mode="bilinear", align_corners=False)
        scores[i] = net(img)[0].float().cpu().numpy()
        for k in labels[image_id]:
            targets[i, k - 1] = 1
    net.train(was_training)
    return classification_scores(scores, targets)


def _evaluate_split(
    net: nn.Module, layout: DatasetLayout, cfg: Config, device: torch.device
) -> dict[str, float] | None:
    try:
        ids = layout.ids(cfg.data.val_split)
    except DataError as exc:
        log.warning("no classification eval: %s", exc)
        return None
    labels = layout.image_labels()
    ids = [i for i in ids if i in labels]
    return evaluate_classifier(net, layout, ids, labels, device, cfg.cam.crop_size) if ids else None
