"""The segmentation training loop: iteration-based SGD with poly LR, AMP on CUDA, DDP via torchrun.

Read :func:`train_segmentor` top to bottom: data -> model -> optimizer -> (resume) -> loop. Outputs in
``out``: ``last.pt`` (every ``ckpt_every`` iterations and at the end), ``best.pt`` (best periodic val
mIoU; for inspection only, the pipeline uses ``last.pt`` so no ground truth steers a weakly
supervised run), ``log.jsonl`` (one JSON object per logged iteration / validation), ``config.yaml``.

An existing ``last.pt`` in ``out`` is resumed when it was trained with the same model, classes, data
and schedule, refused with one line naming what differs otherwise; ``restart`` starts over
(:mod:`urn.engine.resume`, the policy of every training).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset

from urn.config import Config, TrainConfig, config_to_dict, dump_yaml
from urn.data.layout import DatasetLayout
from urn.engine import distributed
from urn.engine import resume as resume_policy
from urn.engine.checkpoint import save_checkpoint
from urn.engine.loop import (
    LAST,
    LOG,
    TENSORBOARD,
    Loop,
    gather_rng,
    restore_rng,
    seed_everything,
    train_loop,
    training_loader,
    trim_log,
)
from urn.errors import UrnError
from urn.io import atomic_write_text

BEST = "best.pt"


def poly_lr(base_lr: float, it: int, total: int, power: float, min_lr: float) -> float:
    """mmseg's poly schedule with a floor: ``(base - min) * (1 - it / total) ** power + min``."""
    return (base_lr - min_lr) * (1 - it / total) ** power + min_lr


def build_optimizer(model: torch.nn.Module, tcfg: TrainConfig) -> torch.optim.SGD:
    """SGD with two groups: backbone at ``lr``, heads at ``lr * head_lr_mult`` (1.0 in the reference)."""
    backbone, heads = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (backbone if name.startswith("backbone.") else heads).append(p)
    groups = [
        {"params": backbone, "lr_mult": 1.0},
        {"params": heads, "lr_mult": tcfg.head_lr_mult},
    ]
    return torch.optim.SGD(
        [g for g in groups if g["params"]], lr=tcfg.lr, momentum=tcfg.momentum, weight_decay=tcfg.weight_decay
    )


