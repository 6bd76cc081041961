"""The one training loop of urn: the CAM classifier, Seg-1 and Seg-2 all run through :func:`train_loop`.

torchvision's references are the model: the caller builds data, model, optimizer and resumes them
(:mod:`urn.engine.resume`); this module owns what every training shares:

- one sampler (:class:`~urn.engine.sampling.KeyBatchSampler`: a resumed run sees exactly the batches an
  uninterrupted one would) and one bad-sample carrier (:class:`~urn.engine.sampling.TolerantDataset`,
  ``data.skip_bad_samples``);
- one step: forward through the task's ``step`` function, losses averaged over ranks together with the
  stop flag (every rank stops at the same iteration, a NaN on any rank stops all), AMP scaling, optional
  gradient clipping;
- one checkpoint convention: ``OUT/last.pt`` every ``ckpt_every`` iterations, at the end and when a
  signal asks to stop, holding the model, optimizer, AMP scaler, iteration and the **full RNG state of
  every rank** (torch CPU and CUDA, NumPy, Python: :func:`rng_state`), plus the task's own fields;
- one log, ``OUT/log.jsonl`` (rank 0; trimmed back to the checkpoint on resume by :func:`trim_log`), its
  scalars also as TensorBoard events in ``OUT/tb`` when the ``tensorboard`` package is installed
  (``pip install urn[tensorboard]``).
"""

from __future__ import annotations

import json
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader

from urn.engine.checkpoint import save_checkpoint
from urn.engine.distributed import DistInfo, all_reduce_mean, barrier
from urn.engine.sampling import KeyBatchSampler, TolerantDataset, collate_tolerant
from urn.engine.stopping import SignalStopError, StopRequest, WorkerDiedError, guard_workers, worker_init
from urn.errors import TrainingError, UrnError
from urn.io import append_jsonl, atomic_write_text
from urn.progress import progress_bar

LAST = "last.pt"
LOG = "log.jsonl"
TENSORBOARD = "tb"

#: ``step(batch) -> (loss, parts)``: the scalar to back-propagate and named 0-d tensors to log.
StepFn = Callable[[dict[str, Any]], tuple[Tensor, dict[str, Tensor]]]


def seed_everything(seed: int, rank: int = 0) -> None:
    """Seed torch (CPU and CUDA), NumPy and Python with ``seed + rank`` (each rank its own dropout)."""
    torch.manual_seed(seed + rank)
    np.random.seed(seed + rank)
    random.seed(seed + rank)


def rng_state() -> dict[str, Any]:
    """This process's RNG state: torch CPU, every CUDA device, NumPy's and Python's global generators."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    keys, *rest = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def restore_rng(stored: Any, info: DistInfo) -> Callable[[], None]:
    """A function restoring this rank's share of a checkpoint's ``rng`` entry (one state per rank).

    A list from another number of ranks leaves the seeded state as it is: the run still resumes, only
    not bit-exactly.
    """

    def restore() -> None:
        if isinstance(stored, list) and len(stored) == info.world_size:
            set_rng_state(stored[info.rank])

    return restore


def gather_rng(world: int) -> list[dict[str, Any]]:
    """Every rank's :func:`rng_state`, in rank order (a collective: all ranks call it together)."""
    state = rng_state()
    if world == 1:
        return [state]
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, state)
    return gathered


def trim_log(path: Path, last_iter: int) -> None:
    """Drop log lines past the checkpoint a run resumes from, so the log reads as one clean run."""
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


