"""Deterministic, resumable sampling for iteration-based training.

The training stream is a sequence of *keys*: epoch ``e`` contributes ``e * N + perm_e[i]`` for a
permutation ``perm_e`` seeded by ``(seed, e)``. A dataset maps a key to sample ``key % N`` and seeds
its augmentation with the key, so the whole stream (order and augmentation) is a pure function of
the seed. Iteration ``t`` consumes stream positions ``[t * B, (t + 1) * B)`` of the global batch
``B``; rank ``r`` of ``W`` takes every ``W``-th of them. Resuming at iteration ``t`` therefore
reproduces exactly the batches an uninterrupted run would have seen, on any number of workers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from urn.errors import DataError


class KeyBatchSampler(Sampler[list[int]]):
    """Yields this rank's keys for iterations ``start_iter .. total_iters - 1``.

    Args:
        num_samples: dataset length N.
        global_batch: batch size summed over ranks; must be divisible by ``world_size``.
    """

    def __init__(
        self,
        num_samples: int,
        *,
        global_batch: int,
        total_iters: int,
        start_iter: int = 0,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if num_samples <= 0:
            raise ValueError("cannot sample from an empty dataset")
        if global_batch % world_size:
            raise ValueError(f"batch size {global_batch} is not divisible by {world_size} processes")
        self.n = num_samples
        self.batch = global_batch
        self.total = total_iters
        self.start = start_iter
        self.seed = seed
        self.rank = rank
        self.world = world_size
        self._perms: dict[int, np.ndarray] = {}

    def _key(self, position: int) -> int:
        epoch, i = divmod(position, self.n)
        if epoch not in self._perms:  # only the current epoch's permutation is kept
            self._perms = {epoch: np.random.default_rng((self.seed, epoch)).permutation(self.n)}
        return epoch * self.n + int(self._perms[epoch][i])

    def __iter__(self) -> Iterator[list[int]]:
        for it in range(self.start, self.total):
            first = it * self.batch
            yield [self._key(first + j) for j in range(self.rank, self.batch, self.world)]

    def __len__(self) -> int:
        return max(self.total - self.start, 0)


class TolerantDataset(Dataset):
    """Wraps a dataset so a bad sample is reported instead of killing a worker.

    A sample that raises :class:`DataError` is replaced by the next index (so the batch keeps its
    size: PSP's 1x1 pooling bin cannot normalise a batch of one), and its message travels with the
    batch in ``"errors"``; the training loop decides whether that is allowed
    (``data.skip_bad_samples``). Exceptions other than :class:`DataError` are bugs and propagate.
    """

    MAX_SUBSTITUTES = 16

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: int) -> dict[str, Any]:
        errors: list[str] = []
        for offset in range(self.MAX_SUBSTITUTES):
            try:
                sample = self.dataset[key + offset]
            except DataError as exc:
                errors.append(str(exc))
                continue
            return {**sample, "errors": errors}
        return {"errors": errors}


def collate_tolerant(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the samples' tensors (``image``, ``target``, ``weight``, ...) and list their ``id``; the messages
    of bad ones (replaced or dropped) are in ``batch["errors"]``."""
    good = [s for s in samples if "image" in s]
    batch: dict[str, Any] = {"errors": [e for s in samples for e in s["errors"]]}
    if good:
        for key, value in good[0].items():
            if isinstance(value, torch.Tensor):
                batch[key] = torch.stack([s[key] for s in good])
        batch["id"] = [s["id"] for s in good]
    return batch
