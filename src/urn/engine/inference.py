"""Test-time inference: whole-image or sliding-window, multi-scale + flip softmax averaging.

This mirrors mmsegmentation 0.x's ``aug_test`` as the reference runs it (spec section 3.1): each
view is the image rescaled by mmseg's keep-ratio rule to ``base_size * ratio``, run whole or in
``crop_size`` windows with ``stride`` (window logits averaged where they overlap), resized to the
original size, softmaxed, flipped back, and the probabilities of all views are averaged. Views of
one size run ``infer.batch_views`` per forward (by default :func:`auto_batch_views`).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from urn.config import InferConfig
from urn.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from urn.errors import UrnError

_MEAN = np.array(IMAGENET_MEAN, dtype=np.float32)
_STD = np.array(IMAGENET_STD, dtype=np.float32)


def rescale_size(height: int, width: int, base_size: tuple[int, int], ratio: float) -> tuple[int, int]:
    """mmcv's keep-ratio rescale: fit (long, short) = base_size * ratio. Returns (new_h, new_w)."""
    long_edge, short_edge = max(base_size) * ratio, min(base_size) * ratio
    factor = min(long_edge / max(height, width), short_edge / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def normalize_image(image: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 RGB -> ``(3, H, W)`` float32 normalised with ImageNet mean/std."""
    x = (image.astype(np.float32) - _MEAN) / _STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


#: ``infer.batch_views: null`` on a GPU: views of one size per forward.
GPU_BATCH_VIEWS = 4
#: ``infer.batch_views: null`` on CPU: views share a forward only while together they have at most this
#: many pixels. Measured on 2 cores (demo PSPNet, best of 4), one forward of a flip pair against two
#: single ones: 0.95, 0.96, 1.18, 1.25, 1.27, 1.17x the time at 19K, 43K, 76K, 120K, 172K, 307K pixels a
#: view; four 512x512 windows 40% slower together: larger batches' activations overflow the caches (and
#: one view at a time is what the reference does).
CPU_BATCH_PIXELS = 128 * 1024


def auto_batch_views(view_pixels: int, device: torch.device) -> int:
    """Views per forward when ``infer.batch_views`` is not set, for views of ``view_pixels`` pixels."""
    if device.type != "cpu":
        return GPU_BATCH_VIEWS
    return max(1, min(GPU_BATCH_VIEWS, CPU_BATCH_PIXELS // max(1, view_pixels)))


def slide_logits(
    model: torch.nn.Module, x: torch.Tensor, crop: int, stride: int, batch_views: int | None = None
) -> torch.Tensor:
    """Sliding-window logits, mmseg's grid: windows shifted back inside at the border.

    Every window has the same size, so windows of all ``B`` views are batched: at most
    ``batch_views`` (view, window) crops per forward (None: one forward per window, all views).

    Args:
        x: ``(B, 3, h, w)`` normalised images.

    Returns:
        ``(B, C, h, w)`` logits averaged over overlapping windows. An image no larger than one
        window is run whole, without padding, as in the reference.
    """
    n_views, _, h, w = x.shape
    n_h = max(h - crop + stride - 1, 0) // stride + 1
    n_w = max(w - crop + stride - 1, 0) // stride + 1
    windows = []
    for i in range(n_h):
        for j in range(n_w):
            y2, x2 = min(i * stride + crop, h), min(j * stride + crop, w)
            windows.append((max(y2 - crop, 0), y2, max(x2 - crop, 0), x2))
    # (window, view) pairs, window-major: each view's windows are summed in grid order whatever the batch
    pairs = [(win, b) for win in windows for b in range(n_views)]
    step = n_views if batch_views is None else batch_views
    out: torch.Tensor | None = None
    count = torch.zeros((1, 1, h, w), device=x.device, dtype=torch.float32)
    for y1, y2, x1, x2 in windows:
        count[:, :, y1:y2, x1:x2] += 1
    for start in range(0, len(pairs), step):
        chunk = pairs[start : start + step]
        crops = torch.stack([x[b, :, y1:y2, x1:x2] for (y1, y2, x1, x2), b in chunk])
        logits = model(crops)["out"].float()
        if out is None:
            out = torch.zeros((n_views, logits.shape[1], h, w), device=x.device, dtype=torch.float32)
        for ((y1, y2, x1, x2), b), window_logits in zip(chunk, logits, strict=True):
            out[b, :, y1:y2, x1:x2] += window_logits
    assert out is not None
    return out / count


@torch.no_grad()
def predict_probs(
    model: torch.nn.Module,
    image: np.ndarray,
    cfg: InferConfig,
    device: torch.device,
    *,
    amp: bool = False,
) -> np.ndarray:
    """Average softmax probabilities over the configured scales (and flips).

    Views of one size (a scale and its flip; in slide mode every window of both) go through the
    model ``cfg.batch_views`` at a time (unset: :func:`auto_batch_views`); the result does not depend
    on it beyond float rounding.

    Args:
        model: a segmentor in eval mode returning ``{"out": (B, C, h, w)}`` at input size.
        image: ``(H, W, 3)`` uint8 RGB.
        cfg: scales (ratios of ``base_size``), flip, whole/slide mode, ``batch_views``.

    Returns:
        ``(C, H, W)`` float32 probabilities, summing to 1 over C.

    Raises:
        UrnError: ``infer.batch_views`` is below 1.
    """
    if cfg.batch_views is not None and cfg.batch_views < 1:
        raise UrnError(f"infer.batch_views must be at least 1, got {cfg.batch_views}")
    height, width = image.shape[:2]
    total: torch.Tensor | None = None
    n_views = 0
    for ratio in cfg.scales:
        nh, nw = rescale_size(height, width, cfg.base_size, ratio)
        scaled = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
        x = normalize_image(scaled).unsqueeze(0)
        if cfg.flip:
            # Both orientations of one scale have the same size: batched together.
            x = torch.cat([x, x.flip(-1)], dim=0)
        x = x.to(device)
        with torch.autocast(device_type=device.type, enabled=amp and device.type == "cuda"):
            view_pixels = min(nh, cfg.crop_size) * min(nw, cfg.crop_size) if cfg.mode == "slide" else nh * nw
            per_forward = cfg.batch_views if cfg.batch_views is not None else auto_batch_views(view_pixels, device)
            # whole mode: one window the size of the view
            crop, stride = (cfg.crop_size, cfg.stride) if cfg.mode == "slide" else (max(nh, nw), 1)
            logits = slide_logits(model, x, crop, stride, per_forward)
        logits = F.interpolate(logits.float(), size=(height, width), mode="bilinear", align_corners=False)
        probs = logits.softmax(dim=1)
        if cfg.flip:
            probs = torch.stack([probs[0], probs[1].flip(-1)])
        view_sum = probs.sum(0)
        total = view_sum if total is None else total + view_sum
        n_views += probs.shape[0]
    assert total is not None
    return (total / n_views).cpu().numpy().astype(np.float32)
