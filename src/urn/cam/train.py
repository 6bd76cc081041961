"""Stage: train the multi-label CAM classifier (``urn cam train``).

Artifacts in ``OUT``:

- ``checkpoint.pth``: one dict, written atomically every ``cam.ckpt_every`` iterations and at the
  end: ``kind`` (``"classifier"``), ``model``, ``optimizer``, ``iteration``, ``rng`` (per rank),
  ``config``, ``num_classes``, ``class_names``, ``identity`` (:mod:`urn.engine.resume`). Load it
  with ``torch.load(..., weights_only=True)``.
- ``config.yaml``: the resolved config; ``log.jsonl``: one line per ``cam.log_every`` iterations;
- ``metrics.json``: classification mAP / F1 on ``data.val_split`` (image-level labels only).

A checkpoint already in ``OUT`` is resumed when it was trained with the same identity (classifier,
data, classes, schedule), refused with one line naming what differs otherwise; ``restart`` deletes the
run first (:mod:`urn.engine.resume`, the policy of every training).

Iteration-based poly LR SGD with the reference's four parameter groups; ``torchrun`` DDP when
``WORLD_SIZE > 1`` (gloo on CPU, nccl on GPU), rank 0 writes. Never reads ground-truth masks.
"""

from __future__ import annotations

import json
import logging
import math
import random
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, default_collate

from urn import io
from urn.cam.data import BatchPlan, CAMTrainDataset, normalize
from urn.cam.network import build_cam_net
from urn.cam.seam_losses import seam_loss
from urn.config import Config, config_to_dict, dump_yaml
from urn.data.layout import DatasetLayout
from urn.engine import resume as resume_policy
from urn.engine.checkpoint import save_checkpoint
from urn.engine.distributed import barrier, setup
from urn.engine.stopping import SignalStopError, StopRequest, WorkerDiedError, guard_workers, worker_init
from urn.errors import ConfigError, DataError, TrainingError, UrnError
from urn.progress import progress_bar

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pth"


