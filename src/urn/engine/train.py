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

import contextlib
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from urn.config import Config, TrainConfig, config_to_dict, dump_yaml
from urn.engine import distributed
from urn.engine import resume as resume_policy
from urn.engine.checkpoint import save_checkpoint
from urn.engine.sampling import KeyBatchSampler, TolerantDataset, collate_tolerant
from urn.engine.stopping import SignalStopError, StopRequest, WorkerDiedError, guard_workers, worker_init
from urn.errors import TrainingError, UrnError
from urn.io import append_jsonl, atomic_write_text
from urn.progress import progress_bar

LAST = "last.pt"
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
    target_dir: str | None = None,
    uncertainty_dir: str | None = None,
    resume: bool = False,
    restart: bool = False,
    device: str | None = None,
    quiet: bool = False,
) -> Path:
    """Train a segmentor on ``cfg.data`` with the schedule ``tcfg``; returns the path of ``last.pt``.

    Args:
        target_dir: pseudo-mask folder (default ``cfg.data.pseudo_masks``; ignored when
            ``cfg.data.fully_supervised``).
        uncertainty_dir: per-pixel uncertainty folder for Seg-2 (default ``cfg.data.uncertainty``).
        resume: continue from ``out/last.pt`` if it exists (exactly: same batches, same RNG). A
            checkpoint trained with the same model, classes, data and schedule is resumed without
            it too; one trained otherwise is refused (:func:`urn.engine.resume.open_run`).
        restart: delete ``out``'s checkpoints and log first and train from iteration 0.

    Raises:
        UrnError: bad data or config, ``out`` holds a run of another config, a NaN loss.
    """
    from urn.data.dataset import SegmentationDataset
    from urn.data.layout import DatasetLayout
    from urn.data.transforms import train_transforms
    from urn.engine.evaluate import evaluate_segmentor
    from urn.losses import SegmentationLoss
    from urn.models import build_segmentor

    info = distributed.setup(device)
    out = Path(out)
    # 1. data
    layout = DatasetLayout.open(cfg.data.root, cfg.data.layout, cfg.data.classes_file)
    num_classes = layout.classes.num_classes
    dataset = SegmentationDataset(
        layout,
        cfg.data.train_split,
        target_dir=target_dir or cfg.data.pseudo_masks,
        uncertainty_dir=uncertainty_dir or cfg.data.uncertainty,
        fully_supervised=cfg.data.fully_supervised,
        transform=train_transforms(cfg.data),
        seed=tcfg.seed,
    )
    # URN's weighting without weights would train Seg-2 as plain cross-entropy: refuse before anything runs
    dataset.require_weights(tcfg.weighting, "seg2" if tcfg is cfg.seg2 else "train")
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
    effective = {
        "target_dir": target_dir or cfg.data.pseudo_masks,
        "uncertainty_dir": uncertainty_dir or cfg.data.uncertainty,
    }
    wanted = resume_policy.segmentation_identity(config_to_dict(cfg), schedule, class_names, **effective)

    def stored_identity(ckpt: dict[str, Any]) -> dict[str, Any]:
        if ckpt.get("kind") != "segmentor":
            raise UrnError(f"{out / LAST}: not a `urn train` checkpoint; {resume_policy.HINT}")
        if isinstance(ckpt.get("identity"), dict):
            return ckpt["identity"]
        if not isinstance(ckpt.get("config"), dict):
            raise UrnError(f"{out / LAST}: a checkpoint without its config, cannot resume it; {resume_policy.HINT}")
        names = ckpt.get("class_names")
        return resume_policy.segmentation_identity(
            ckpt["config"], schedule, names, num_classes=ckpt.get("num_classes"), **effective
        )

    ckpt = resume_policy.open_run(
        out,
        LAST,
        wanted,
        stored_identity,
        leftovers=(BEST, "log.jsonl", "config.yaml"),
        restart=restart,
        resume=resume,
        is_main=info.is_main,
    )

    # 3. model, loss, optimizer
    torch.manual_seed(tcfg.seed)
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
        resume_policy.restore(path, "RNG state", lambda: torch.set_rng_state(ckpt["rng"]))
        start_iter, best_miou = int(ckpt["iteration"]), float(ckpt.get("best_miou", -1.0))
        if info.is_main:
            _truncate_log(out / "log.jsonl", start_iter)
    if start_iter >= tcfg.iters:
        return out / LAST
    ddp_model: torch.nn.Module = model
    if info.distributed:
        ddp_model = DistributedDataParallel(
            model, device_ids=[info.device.index] if info.device.type == "cuda" else None
        )

    sampler = KeyBatchSampler(
        len(dataset),
        global_batch=tcfg.batch_size,
        total_iters=tcfg.iters,
        start_iter=start_iter,
        seed=tcfg.seed,
        rank=info.rank,
        world_size=info.world_size,
    )
    loader = DataLoader(
        TolerantDataset(dataset),
        batch_sampler=sampler,
        num_workers=cfg.data.num_workers,
        collate_fn=collate_tolerant,
        pin_memory=info.device.type == "cuda",
        # A private generator: the loader must not draw from the global RNG that dropout uses,
        # or a resumed run would diverge from an uninterrupted one.
        generator=torch.Generator().manual_seed(tcfg.seed),
        persistent_workers=False,
        # the workers leave SIGINT/SIGTERM to this process, which saves before it stops (urn.engine.stopping)
        worker_init_fn=worker_init(),
    )
    if info.is_main:
        atomic_write_text(out / "config.yaml", dump_yaml(cfg))

    def state(iteration: int) -> dict[str, Any]:
        return {
            "kind": "segmentor",
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "iteration": iteration,
            "rng": torch.get_rng_state(),
            "best_miou": best_miou,
            "num_classes": num_classes,
            "class_names": class_names,
            "config": config_to_dict(cfg),
            "identity": wanted,
        }

    # 5. loop
    bad_samples = 0
    log_path = out / "log.jsonl"
    ddp_model.train()
    bar = progress_bar(total=tcfg.iters, initial=start_iter, desc="train", disable=quiet or not info.is_main)
    it = start_iter
    t_last = time.perf_counter()
    consistent = True  # model, optimizer and `it` agree (False while a step is being applied)
    with (
        StopRequest() as stop,
        _save_when_a_worker_dies(lambda: info.is_main and consistent, lambda: state(it), out),
        guard_workers(loader) as batches,
    ):
        for batch in batches:
            for message in batch["errors"]:
                bad_samples += 1
                if bad_samples > cfg.data.skip_bad_samples:
                    if cfg.data.skip_bad_samples:
                        message += f" (more than data.skip_bad_samples={cfg.data.skip_bad_samples} bad samples)"
                    raise UrnError(message)
                _log(log_path, {"iter": it, "skipped_sample": message}, info.is_main)
            lr = poly_lr(tcfg.lr, it, tcfg.iters, tcfg.poly_power, tcfg.min_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr * group["lr_mult"]
            parts: dict[str, float] = {}
            if "image" in batch:
                images = batch["image"].to(info.device, non_blocking=True)
                if tcfg.channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                target = batch["target"].to(info.device, non_blocking=True)
                weight = batch["weight"].to(info.device, non_blocking=True)
                with torch.autocast(device_type=info.device.type, enabled=use_amp):
                    outputs = ddp_model(images)
                loss, parts = criterion(outputs, target, weight)
                if not math.isfinite(float(loss.detach())):
                    raise TrainingError(
                        f"loss became {float(loss.detach())} at iteration {it + 1}; stopped. "
                        f"The last good checkpoint is {out / LAST}; lower train.lr or check the data."
                    )
                optimizer.zero_grad(set_to_none=True)
                consistent = False
                scaler.scale(loss).backward()
                if tcfg.grad_clip:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
            it += 1
            consistent = True
            bar.update(1)
            if it % tcfg.log_every == 0 or it == tcfg.iters:
                now = time.perf_counter()
                record = {"iter": it, "lr": lr, **parts, "sec_per_iter": (now - t_last) / tcfg.log_every}
                t_last = now
                bar.set_postfix(loss=f"{parts.get('loss', float('nan')):.3f}", lr=f"{lr:.2e}")
                _log(log_path, record, info.is_main)
            if tcfg.val_every and it % tcfg.val_every == 0 and it < tcfg.iters:
                scores = evaluate_segmentor(model, layout, cfg.data.val_split, cfg, info, quick=True)
                ddp_model.train()
                _log(log_path, {"iter": it, "val_miou": scores.miou * 100}, info.is_main)
                if scores.miou > best_miou:
                    best_miou = scores.miou
                    if info.is_main:
                        save_checkpoint(out / BEST, state(it))
            if info.is_main and (it % tcfg.ckpt_every == 0 or it == tcfg.iters or stop.signal):
                save_checkpoint(out / LAST, state(it))
            if stop.signal:
                distributed.barrier()
                raise SignalStopError(
                    f"stopped by signal {stop.signal} at iteration {it}; checkpoint saved to {out / LAST}, "
                    "rerun the same command to continue",
                    stop.signal,
                )
    bar.close()
    distributed.barrier()
    return out / LAST


@contextlib.contextmanager
def _save_when_a_worker_dies(can_save: Any, state: Any, out: Path) -> Any:
    """Turn a dead DataLoader worker into one line, after saving ``state()`` when ``can_save()``."""
    try:
        yield
    except WorkerDiedError as exc:
        if can_save():
            save_checkpoint(out / LAST, state())
            raise UrnError(f"{exc}; checkpoint saved to {out / LAST}, rerun the same command to continue") from None
        raise UrnError(f"{exc}; the last checkpoint in {out} is kept, rerun the same command to continue") from None


def _log(path: Path, record: dict[str, Any], is_main: bool) -> None:
    """Append one JSON line (rank 0 only). Appends are line-sized, so a crash loses at most a line."""
    if is_main:
        append_jsonl(path, record)


def _truncate_log(path: Path, last_iter: int) -> None:
    """Drop log lines past the checkpoint a run resumes from, so the log matches one clean run."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("iter", 0) <= last_iter:
                keep.append(line)
        except json.JSONDecodeError:
            continue  # a line cut by the kill
    atomic_write_text(path, "".join(f"{line}\n" for line in keep))
