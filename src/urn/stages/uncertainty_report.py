"""``urn uncertainty-report``: does the uncertainty find the pseudo-mask noise?

Uses ground truth of the training split for evaluation only (nothing here feeds training). A pixel
of the cyclic mask is *wrong* when it differs from the ground truth (GT 255 pixels are left out).
Reports, accumulated as histograms over 1000 bins of the normalised uncertainty Ũ (so any dataset
size fits in memory and ranks merge by addition):

- AUROC and average precision of Ũ as a detector of wrong pixels;
- error rate per uncertainty decile (equal-width bins of Ũ: [0, 0.1), ..., [0.9, 1]);
- mIoU of the original pseudo-masks and of the cyclic masks;
- the fraction of wrong pixels that the hard weighting down-weights (w = 1 - Ũ <= ``seg2.weight_thresh``).

Writes ``OUT/uncertainty_report.json``, ``OUT/error_by_decile.png`` and ``OUT/most_uncertain.png``
(rows: image | pseudo-mask | uncertainty | cyclic mask | ground truth for the N most uncertain images).
Masks are read as training reads them (:func:`urn.data.layout.read_target`: raw ids on disk mapped to
contiguous indices), so COCO's category ids compare with the ground truth correctly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from urn.data.layout import read_target
from urn.errors import UrnError
from urn.io import IGNORE_INDEX, atomic_open, atomic_save_png, atomic_write_json, colorize, load_npy
from urn.metrics import ConfusionMatrix
from urn.progress import progress_bar

N_BINS = 1000


def auroc_from_histograms(pos: np.ndarray, neg: np.ndarray) -> float:
    """Area under the ROC curve from score histograms (ties inside a bin count half).

    Args:
        pos: ``(B,)`` counts of positives (wrong pixels) per score bin, low to high score.
        neg: ``(B,)`` counts of negatives per bin.
    """
    n_pos, n_neg = pos.sum(), neg.sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    neg_below = np.cumsum(neg) - neg  # negatives with a strictly lower score
    return float((pos * (neg_below + 0.5 * neg)).sum() / (n_pos * n_neg))


def average_precision_from_histograms(pos: np.ndarray, neg: np.ndarray) -> float:
    """Average precision (sklearn's step rule) with thresholds at the bins, high score first."""
    n_pos = pos.sum()
    if n_pos == 0:
        return float("nan")
    tp = np.cumsum(pos[::-1]).astype(np.float64)
    fp = np.cumsum(neg[::-1]).astype(np.float64)
    keep = (pos[::-1] + neg[::-1]) > 0
    tp, fp = tp[keep], fp[keep]
    precision = tp / (tp + fp)
    recall = tp / n_pos
    recall_prev = np.concatenate([[0.0], recall[:-1]])
    return float(((recall - recall_prev) * precision).sum())


def _bin(u: np.ndarray) -> np.ndarray:
    return np.clip((u * N_BINS).astype(np.int64), 0, N_BINS - 1)


def build_uncertainty_report(
    layout,
    split: str,
    uncertainty_dir: Path,
    out: Path,
    *,
    weight_thresh: float,
    pseudo_mask_dir: Path | None = None,
    grid_images: int = 6,
    quiet: bool = False,
) -> dict:
    """Score ``uncertainty_dir`` (``masks/`` + ``uncertainty/`` as ``urn uncertainty`` writes) against GT.

    ``weight_thresh`` is the hard weighting's threshold (``seg2.weight_thresh``): a pixel is muted where
    its weight ``1 - Ũ`` is at most it. Returns the report dict (also written to
    ``out/uncertainty_report.json``).
    """
    uncertainty_dir = Path(uncertainty_dir)
    ids = [i for i in layout.ids(split) if (uncertainty_dir / "masks" / f"{i}.png").is_file()]
    if not ids:
        raise UrnError(f"{uncertainty_dir}: no cyclic masks for split {split!r}")
    n = layout.classes.num_classes
    pos = np.zeros(N_BINS, np.int64)
    neg = np.zeros(N_BINS, np.int64)
    cm_cyclic, cm_original = ConfusionMatrix(n), ConfusionMatrix(n)
    hard_bin = int(round((1.0 - weight_thresh) * N_BINS))  # Ũ >= 1 - thresh <=> weight <= thresh: muted
    # (pixels, muted) of the cyclic masks' foreground and background: needs no ground truth, and tells
    # whether the uncertainty sits on noisy pixels or on whole objects of an under-confident Seg-1
    muted = {"foreground": [0, 0], "background": [0, 0]}
    mean_u: list[tuple[float, str]] = []
    bar = progress_bar(total=len(ids), desc="uncertainty report", unit="img", disable=quiet)
    for image_id in ids:
        gt = layout.read_gt(image_id)
        cyclic, _ = read_target(uncertainty_dir / "masks" / f"{image_id}.png", layout)  # raw ids -> indices
        u = load_npy(uncertainty_dir / "uncertainty" / f"{image_id}.npy").astype(np.float32)
        valid = gt != IGNORE_INDEX
        wrong = (cyclic != gt) & valid
        bins = _bin(u)
        for part, where in (("foreground", cyclic != 0), ("background", cyclic == 0)):
            muted[part][0] += int(where.sum())
            muted[part][1] += int((where & (bins >= hard_bin)).sum())
        pos += np.bincount(bins[wrong], minlength=N_BINS)
        neg += np.bincount(bins[valid & ~wrong], minlength=N_BINS)
        cm_cyclic.update_mask(gt, cyclic)
        if pseudo_mask_dir is not None:
            cm_original.update_mask(gt, read_target(Path(pseudo_mask_dir) / f"{image_id}.png", layout)[0])
        mean_u.append((float(u.mean()), image_id))
        bar.update(1)
    bar.close()

    edges = np.linspace(0, 1, 11)
    deciles = []
    for k in range(10):
        lo, hi = int(edges[k] * N_BINS), int(edges[k + 1] * N_BINS)
        p, q = int(pos[lo:hi].sum()), int(neg[lo:hi].sum())
        deciles.append(
            {
                "range": [round(edges[k], 1), round(edges[k + 1], 1)],
                "pixels": p + q,
                "error_rate": (p / (p + q)) if p + q else None,
            }
        )
    report = {
        "split": split,
        "images": len(ids),
        "wrong_pixel_rate": float(pos.sum() / max(pos.sum() + neg.sum(), 1)),
        "auroc": auroc_from_histograms(pos, neg),
        "average_precision": average_precision_from_histograms(pos, neg),
        "error_by_decile": deciles,
        "wrong_pixels_downweighted_by_hard": float(pos[hard_bin:].sum() / max(pos.sum(), 1)),
        "right_pixels_downweighted_by_hard": float(neg[hard_bin:].sum() / max(neg.sum(), 1)),
        "foreground_downweighted_by_hard": muted["foreground"][1] / max(muted["foreground"][0], 1),
        "background_downweighted_by_hard": muted["background"][1] / max(muted["background"][0], 1),
        "miou_cyclic": cm_cyclic.compute().miou * 100,
        "miou_pseudo_masks": cm_original.compute().miou * 100 if pseudo_mask_dir is not None else None,
    }
    out = Path(out)
    atomic_write_json(out / "uncertainty_report.json", report)
    _plot_deciles(deciles, out / "error_by_decile.png")
    worst = [i for _, i in sorted(mean_u, reverse=True)[:grid_images]]
    _save_grid(layout, worst, uncertainty_dir, pseudo_mask_dir, out / "most_uncertain.png")
    return report


def heatmap(u: np.ndarray) -> np.ndarray:
    """``(H, W)`` values in [0, 1] -> ``(H, W, 3)`` uint8 with matplotlib's inferno colour map."""
    from matplotlib import colormaps

    return (colormaps["inferno"](np.clip(u, 0, 1))[..., :3] * 255).astype(np.uint8)


def _save_grid(layout, ids: list[str], udir: Path, pmdir: Path | None, path: Path) -> None:
    from PIL import Image

    rows = []
    for image_id in ids:
        image = layout.read_image(image_id)
        h, w = image.shape[:2]
        pseudo = (
            colorize(read_target(Path(pmdir) / f"{image_id}.png", layout)[0])
            if pmdir is not None
            else np.zeros_like(image)
        )
        u = load_npy(udir / "uncertainty" / f"{image_id}.npy").astype(np.float32)
        cells = [
            image,
            pseudo,
            heatmap(u),
            colorize(read_target(udir / "masks" / f"{image_id}.png", layout)[0]),
            colorize(layout.read_gt(image_id)),
        ]
        sep = np.full((h, 4, 3), 255, np.uint8)
        row = np.concatenate([c for cell in cells for c in (cell, sep)][:-1], axis=1)
        rows.append(row)
    if not rows:
        return
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    atomic_save_png(path, Image.fromarray(np.concatenate(rows, axis=0)))


def _plot_deciles(deciles: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3), dpi=100)
    centers = [d["range"][0] + 0.05 for d in deciles]
    rates = [np.nan if d["error_rate"] is None else d["error_rate"] * 100 for d in deciles]
    ax.bar(centers, rates, width=0.09, color="#c0392b")
    ax.set_xlabel("normalised uncertainty")
    ax.set_ylabel("wrong pixels (%)")
    ax.set_title("Pseudo-mask error rate by uncertainty")
    ax.set_xlim(0, 1)
    fig.tight_layout()
    with atomic_open(path) as fh:
        fig.savefig(fh, format="png")
    plt.close(fig)
