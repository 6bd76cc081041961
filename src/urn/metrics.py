"""Confusion-matrix metrics: per-class IoU, mIoU (nanmean, as the reference) and pixel accuracy.

One :class:`ConfusionMatrix` scores CAMs, pseudo-masks and segmentation predictions alike. Counts are
int64 so that a whole dataset at full resolution cannot overflow, and two matrices (for example from
two ranks) merge by addition.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from urn.io import IGNORE_INDEX


@dataclass
class Scores:
    """Scores derived from a confusion matrix. IoUs are fractions in [0, 1]; NaN = class absent."""

    iou: np.ndarray  # (C,) float64, NaN where union is 0
    miou: float  # nanmean of iou
    pixel_acc: float
    class_acc: np.ndarray  # (C,) recall per class, NaN where the class has no ground truth

    def as_dict(self, class_names: list[str] | None = None) -> dict[str, object]:
        names = class_names or [str(i) for i in range(len(self.iou))]
        return {
            "miou": _pct(self.miou),
            "pixel_acc": _pct(self.pixel_acc),
            "iou": {n: _pct(v) for n, v in zip(names, self.iou, strict=True)},
        }


def _pct(v: float) -> float | None:
    return None if np.isnan(v) else round(float(v) * 100.0, 4)


class ConfusionMatrix:
    """Accumulates ``mat[gt, pred]`` pixel counts over a dataset.

    Args:
        num_classes: number of label slots C; ground-truth 255 is ignored, as are predictions
            or ground truth outside ``0..C-1`` (a prediction out of range is an error, see ``update``).
    """

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.mat = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, gt: np.ndarray, pred: np.ndarray) -> None:
        """Add one image (or batch). ``gt`` and ``pred`` have the same shape, integer labels."""
        gt = np.asarray(gt).reshape(-1).astype(np.int64)
        pred = np.asarray(pred).reshape(-1).astype(np.int64)
        if gt.shape != pred.shape:
            raise ValueError(f"shape mismatch: gt {gt.shape} vs pred {pred.shape}")
        keep = (gt != IGNORE_INDEX) & (gt >= 0) & (gt < self.num_classes)
        gt, pred = gt[keep], pred[keep]
        if pred.size and (pred.min() < 0 or pred.max() >= self.num_classes):
            raise ValueError(f"prediction values outside 0..{self.num_classes - 1}")
        n = self.num_classes
        self.mat += np.bincount(gt * n + pred, minlength=n * n).reshape(n, n)

    def update_mask(self, gt: np.ndarray, mask: np.ndarray) -> None:
        """Add a pseudo-mask (or any mask that may leave pixels out): its unsure pixels (255) count as
        background (IRN's convention), so leaving pixels out can never raise the score. Every scorer of
        masks (``urn score-masks``, the uncertainty report) uses this one rule."""
        mask = np.asarray(mask)
        self.update(gt, np.where(mask == IGNORE_INDEX, 0, mask))

    def all_reduce(self) -> ConfusionMatrix:
        """Sum the matrix over all ranks of an initialised ``torch.distributed`` group (no-op otherwise)."""
        import torch
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            t = torch.from_numpy(self.mat.copy())
            if dist.get_backend() == "nccl":
                t = t.cuda()
            dist.all_reduce(t)
            self.mat = t.cpu().numpy().astype(np.int64)
        return self

    def compute(self) -> Scores:
        """IoU_c = TP / (TP + FP + FN), NaN when the union is empty; mIoU = nanmean over slots."""
        mat = self.mat.astype(np.float64)
        tp = np.diag(mat)
        gt_total = mat.sum(1)
        pred_total = mat.sum(0)
        union = gt_total + pred_total - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, tp / union, np.nan)
            class_acc = np.where(gt_total > 0, tp / gt_total, np.nan)
        total = mat.sum()
        miou = float(np.nanmean(iou)) if np.any(~np.isnan(iou)) else float("nan")
        pixel_acc = float(tp.sum() / total) if total > 0 else float("nan")
        return Scores(iou=iou, miou=miou, pixel_acc=pixel_acc, class_acc=class_acc)

    def table(self, class_names: list[str] | None = None) -> str:
        """A per-class table ending with the line ``mIoU=XX.XX``."""
        return format_scores(self.compute(), class_names)


def format_scores(s: Scores, class_names: list[str] | None = None) -> str:
    """Per-class IoU/accuracy table (classes absent from gt and prediction omitted), ending ``mIoU=XX.XX``."""
    names = class_names or [str(i) for i in range(len(s.iou))]
    width = max(12, max(len(n) for n in names) + 2)
    lines = [f"{'class':<{width}}{'IoU':>8}{'acc':>8}"]
    for name, iou, acc in zip(names, s.iou, s.class_acc, strict=True):
        if np.isnan(iou):
            continue  # absent from both gt and prediction: not part of the mean
        acc_text = "-" if np.isnan(acc) else f"{acc * 100:.2f}"
        lines.append(f"{name:<{width}}{iou * 100:>8.2f}{acc_text:>8}")
    lines.append(f"pixel_acc={s.pixel_acc * 100:.2f}")
    lines.append(f"mIoU={s.miou * 100:.2f}")
    return "\n".join(lines)