# --------------------------------------------------------------------------------------- processes
def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    keys, *rest = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


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
        resume: continue ``OUT/checkpoint.pth``; a checkpoint of the same identity is resumed
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
    dataset = CAMTrainDataset(layout, ids, labels, c)
    num_classes = layout.classes.num_classes

    # 2. what is in OUT already: resume it, refuse it, or start afresh (before anything is built)
    class_names = list(layout.classes.names)
    wanted = resume_policy.classifier_identity(config_to_dict(cfg), class_names)

    def stored_identity(ckpt: dict[str, Any]) -> dict[str, Any]:
        # a classifier checkpoint written before they had a kind has no AMP scaler state
        if ckpt.get("kind", "segmentor" if "scaler" in ckpt else "classifier") != "classifier":
            raise UrnError(f"{ckpt_path}: not a `urn cam train` checkpoint; {resume_policy.HINT}")
        if isinstance(ckpt.get("identity"), dict):
            return ckpt["identity"]
        if not isinstance(ckpt.get("config"), dict) or "cam" not in ckpt["config"]:
            raise UrnError(f"{ckpt_path}: a checkpoint without its config, cannot resume it; {resume_policy.HINT}")
        names = ckpt.get("class_names")
        return resume_policy.classifier_identity(ckpt["config"], names, num_classes=ckpt.get("num_classes"))

    state = resume_policy.open_run(
        out,
        CHECKPOINT,
        wanted,
        stored_identity,
        leftovers=("log.jsonl", "metrics.json", "config.yaml"),
        restart=restart,
        resume=resume,
        is_main=rank == 0,
    )

    # 3. model and optimiser
    torch.manual_seed(c.seed + rank)
    np.random.seed(c.seed + rank)
    random.seed(c.seed + rank)
    net = build_cam_net(c, num_classes).to(device)
    groups = net.param_groups(c.lr, c.weight_decay, c.head_lr_mult)
    momentum = c.weight_decay if c.momentum_quirk else c.momentum  # Q1, see CAMConfig
    optimizer = torch.optim.SGD(groups, lr=c.lr, momentum=momentum, weight_decay=0.0)
    start = 0
    if state is not None:
        resume_policy.restore(ckpt_path, "model", lambda: net.load_state_dict(state["model"]))
        resume_policy.restore(ckpt_path, "optimizer state", lambda: optimizer.load_state_dict(state["optimizer"]))
        start = int(state["iteration"])
        rng = state.get("rng") or []
        if len(rng) == world:
            resume_policy.restore(ckpt_path, "RNG state", lambda: _set_rng_state(rng[rank]))
        log.info("resumed %s at iteration %d", ckpt_path, start)
    model: nn.Module = net
    if world > 1:
        model = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    if rank == 0:
        io.remove_stale_temps(out)
        io.atomic_write_text(out / "config.yaml", dump_yaml(cfg))
        _trim_log(out / "log.jsonl", start)

    # 4. loop
    plan = BatchPlan(len(dataset), c.batch_size, c.seed, start, c.iters, rank, world)
    # an own generator: creating the loader iterator must not draw from the global torch RNG, or a
    # resumed run's dropout masks would drift from an uninterrupted run's
    loader = DataLoader(
        _CarryDataErrors(dataset),
        batch_sampler=plan,
        num_workers=c.num_workers,
        collate_fn=_collate,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(c.seed),
        # the workers leave SIGINT/SIGTERM to this process, which saves before it stops (urn.engine.stopping)
        worker_init_fn=worker_init(),
    )
    model.train()
    bar = progress_bar(total=c.iters, initial=start, desc="cam train", disable=quiet or rank != 0)
    last_saved, t0 = start, time.time()
    it = start
    consistent = True  # net, optimizer and `it` agree (False while a step is being applied)
    try:
        with StopRequest() as stop, guard_workers(loader) as batches:
            for batch in batches:
                if isinstance(batch, DataError):
                    raise batch  # a bad image: one line naming it, whichever process read it
                imgs, targets, _ = batch
                for g in optimizer.param_groups:
                    g["lr"] = g["initial_lr"] * (1 - it / c.iters) ** c.poly_power
                imgs, targets = imgs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
                if c.network == "seam":
                    loss, parts = seam_loss(model, imgs, targets, scale=c.seam_scale)
                else:
                    loss = F.multilabel_soft_margin_loss(model(imgs), targets)
                    parts = {}
                # the stop flag rides along the loss's all-reduce: every rank sees a signal at the same iteration
                flag = torch.tensor(float(stop.signal or 0), device=loss.device)
                reported = _mean_over_ranks(torch.stack([loss.detach(), *parts.values(), flag]), world)
                reported, stop_signal = reported[:-1], int(round(float(reported[-1]) * world))
                if not torch.isfinite(reported).all():
                    raise TrainingError(
                        f"loss is {reported[0].item()} at iteration {it}; training stopped. The last checkpoint "
                        f"({ckpt_path}, iteration {last_saved}) is kept; lower cam.lr and resume or restart"
                    )
                optimizer.zero_grad(set_to_none=True)
                consistent = False
                loss.backward()
                optimizer.step()
                it += 1
                consistent = True
                bar.update(1)
                bar.set_postfix(loss=f"{reported[0].item():.4f}")
                if rank == 0 and (it % c.log_every == 0 or it == c.iters):
                    entry = {"iter": it, "loss": reported[0].item(), "lr": optimizer.param_groups[0]["lr"]}
                    entry.update({k: v.item() for k, v in zip(parts, reported[1:], strict=True)})
                    entry["time_s"] = round(time.time() - t0, 3)
                    io.append_jsonl(out / "log.jsonl", entry)
                if it % c.ckpt_every == 0 or it == c.iters or stop_signal:
                    _checkpoint(ckpt_path, net, optimizer, it, cfg, layout, rank, world, wanted)
                    last_saved = it
                if stop_signal:
                    signum = stop.signal or (signal.SIGTERM if stop_signal >= signal.SIGTERM else signal.SIGINT)
                    raise SignalStopError(
                        f"stopped by signal {signum} at iteration {it}; checkpoint saved to {ckpt_path}, "
                        "rerun the same command to continue",
                        signum,
                    )
    except WorkerDiedError as exc:
        what = str(exc)
        if consistent and world == 1:
            _checkpoint(ckpt_path, net, optimizer, it, cfg, layout, rank, world, wanted)
            raise UrnError(f"{what}; checkpoint saved to {ckpt_path}, rerun the same command to continue") from None
        raise UrnError(
            f"{what}; the last checkpoint ({ckpt_path}, iteration {last_saved}) is kept, "
            "rerun the same command to continue"
        ) from None
    bar.close()
    if start >= c.iters and rank == 0:
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


class _CarryDataErrors(Dataset):
    """Hands a sample's :class:`DataError` over as the sample instead of raising it.

    Raised inside a DataLoader worker, it would reach the main process as a RuntimeError holding a
    traceback; returned, it travels (pickled) to the training loop, which raises it as it is.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: Any) -> Any:
        try:
            return self.dataset[item]
        except DataError as exc:
            return exc


def _collate(samples: list[Any]) -> Any:
    """``default_collate``, or the first :class:`DataError` among the samples."""
    for sample in samples:
        if isinstance(sample, DataError):
            return sample
    return default_collate(samples)


def _mean_over_ranks(x: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        x = x.clone()
        dist.all_reduce(x)  # a NaN on any rank makes every rank stop together
        x /= world
    return x


def _checkpoint(
    path: Path,
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    it: int,
    cfg: Config,
    layout: DatasetLayout,
    rank: int,
    world: int,
    identity: dict[str, Any],
) -> None:
    rng = _rng_state()
    if world > 1:
        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, rng)
        rngs = gathered
    else:
        rngs = [rng]
    if rank == 0:
        save_checkpoint(
            path,
            {
                "kind": "classifier",
                "model": net.state_dict(),
                "optimizer": optimizer.state_dict(),
                "iteration": it,
                "rng": rngs,
                "config": config_to_dict(cfg),
                "num_classes": layout.classes.num_classes,
                "class_names": list(layout.classes.names),
                "identity": identity,
            },
        )


def _trim_log(path: Path, start: int) -> None:
    """Drop log lines past the checkpoint we resume from (they will be logged again)."""
    if not path.exists():
        return
    if start == 0:
        path.unlink()
        return
    keep = [
        ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip() and json.loads(ln)["iter"] <= start
    ]
    io.atomic_write_text(path, "".join(ln + "\n" for ln in keep))


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
