"""Training throughput: urn's DeepLabV3+ against segmentation_models_pytorch's, same encoder (CPU or CUDA).

One iteration = draw a batch from an in-memory synthetic dataset through urn's training transforms
(rescale, crop, flip, photometric, normalise, pad), forward, loss, backward, SGD step. Both models
use the same timm encoder at output stride 8, the same batch, crop and data. Runs are interleaved
(the order alternates every round) and the median over rounds is reported, which damps the noise of
a shared machine. urn's PSPNet (with its auxiliary head, as trained in the reference) is timed
alongside for scale.

Usage::

    python benchmarks/train_throughput.py --iters 1 --rounds 16 --batch 2 --crop 256 --encoder resnet18

Prints each model's iterations/s and the ratio urn / smp (goal: >= 1.0). On a shared machine,
``--threads 1`` gives the steadiest numbers (no thread-pool stalls when another process competes).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from urn.config import BackboneConfig, DataConfig, ModelConfig
from urn.data.transforms import train_transforms
from urn.losses import SegmentationLoss
from urn.models import build_segmentor

NUM_CLASSES = 21


class SyntheticSegmentation(Dataset):
    """Random blocky images and masks held in memory, served through urn's training transforms."""

    def __init__(self, n: int, crop: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        h, w = int(crop * 1.25), int(crop * 1.5)
        self.images = rng.integers(0, 256, (n, h // 8, w // 8, 3), dtype=np.uint8).repeat(8, 1).repeat(8, 2)
        self.targets = rng.integers(0, NUM_CLASSES, (n, h // 8, w // 8), dtype=np.uint8).repeat(8, 1).repeat(8, 2)
        # base_size scales with the crop, so the rescale range stays as in training (0.5x-2x of a crop-sized side).
        self.transform = train_transforms(DataConfig(crop_size=crop, base_size=(4 * crop, crop)))
        self.seed, self.draws = seed, 0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        self.draws += 1  # a fresh augmentation per draw, reproducible run to run (num_workers=0)
        rng = np.random.default_rng((self.seed, i, self.draws))
        s = self.transform({"image": self.images[i], "target": self.targets[i]}, rng)
        image = torch.from_numpy(np.ascontiguousarray(s["image"].transpose(2, 0, 1)))
        return image, torch.from_numpy(s["target"].astype(np.int64))


def forever(loader: DataLoader) -> Iterator[tuple[Tensor, Tensor]]:
    while True:
        yield from loader


class Runner:
    """One model with its loss and optimiser; :meth:`run` times ``n`` training iterations."""

    def __init__(
        self,
        name: str,
        model: nn.Module,
        loss_fn: Callable[[Any, Tensor], Tensor],
        batches: Iterator,
        cl: bool,
        device: torch.device = torch.device("cpu"),  # noqa: B008 - an immutable default
        amp: bool = False,
    ) -> None:
        self.name, self.loss_fn, self.batches, self.cl = name, loss_fn, batches, cl
        self.device, self.amp = device, amp and device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        model = model.to(device)
        self.model = model.train().to(memory_format=torch.channels_last) if cl else model.train()
        self.opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        self.rates: list[float] = []
        self.cpu_rates: list[float] = []  # per CPU second of this process: less sensitive to other load

    def step(self) -> None:
        image, target = next(self.batches)
        image, target = image.to(self.device, non_blocking=True), target.to(self.device, non_blocking=True)
        if self.cl:
            image = image.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, enabled=self.amp):
            loss = self.loss_fn(self.model(image), target)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()

    def run(self, n: int) -> float:
        t, c = time.perf_counter(), time.process_time()
        for _ in range(n):
            self.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        rate = n / (time.perf_counter() - t)
        self.rates.append(rate)
        self.cpu_rates.append(n / (time.process_time() - c))
        return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iters", type=int, default=2, help="timed iterations per model per round")
    ap.add_argument("--rounds", type=int, default=8, help="interleaved rounds (median reported)")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--encoder", default="resnet18", help="timm encoder name (smp gets tu-<name>)")
    ap.add_argument("--channels-last", action="store_true", help="channels_last for both models")
    ap.add_argument("--no-psp", action="store_true", help="skip urn's PSPNet")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--amp", action="store_true", help="mixed precision (CUDA only), as urn trains there")
    args = ap.parse_args()
    device = torch.device(args.device)

    import segmentation_models_pytorch as smp

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = SyntheticSegmentation(n=4 * args.batch, crop=args.crop)

    def batches() -> Iterator:
        return forever(DataLoader(data, batch_size=args.batch, shuffle=True, drop_last=True, num_workers=0))

    backbone = BackboneConfig(name=args.encoder)
    ours_dl = build_segmentor(
        ModelConfig(backbone=backbone, head="deeplabv3plus", head_channels=256, aux_head=False), NUM_CLASSES
    )
    theirs = smp.DeepLabV3Plus(
        encoder_name=f"tu-{args.encoder}", encoder_weights=None, encoder_output_stride=8, classes=NUM_CLASSES
    )
    criterion = SegmentationLoss()  # what urn trains with: CE with ignore 255, main + aux
    runners = [
        Runner(
            "urn DeepLabV3+",
            ours_dl,
            lambda out, t: criterion(out, t)[0],
            batches(),
            args.channels_last,
            device,
            args.amp,
        ),
        Runner(
            "smp DeepLabV3Plus",
            theirs,
            lambda out, t: F.cross_entropy(out, t, ignore_index=255),
            batches(),
            args.channels_last,
            device,
            args.amp,
        ),
    ]
    if not args.no_psp:
        ours_psp = build_segmentor(ModelConfig(backbone=backbone), NUM_CLASSES)
        runners.append(
            Runner(
                "urn PSPNet (+aux)",
                ours_psp,
                lambda out, t: criterion(out, t)[0],
                batches(),
                args.channels_last,
                device,
                args.amp,
            )
        )

    print(
        f"encoder={args.encoder} batch={args.batch} crop={args.crop} iters={args.iters} rounds={args.rounds} "
        f"threads={torch.get_num_threads()} channels_last={args.channels_last} device={device} amp={args.amp}"
    )
    for r in runners:  # warm-up: first-call allocations and oneDNN kernel selection
        r.run(2)
        r.rates.clear()
        r.cpu_rates.clear()
    for rnd in range(args.rounds):
        order = runners if rnd % 2 == 0 else runners[::-1]
        line = []
        for r in order:
            line.append(f"{r.name}: {r.run(args.iters):.3f} it/s")
        print(f"round {rnd + 1}: " + ", ".join(line), flush=True)
    med = {r.name: statistics.median(r.rates) for r in runners}
    cpu = {r.name: statistics.median(r.cpu_rates) for r in runners}
    for name in med:
        print(f"{name:20s} {med[name]:.3f} it/s (median wall clock), {cpu[name]:.3f} it per CPU-second")
    ours, theirs_ = runners[0], runners[1]
    # Back-to-back runs share the machine's load: the median of per-round ratios is the steadiest number.
    paired = statistics.median(a / b for a, b in zip(ours.rates, theirs_.rates, strict=True))
    print(
        f"ratio urn/smp DeepLabV3+: {med[ours.name] / med[theirs_.name]:.3f} (medians, wall), "
        f"{cpu[ours.name] / cpu[theirs_.name]:.3f} (CPU time), {paired:.3f} (median of per-round ratios)"
    )


if __name__ == "__main__":
    main()