@dataclass
class Loop:
    """One training run: what :func:`train_loop` needs besides the batches.

    Attributes:
        net: the model (unwrapped: its ``state_dict`` is what the checkpoint holds).
        model: what the step calls (``net``, or ``net`` in DistributedDataParallel).
        optimizer: its parameter groups carry ``lr_mult`` (or ``initial_lr``) for ``set_lr``.
        step: the task's forward and loss (:data:`StepFn`).
        set_lr: sets every group's learning rate for an iteration; returns the rate to log.
        fields: the task's own checkpoint entries (``kind``, config, identity, classes, ...), called
            at every save.
        out: the run folder.
        info: this process's rank, world and device.
        start, total: the first iteration to run and the schedule's length.
        log_every, ckpt_every: iterations between log lines and between checkpoints.
        skip_bad_samples: unreadable samples that may be skipped (logged) before training stops.
        scaler: the AMP scaler (disabled: plain fp32 steps).
        grad_clip: max gradient norm (0: none).
        lr_key: the config key named in the NaN message (``train.lr``, ``cam.lr``).
        desc: the progress bar's label; quiet: no bar.
        after_step: called with the iteration after each step (e.g. periodic validation).
    """

    net: nn.Module
    model: nn.Module
    optimizer: torch.optim.Optimizer
    step: StepFn
    set_lr: Callable[[int], float]
    fields: Callable[[], dict[str, Any]]
    out: Path
    info: DistInfo
    start: int
    total: int
    log_every: int
    ckpt_every: int
    skip_bad_samples: int = 0
    scaler: torch.amp.GradScaler = field(default_factory=lambda: torch.amp.GradScaler("cuda", enabled=False))
    grad_clip: float = 0.0
    lr_key: str = "train.lr"
    desc: str = "train"
    quiet: bool = False
    after_step: Callable[[int], None] | None = None
    _board: Any = field(default=None, init=False, repr=False)  # None: not opened yet; False: no tensorboard

    def state(self, iteration: int, rngs: list[dict[str, Any]]) -> dict[str, Any]:
        """The checkpoint at ``iteration``: the task's fields, then what every training stores."""
        return {
            **self.fields(),
            "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "iteration": iteration,
            "rng": rngs,
        }

    def save(self, iteration: int) -> None:
        """Write ``OUT/last.pt`` (rank 0; every rank joins the RNG gathering)."""
        rngs = gather_rng(self.info.world_size)
        if self.info.is_main:
            save_checkpoint(self.out / LAST, self.state(iteration, rngs))

    def log(self, record: dict[str, Any]) -> None:
        """One line of ``log.jsonl`` (rank 0), its numbers also to TensorBoard when it is installed."""
        if not self.info.is_main:
            return
        append_jsonl(self.out / LOG, record)
        if self._board is None:
            self._board = tensorboard_writer(self.out / TENSORBOARD, purge_step=self.start) or False
        if self._board:
            for key, value in record.items():
                if key != "iter" and isinstance(value, int | float) and not isinstance(value, bool):
                    self._board.add_scalar(key, value, record["iter"])

    def close(self) -> None:
        if self._board:
            self._board.close()


