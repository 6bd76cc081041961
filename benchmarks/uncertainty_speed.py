"""The whole uncertainty step per image: the reference-style loop vs urn, in one process.

(a) reference: the views (the demo preset's 4 ratios x flip) run one forward pass at a time, then
    1 + 6K dense-CRF calls through pydensecrf2, one after another (what XMed-Lab/URN's ``aug_test`` does);
(b) urn: ``predict_probs`` (views of one size share a forward as ``infer.batch_views`` says; unset, on
    CPU only small ones do), then all CRF problems of the image on one lattice (``crf.backend=batched``).

Images: demo images drawn at 480x320 with probability maps made from their ground truth (blurred,
noisy, so 2-4 classes are present and the CRF has real work), and synthetic probability maps with 2,
3 and 5 classes present. The network part uses the demo preset's PSPNet (random weights unless
``--checkpoint``); its time is reported separately because it does not depend on the CRF.

Prints per image: time of each path (forward / CRF), their ratio, the cyclic-mask agreement and the
fraction of pixels whose weight byte differs by at most 1; ends with
``speedup=X.X agreement=Y.YY% weights_within=Z.ZZ% threads=U/1`` (CRF part, all images; agreement = worst
image; urn's torch threads against pydensecrf's one: ``--threads 1`` compares on the same threads).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from crf_speed import compare, make_case, print_products_bound, run_response_scaling, threads_label  # noqa: E402

from urn.config import load_config  # noqa: E402
from urn.engine.inference import normalize_image, predict_probs, rescale_size  # noqa: E402


def probs_from_gt(gt: np.ndarray, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """A plausible prediction: one-hot GT, blurred, with smooth noise, softmaxed. ``(C, H, W)``."""
    gt = np.where(gt == 255, 0, gt)
    logits = np.zeros((num_classes, *gt.shape), np.float32)
    for c in np.unique(gt):
        logits[c] = cv2.GaussianBlur((gt == c).astype(np.float32), (0, 0), 6) * 6
    noise = cv2.GaussianBlur(rng.normal(0, 1, (*gt.shape, num_classes)).astype(np.float32), (0, 0), 10)
    logits += 3 * noise.transpose(2, 0, 1)
    e = np.exp(logits - logits.max(0))
    return e / e.sum(0)


@torch.no_grad()
def reference_forward(model, image: np.ndarray, cfg) -> np.ndarray:
    """Every view one at a time, as the reference's aug_test loop does."""
    h, w = image.shape[:2]
    total = None
    for ratio in cfg.scales:
        nh, nw = rescale_size(h, w, cfg.base_size, ratio)
        x = normalize_image(cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR))[None]
        for flip in (False, True):
            v = x.flip(-1) if flip else x
            p = torch.nn.functional.interpolate(model(v)["out"], (h, w), mode="bilinear").softmax(1)[0]
            p = p.flip(-1) if flip else p
            total = p if total is None else total + p
    return (total / (2 * len(cfg.scales))).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=2, help="demo images")
    ap.add_argument("--present", type=int, nargs="+", default=[2, 3, 5], help="synthetic cases (classes present)")
    ap.add_argument("--checkpoint", default=None, help="a demo Seg-1 checkpoint (default: random weights)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    ap.add_argument("--device", default="cpu", help="device of urn's path: cpu or cuda (the reference stays on CPU)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from urn.data.demo import make_demo
    from urn.models import build_segmentor

    device = torch.device(args.device)
    cfg = load_config("demo", ["model.backbone.weights=null", "infer.base_size=[480, 320]"])
    rng = np.random.default_rng(0)
    cases: list[tuple[str, np.ndarray, np.ndarray]] = []
    with tempfile.TemporaryDirectory() as tmp:
        layout = make_demo(Path(tmp) / "demo", n_train=args.images, n_val=1, seed=1, size=(480, 320))
        model = build_segmentor(cfg.model, layout.classes.num_classes).eval()
        if args.checkpoint:
            from urn.engine.checkpoint import load_model_weights

            load_model_weights(model, args.checkpoint)
        n_views = len(cfg.infer.scales) * (2 if cfg.infer.flip else 1)
        print(f"network forward passes ({n_views} views, demo PSPNet, urn with infer.batch_views unset):")
        # One untimed pass of each path first: the first forward pays one-off set-up (allocator, kernels).
        warm = layout.read_image(layout.ids("train")[0])
        reference_forward(model, warm, cfg.infer)
        predict_probs(model.to(device), warm, cfg.infer, device)
        model.cpu()
        for image_id in layout.ids("train"):
            image = layout.read_image(image_id)
            t0 = time.perf_counter()
            reference_forward(model, image, cfg.infer)
            t1 = time.perf_counter()
            predict_probs(model.to(device), image, cfg.infer, device)
            if device.type == "cuda":
                torch.cuda.synchronize()
            t2 = time.perf_counter()
            model.cpu()
            print(f"  {image_id}: reference {t1 - t0:.2f}s  urn {t2 - t1:.2f}s  ratio {(t1 - t0) / (t2 - t1):.2f}x")
            gt = layout.read_gt(image_id)
            cases.append((f"demo {image_id}", image, probs_from_gt(gt, layout.classes.num_classes, rng)))
    for k in args.present:
        image, probs = make_case(k, seed=k)
        cases.append((f"synthetic K={k}", image, probs))

    print("dense CRF, base + response scaling (per image):")
    total_ref = total_new = total_products = 0.0
    worst_agree, worst_within = 1.0, 1.0
    for name, image, probs in cases:
        ref = run_response_scaling(image, probs, "pydensecrf")
        new = run_response_scaling(image, probs, "batched", device=device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t_ref, t_new = sum(ref.times.values()), sum(new.times.values())
        total_ref += t_ref
        total_new += t_new
        total_products += new.products
        stats = compare(ref, new)
        agree = float((ref.mask == new.mask).mean())
        within = float((np.abs(ref.weights.astype(int) - new.weights.astype(int)) <= 1).mean())
        worst_agree, worst_within = min(worst_agree, agree), min(worst_within, within)
        print(
            f"  {name:18s} K={len(ref.present)}: reference {t_ref:.2f}s  batched {t_new:.2f}s  "
            f"ratio {t_ref / t_new:.1f}x  (products {new.products:.2f}s)  agreement {agree:.4%}  "
            f"weights within 1/255 {within:.4%}  "
            f"(worst problem {stats['worst']:.4%})"
        )
    print_products_bound(total_ref, total_new, total_products)
    agreement, within = worst_agree * 100, worst_within * 100
    print(
        f"speedup={total_ref / total_new:.1f} agreement={agreement:.2f}% weights_within={within:.2f}% "
        f"threads={threads_label(args.device)}"
    )


if __name__ == "__main__":
    main()
