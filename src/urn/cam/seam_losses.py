"""SEAM losses as PMM trains them (URN_ALGORITHM.md 1.2).

For a batch ``img1`` and its 0.3-rescaled copy ``img2`` (bilinear, align_corners=True), with
``label = [1 (background), y_1..y_{C-1}]``:

- classification: ``MultiLabelSoftMargin(GAP(cam_i)[fg], y)`` averaged over the two views, plus the
  adaptive min-pool term on ``cam_rv_i * label`` (smallest quarter of the per-pixel fg maxima);
- equivariance (ER): ``mean |cam1[fg] - cam2[fg]|`` of the max-normalised, label-masked CAMs, ``cam1``
  resized by 0.3;
- equivariant cross regularisation (ECR): background := 1 - max fg; ``|max_onehot(other view's cam,
  detached) - cam_rv|`` and the mean of its top 20% per sample, summed over both directions.

The reference's ``torch.clamp(loss, 0, 2)`` discards its result (Q2), so there is none here; a NaN
loss is the caller's business (urn stops instead of skipping the batch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from urn.cam.network import SEAMNet


def max_norm(p: Tensor, eps: float = 1e-5) -> Tensor:
    """Per-(sample, channel) min-max normalisation after ReLU: ``relu(p - min - eps) / (max - min + eps)``.

    Args:
        p: ``(N, C, H, W)`` maps.
    """
    p = F.relu(p)
    flat = p.flatten(2)
    hi = flat.max(dim=-1)[0][..., None, None]
    lo = flat.min(dim=-1)[0][..., None, None]
    return F.relu(p - lo - eps) / (hi - lo + eps)


def adaptive_min_pool_loss(x: Tensor) -> Tensor:
    """Mean of the ReLU'd smallest quarter of the per-pixel channel maxima.

    Args:
        x: ``(N, K, H, W)`` label-masked refined foreground CAMs.

    Returns:
        Scalar: ``sum(relu(bottom-k of max_c x)) / (k N)`` with ``k = H W // 4``.
    """
    n, _, h, w = x.shape
    k = max(1, h * w // 4)
    peak = x.max(dim=1)[0].view(n, -1)
    low = torch.topk(peak, k=k, dim=-1, largest=False)[0]
    return F.relu(low).sum() / (k * n)


def max_onehot(x: Tensor) -> Tensor:
    """Keep, per pixel, only the largest foreground channel's value (channel 0 untouched).

    Args:
        x: ``(N, C, H, W)``; a new tensor is returned (the reference edited its input in place).
    """
    fg = x[:, 1:]
    top = fg.max(dim=1, keepdim=True)[0]
    return torch.cat([x[:, :1], torch.where(fg != top, torch.zeros_like(fg), fg)], dim=1)


def seam_loss(model: SEAMNet, img1: Tensor, labels: Tensor, *, scale: float = 0.3) -> tuple[Tensor, dict[str, Tensor]]:
    """The full SEAM/PMM training loss of one batch.

    Args:
        model: a :class:`SEAMNet`, or a DDP wrapper of one (called as ``model(x, seam=True)``).
        img1: ``(N, 3, H, W)`` normalised crops.
        labels: ``(N, C - 1)`` multi-hot foreground labels (float).
        scale: size ratio of the second view.

    Returns:
        ``(loss, parts)`` with parts ``cls``, ``er``, ``ecr`` (detached scalars).
    """
    n, _, h, w = img1.shape
    label = torch.cat([labels.new_ones(n, 1), labels], dim=1)[:, :, None, None]  # (N, C, 1, 1)
    img2 = F.interpolate(img1, scale_factor=scale, mode="bilinear", align_corners=True)

    cam1, rv1 = _seam_full(model, img1)
    cam2, rv2 = _seam_full(model, img2)
    hs, ws = cam2.shape[2:]

    # 1. classification on the GAP of each view, plus the adaptive min-pool term on cam_rv
    logits1 = F.adaptive_avg_pool2d(cam1, 1).flatten(1)[:, 1:]
    logits2 = F.adaptive_avg_pool2d(cam2, 1).flatten(1)[:, 1:]
    loss_cls = (F.multilabel_soft_margin_loss(logits1, labels) + F.multilabel_soft_margin_loss(logits2, labels)) / 2
    loss_min = (adaptive_min_pool_loss((rv1 * label)[:, 1:]) + adaptive_min_pool_loss((rv2 * label)[:, 1:])) / 2

    # 2. equivariance: view-1 maps brought to view-2 size
    cam1n = _down(max_norm(cam1), (hs, ws)) * label
    rv1n = _down(max_norm(rv1), (hs, ws)) * label
    cam2n = max_norm(cam2) * label
    rv2n = max_norm(rv2) * label
    loss_er = torch.mean(torch.abs(cam1n[:, 1:] - cam2n[:, 1:]))

    # 3. ECR: each view's refined CAM against the other view's arg-max CAM, hardest 20% of entries
    cam1b = _with_bg(cam1n)
    cam2b = _with_bg(cam2n)
    k = max(1, int(cam2b.shape[1] * hs * ws * 0.2))
    ecr1 = torch.abs(max_onehot(cam2b.detach()) - rv1n).view(n, -1)
    ecr2 = torch.abs(max_onehot(cam1b.detach()) - rv2n).view(n, -1)
    loss_ecr = torch.topk(ecr1, k=k, dim=-1)[0].mean() + torch.topk(ecr2, k=k, dim=-1)[0].mean()

    cls_total = loss_cls + loss_min
    loss = cls_total + loss_er + loss_ecr
    parts = {"cls": cls_total.detach(), "er": loss_er.detach(), "ecr": loss_ecr.detach()}
    return loss, parts


def _seam_full(model: torch.nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """``cam`` and ``cam_rv`` resized to the input size (the reference computes every term there)."""
    cam, rv = model(x, seam=True)
    return _down(cam, x.shape[2:]), _down(rv, x.shape[2:])


def _down(x: Tensor, size: tuple[int, int]) -> Tensor:
    return F.interpolate(x, size, mode="bilinear", align_corners=True)


def _with_bg(x: Tensor) -> Tensor:
    return torch.cat([1.0 - x[:, 1:].max(dim=1, keepdim=True)[0], x[:, 1:]], dim=1)