def tensorboard_writer(folder: Path, purge_step: int = 0) -> Any | None:
    """A TensorBoard ``SummaryWriter`` on ``folder``, or None when the ``tensorboard`` package is missing.

    ``purge_step``: a resumed run drops the events it is about to log again (as ``trim_log`` does).
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(folder), purge_step=purge_step or None)


def train_loop(loop: Loop, batches: Any) -> Path:
    """Run iterations ``loop.start .. loop.total - 1`` over ``batches``; returns ``OUT/last.pt``.

    ``batches`` is the DataLoader (yielding :func:`~urn.engine.sampling.collate_tolerant` batches).

    Raises:
        UrnError: more bad samples than allowed; a dead loader worker (after saving when it can).
        TrainingError: a non-finite loss (the last checkpoint is kept).
        SignalStopError: SIGINT/SIGTERM, after saving the checkpoint.
    """
    info, out = loop.info, loop.out
    ckpt = out / LAST
    bad_samples = 0
    bar = progress_bar(total=loop.total, initial=loop.start, desc=loop.desc, disable=loop.quiet or not info.is_main)
    it = last_saved = loop.start
    t_last = time.perf_counter()
    consistent = True  # net, optimizer and `it` agree (False while a step is being applied)
    try:
        with StopRequest() as stop, guard_workers(batches) as stream:
            for batch in stream:
                for message in batch["errors"]:
                    bad_samples += 1
                    if bad_samples > loop.skip_bad_samples:
                        if loop.skip_bad_samples:
                            message += f" (more than data.skip_bad_samples={loop.skip_bad_samples} bad samples)"
                        raise UrnError(message)
                    loop.log({"iter": it, "skipped_sample": message})
                lr = loop.set_lr(it)
                parts: dict[str, float] = {}
                if "image" in batch:  # else every sample of this rank's batch was bad (and allowed to be)
                    loss, named = loop.step(batch)
                    # the stop flag rides along the losses' all-reduce: every rank stops at the same iteration
                    flag = torch.tensor(float(stop.signal or 0), device=loss.device)
                    values = torch.stack([loss.detach().float(), *(v.detach().float() for v in named.values()), flag])
                    reported = all_reduce_mean(values, info).tolist()  # one host sync
                    stop_signal = int(round(reported[-1] * info.world_size))
                    parts = dict(zip(["loss", *named], reported[:-1], strict=True))
                    if not all(np.isfinite(v) for v in reported[:-1]):
                        raise TrainingError(
                            f"loss became {parts['loss']} at iteration {it + 1}; stopped. The last good checkpoint "
                            f"({ckpt}, iteration {last_saved}) is kept; lower {loop.lr_key} or check the data, "
                            "then rerun to resume"
                        )
                    loop.optimizer.zero_grad(set_to_none=True)
                    consistent = False
                    loop.scaler.scale(loss).backward()
                    if loop.grad_clip:
                        loop.scaler.unscale_(loop.optimizer)
                        torch.nn.utils.clip_grad_norm_(loop.net.parameters(), loop.grad_clip)
                    loop.scaler.step(loop.optimizer)
                    loop.scaler.update()
                else:
                    stop_signal = int(stop.signal or 0)
                it += 1
                consistent = True
                bar.update(1)
                if it % loop.log_every == 0 or it == loop.total:
                    now = time.perf_counter()
                    record = {"iter": it, "lr": lr, **parts, "sec_per_iter": (now - t_last) / loop.log_every}
                    t_last = now
                    if parts:
                        bar.set_postfix(loss=f"{parts['loss']:.3f}", lr=f"{lr:.2e}")
                    loop.log(record)
                if loop.after_step is not None:
                    loop.after_step(it)
                if it % loop.ckpt_every == 0 or it == loop.total or stop_signal:
                    loop.save(it)
                    last_saved = it
                if stop_signal:
                    signum = stop.signal or (signal.SIGTERM if stop_signal >= signal.SIGTERM else signal.SIGINT)
                    barrier()
                    raise SignalStopError(
                        f"stopped by signal {signum} at iteration {it}; checkpoint saved to {ckpt}, "
                        "rerun the same command to continue",
                        signum,
                    )
    except WorkerDiedError as exc:
        if consistent and info.world_size == 1:
            loop.save(it)
            raise UrnError(f"{exc}; checkpoint saved to {ckpt}, rerun the same command to continue") from None
        raise UrnError(
            f"{exc}; the last checkpoint ({ckpt}, iteration {last_saved}) is kept, rerun the same command to continue"
        ) from None
    finally:
        loop.close()
    bar.close()
    barrier()
    return ckpt


def training_loader(
    dataset: Any, batch_size: int, iters: int, start: int, seed: int, info: DistInfo, workers: int
) -> DataLoader:
    """The DataLoader every training uses: this rank's keyed batches (:class:`KeyBatchSampler`) of a
    dataset wrapped in :class:`TolerantDataset`, resumable at ``start``."""
    sampler = KeyBatchSampler(
        len(dataset),
        global_batch=batch_size,
        total_iters=iters,
        start_iter=start,
        seed=seed,
        rank=info.rank,
        world_size=info.world_size,
    )
    return DataLoader(
        TolerantDataset(dataset),
        batch_sampler=sampler,
        num_workers=workers,
        collate_fn=collate_tolerant,
        pin_memory=info.device.type == "cuda",
        # A private generator: the loader must not draw from the global RNG that dropout uses,
        # or a resumed run would diverge from an uninterrupted one.
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=False,
        # the workers leave SIGINT/SIGTERM to this process, which saves before it stops (urn.engine.stopping)
        worker_init_fn=worker_init,
    )
