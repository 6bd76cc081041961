"""``torchrun`` support through environment variables; a single process is world size 1.

Slurm is a launcher on top: ``srun`` sets the same variables (see ``docs/distributed.md``), so there
is no separate code path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

from urn.errors import UrnError

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the job."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(*names: str, default: int) -> int:
    for name in names:
        if os.environ.get(name):
            try:
                return int(os.environ[name])
            except ValueError:
                raise UrnError(f"environment variable {name}={os.environ[name]!r} must be an integer") from None
    return default


def launch_env(group: bool = False) -> tuple[int, int, int]:
    """``(rank, world, local_rank)`` from the torchrun or Slurm variables, checked to form a world.

    A world size above 1 without the rank variable of the same launcher (``WORLD_SIZE`` without ``RANK``,
    ``SLURM_NTASKS`` without ``SLURM_PROCID``: inside ``salloc`` or an ``sbatch`` script that forgot
    ``srun``) is refused: every process would think it is rank 0, and the job would wait forever for the
    others or do only its share. Within a Slurm step, the step's own task count (``SLURM_STEP_NUM_TASKS``)
    is the world. ``group``: a process group will be formed, which also needs ``MASTER_ADDR`` when the
    world comes from ``WORLD_SIZE`` (torchrun always sets it).

    Raises:
        UrnError: one line naming the variable that is missing or wrong.
    """
    env = os.environ
    hint = "start every rank with its launcher (torchrun / srun), or unset {var} to run one process"
    if env.get("WORLD_SIZE"):
        world = _env_int("WORLD_SIZE", default=1)
        rank = _env_int("RANK", default=-1)
        local = _env_int("LOCAL_RANK", default=0)
        needed = ("RANK", "MASTER_ADDR") if group else ("RANK",)
        var, source = "WORLD_SIZE", "torchrun"
    elif env.get("SLURM_NTASKS") or env.get("SLURM_STEP_NUM_TASKS"):
        world = _env_int("SLURM_STEP_NUM_TASKS", "SLURM_NTASKS", default=1)
        rank = _env_int("SLURM_PROCID", default=-1)
        local = _env_int("SLURM_LOCALID", default=0)
        needed = ("SLURM_PROCID",)
        var = "SLURM_STEP_NUM_TASKS" if env.get("SLURM_STEP_NUM_TASKS") else "SLURM_NTASKS"
        source = "srun"
    else:
        return 0, 1, 0
    if world < 1:
        raise UrnError(f"environment variable {var}={world} must be at least 1")
    if world == 1:
        return max(rank, 0), 1, local
    missing = [name for name in needed if not env.get(name)]
    if missing:
        raise UrnError(
            f"{var}={world} asks for {world} processes but {missing[0]} is not set, so this process was not"
            f" started by {source} and the other ranks will never come; " + hint.format(var=var)
        )
    if not 0 <= rank < world:
        rank_var = "RANK" if source == "torchrun" else "SLURM_PROCID"
        raise UrnError(f"environment variable {rank_var}={rank} is outside {var}={world}")
    return rank, world, local


def resolve_device(device: str | None, local_rank: int = 0) -> torch.device:
    """The device of ``--device`` (``cpu``, ``cuda``, ``cuda:N``; default: CUDA when available).

    Raises:
        UrnError: an unknown device, or CUDA asked for where torch sees no GPU (never a silent CPU run).
    """
    if device is None:
        use_cuda = torch.cuda.is_available()
    else:
        name, _, index = device.strip().partition(":")
        if name not in ("cpu", "cuda") or (index and (name == "cpu" or not index.isdigit())):
            raise UrnError(f"--device must be cpu, cuda or cuda:N, got {device!r}")
        use_cuda = name == "cuda"
        if use_cuda and not torch.cuda.is_available():
            raise UrnError(f"--device {device}: CUDA is not available here (torch sees no GPU); use --device cpu")
        if use_cuda and index and int(index) >= torch.cuda.device_count():
            raise UrnError(f"--device {device}: only {torch.cuda.device_count()} GPU(s) visible")
        if use_cuda and index:
            torch.cuda.set_device(int(index))
            return torch.device("cuda", int(index))
    if use_cuda:
        torch.cuda.set_device(local_rank % max(torch.cuda.device_count(), 1))
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def setup(device: str | None = None) -> DistInfo:
    """Initialise the process group when launched by ``torchrun``/``srun`` and pick the device.

    Uses nccl on CUDA and gloo on CPU. ``device`` forces ``"cpu"``/``"cuda"``; default: CUDA if
    available. Calling it twice is harmless. A world that cannot form (:func:`launch_env`) or a device
    that does not exist (:func:`resolve_device`) is one line, before anything is written.
    """
    rank, world, local_rank = launch_env(group=True)
    dev = resolve_device(device, local_rank)
    use_cuda = dev.type == "cuda"
    if world > 1 and not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29500")
        os.environ.setdefault("RANK", str(rank))
        os.environ.setdefault("WORLD_SIZE", str(world))
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(rank=rank, world_size=world, device=dev)


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def shard(items: list[T], info: DistInfo) -> list[T]:
    """This rank's share of ``items``: ``items[rank::world]`` (disjoint, union complete)."""
    return items[info.rank :: info.world_size]


def all_reduce_mean(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """``values`` averaged over ranks (a new tensor; in a single process, ``values`` itself)."""
    if not info.distributed:
        return values
    total = values.clone()
    dist.all_reduce(total)
    return total / info.world_size