def train_segmentor(
    cfg: Config,
    tcfg: TrainConfig,
    out: Path,
    *,
    dataset: Dataset,
    layout: DatasetLayout,
    inputs: dict[str, Any] | None = None,
    resume: bool = False,
    restart: bool = False,
    device: str | None = None,
    quiet: bool = False,
) -> Path:
    """Train ``cfg.model`` on ``dataset`` with the schedule ``tcfg``; returns the path of ``last.pt``.

    The engine knows models, losses, loaders and checkpoints; what the samples are (ground truth,
    pseudo-masks, cyclic masks with their uncertainty) is the calling stage's business
    (:func:`urn.stages.segmentation.run_train`).

    Args:
        dataset: keyed training samples (``image``, ``target``, ``weight``, ``id``; see
            :class:`urn.data.dataset.SegmentationDataset`).
        layout: the dataset's layout (classes; val split for periodic validation).
        inputs: what else identifies the run besides the config (e.g. the mask folders); a checkpoint
            made from other inputs is not resumed.
        resume: continue from ``out/last.pt`` if it exists (exactly: same batches, same RNG). A
            checkpoint trained with the same model, classes, data and schedule is resumed without
            it too; one trained otherwise is refused (:func:`urn.engine.resume.open_run`).
        restart: delete ``out``'s checkpoints and log first and train from iteration 0.

    Raises:
        UrnError: bad data or config, ``out`` holds a run of another config, a NaN loss.
    """
    from urn.engine.evaluate import evaluate_segmentor
    from urn.losses import SegmentationLoss
    from urn.models import build_segmentor

    info = distributed.setup(device)
    out = Path(out)
    # 1. data
    num_classes = layout.classes.num_classes
    if tcfg.batch_size % info.world_size:
        raise UrnError(f"train.batch_size={tcfg.batch_size} is not divisible by {info.world_size} processes")
    synced = cfg.model.sync_bn and info.distributed and info.device.type == "cuda"
    if tcfg.batch_size // info.world_size < 2 and not synced:
        # BatchNorm after the PSP 1x1 pooling bin sees one value per channel with one sample.
        raise UrnError(
            f"train.batch_size={tcfg.batch_size} over {info.world_size} processes leaves one image per process; "
            "BatchNorm needs at least 2 (or model.sync_bn=true on GPUs)"
        )

    # 2. what is in `out` already: resume it, refuse it, or start afresh (before anything is built)
    schedule = "seg2" if tcfg is cfg.seg2 else "train"
    class_names = list(layout.classes.names)
    wanted = resume_policy.segmentation_identity(config_to_dict(cfg), schedule, class_names, **(inputs or {}))
    ckpt = resume_policy.open_run(
        out,
        LAST,
        wanted,
        "segmentor",
        "urn train",
        leftovers=(BEST, LOG, TENSORBOARD, "config.yaml"),
        restart=restart,
        resume=resume,
        is_main=info.is_main,
    )

    # 3. model, loss, optimizer
    seed_everything(tcfg.seed, info.rank)
    model = build_segmentor(cfg.model, num_classes).to(info.device)
    if cfg.model.sync_bn and info.distributed:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if tcfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    criterion = SegmentationLoss.from_config(tcfg, aux_weight=cfg.model.aux_weight)
    optimizer = build_optimizer(model, tcfg)
    use_amp = tcfg.amp and info.device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    # 4. resume
    start_iter, best_miou = 0, -1.0
    if ckpt is not None:
        path = out / LAST
        resume_policy.restore(path, "model", lambda: model.load_state_dict(ckpt["model"]))
        resume_policy.restore(path, "optimizer state", lambda: optimizer.load_state_dict(ckpt["optimizer"]))
        resume_policy.restore(path, "AMP scaler state", lambda: scaler.load_state_dict(ckpt["scaler"]))
        resume_policy.restore(path, "RNG state", restore_rng(ckpt.get("rng"), info))
        start_iter, best_miou = int(ckpt["iteration"]), float(ckpt.get("best_miou", -1.0))
    if info.is_main:
        trim_log(out / LOG, start_iter)
    if start_iter >= tcfg.iters:
        return out / LAST
    ddp_model: torch.nn.Module = model
    if info.distributed:
        ddp_model = DistributedDataParallel(
            model, device_ids=[info.device.index] if info.device.type == "cuda" else None
        )
    loader = training_loader(dataset, tcfg.batch_size, tcfg.iters, start_iter, tcfg.seed, info, cfg.data.num_workers)
    if info.is_main:
        atomic_write_text(out / "config.yaml", dump_yaml(cfg))

    # 5. the shared loop, with this task's step
    def step(batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        images = batch["image"].to(info.device, non_blocking=True)
        if tcfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        target = batch["target"].to(info.device, non_blocking=True)
        weight = batch["weight"].to(info.device, non_blocking=True)
        with torch.autocast(device_type=info.device.type, enabled=use_amp):
            outputs = ddp_model(images)
        return criterion.terms(outputs, target, weight)

    def set_lr(it: int) -> float:
        lr = poly_lr(tcfg.lr, it, tcfg.iters, tcfg.poly_power, tcfg.min_lr)
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_mult"]
        return lr

    def fields() -> dict[str, Any]:
        return {
            "kind": "segmentor",
            "best_miou": best_miou,
            "num_classes": num_classes,
            "class_names": class_names,
            "config": config_to_dict(cfg),
            "identity": wanted,
        }

    loop = Loop(
        net=model,
        model=ddp_model,
        optimizer=optimizer,
        step=step,
        set_lr=set_lr,
        fields=fields,
        out=out,
        info=info,
        start=start_iter,
        total=tcfg.iters,
        log_every=tcfg.log_every,
        ckpt_every=tcfg.ckpt_every,
        skip_bad_samples=cfg.data.skip_bad_samples,
        scaler=scaler,
        grad_clip=tcfg.grad_clip,
        lr_key=f"{schedule}.lr",
        desc="train",
        quiet=quiet,
    )

    def validate(it: int) -> None:
        """Periodic val mIoU (``val_every``), logged; the best state also goes to ``best.pt``."""
        nonlocal best_miou
        if not tcfg.val_every or it % tcfg.val_every or it >= tcfg.iters:
            return
        scores = evaluate_segmentor(model, layout, cfg.data.val_split, cfg, info, quick=True)
        ddp_model.train()
        loop.log({"iter": it, "val_miou": scores.miou * 100})
        if scores.miou > best_miou:
            best_miou = scores.miou
            rngs = gather_rng(info.world_size)
            if info.is_main:
                save_checkpoint(out / BEST, loop.state(it, rngs))

    loop.after_step = validate
    ddp_model.train()
    return train_loop(loop, loader)
