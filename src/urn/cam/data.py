"""Classifier training samples and the multi-crop tiling.

Two sampling modes (URN_ALGORITHM.md 1.3):

- resize-crop (the WRN-38 multi-scale stage): random long side in ``resize_long`` (bicubic), flip,
  colour jitter, normalise, random ``crop_size`` crop with zero fill;
- heat-guided multi-crop (``cam.heat_dir`` set; the ScaleNet stage on VOC): a random tile of the
  multi-crop tiling at a random scale whose heat map gives it a non-empty label, flip, jitter,
  resize to ``crop_size``; the label is the tile's, not the image's.

Every random draw of a sample comes from a generator seeded by ``(seed, epoch, index)``, and the
batches are a pure function of the iteration (:class:`urn.engine.sampling.KeyBatchSampler`, shared by
every training), so a resumed run sees exactly the batches an uninterrupted one would, whatever the
number of loader workers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageEnhance
from torch.utils.data import Dataset

from urn import io
from urn.config import CAMConfig
from urn.data.layout import DatasetLayout
from urn.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from urn.errors import DataError

# PMM normalises on the 0..1 scale (x / 255 - mean) / std; the constants are urn's one ImageNet mean/std
# (urn.data.transforms) divided by 255, which gives exactly PMM's (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225)
# in float32.
_MEAN_01 = (np.array(IMAGENET_MEAN, dtype=np.float64) / 255.0).astype(np.float32)
_STD_01 = (np.array(IMAGENET_STD, dtype=np.float64) / 255.0).astype(np.float32)
HEAT_FG = 0.9  # a heat-map pixel belongs to class k when its CRF probability exceeds this
HEAT_MATCH = 0.1  # tile label: overlap / class area or overlap / tile area above this

Box = tuple[int, int, int, int]  # x1, y1, x2, y2 in original-image pixels


def normalize(image: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 RGB -> ``(3, H, W)`` float32, ImageNet mean/std."""
    x = (image.astype(np.float32) / 255.0 - _MEAN_01) / _STD_01
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


def multi_crop_boxes(
    width: int, height: int, scales: Sequence[float], crop: int = 448, stride: int = 300
) -> list[list[Box]]:
    """The reference multi-crop tiling (URN_ALGORITHM.md 1.4b, quirk Q3), per scale.

    At scale ``s`` the image is ``(w, h) = (int(W s), int(H s))`` and each side has
    ``1 + ceil(max(0, side - crop) / stride)`` tiles: non-final tiles span ``[i stride,
    min(side, (i + 1) stride)]`` (a *stride*-wide window), the last ``[max(0, side - crop), side]``.
    Coordinates are divided by ``s`` and truncated. Order: columns outer, rows inner.

    Returns:
        One list of boxes per scale, in original-image coordinates.
    """
    out: list[list[Box]] = []
    for s in scales:
        w, h = int(width * s), int(height * s)
        nw = 1 + math.ceil(max(0, w - crop) / stride)
        nh = 1 + math.ceil(max(0, h - crop) / stride)
        boxes = []
        for i in range(nw):
            x1, x2 = _span(i, nw, w, crop, stride)
            for j in range(nh):
                y1, y2 = _span(j, nh, h, crop, stride)
                boxes.append((int(x1 / s), int(y1 / s), int(x2 / s), int(y2 / s)))
        out.append(boxes)
    return out


def _span(i: int, n: int, side: int, crop: int, stride: int) -> tuple[int, int]:
    if i == n - 1:
        return max(0, side - crop), side
    return i * stride, min(side, (i + 1) * stride)


def color_jitter(img: Image.Image, rng: np.random.Generator, strength: Sequence[float]) -> Image.Image:
    """torchvision-style ColorJitter (brightness, contrast, saturation, hue; random order) drawn from ``rng``."""
    b, c, s, hue = strength
    ops = []
    for amount, enhancer in ((b, ImageEnhance.Brightness), (c, ImageEnhance.Contrast), (s, ImageEnhance.Color)):
        if amount > 0:
            f = rng.uniform(max(0.0, 1 - amount), 1 + amount)
            ops.append(lambda im, f=f, enhancer=enhancer: enhancer(im).enhance(f))
    if hue > 0:
        f = rng.uniform(-hue, hue)
        ops.append(lambda im, f=f: _shift_hue(im, f))
    for k in rng.permutation(len(ops)):
        img = ops[k](img)
    return img


def _shift_hue(img: Image.Image, factor: float) -> Image.Image:
    h, s, v = img.convert("HSV").split()
    shifted = (np.asarray(h).astype(np.int16) + int(round(factor * 255))) % 256  # hue wraps around
    return Image.merge("HSV", (Image.fromarray(shifted.astype(np.uint8), "L"), s, v)).convert("RGB")


def random_crop(x: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """PMM's ``RandomCrop``: a ``size`` x ``size`` window, zero-filled where the image is smaller."""
    h, w = x.shape[:2]
    out = np.zeros((size, size, x.shape[2]), dtype=x.dtype)
    ch, cw = min(size, h), min(size, w)
    img_top, cont_top = (int(rng.integers(h - size + 1)), 0) if h > size else (0, int(rng.integers(size - h + 1)))
    img_left, cont_left = (int(rng.integers(w - size + 1)), 0) if w > size else (0, int(rng.integers(size - w + 1)))
    out[cont_top : cont_top + ch, cont_left : cont_left + cw] = x[img_top : img_top + ch, img_left : img_left + cw]
    return out


def load_heat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A heat-map file: ``classes`` (K,) contiguous indices and ``probs`` (K + 1, H, W), 0 = background."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return z["classes"].astype(np.int64), z["probs"]
    except io.NPZ_ERRORS as exc:
        raise DataError(path, f"unreadable heat map ({str(exc)[:120] or type(exc).__name__})") from None


def tile_label(classes: np.ndarray, probs: np.ndarray, box: Box, num_fg: int) -> np.ndarray:
    """Foreground multi-hot label of a tile from the heat map (URN_ALGORITHM.md 1.3).

    Class k is in the tile when ``|M_k ∩ tile| / |M_k| > 0.1`` or ``|M_k ∩ tile| / |tile| > 0.1``,
    ``M_k = {heat_k > 0.9}``.
    """
    x1, y1, x2, y2 = box
    label = np.zeros(num_fg, np.float32)
    area = max(1, (min(y2, probs.shape[1]) - y1) * (min(x2, probs.shape[2]) - x1))
    for i, k in enumerate(classes):
        m = probs[i + 1] > HEAT_FG
        total = int(m.sum())
        if total == 0:
            continue
        inter = float(m[y1:y2, x1:x2].sum())
        if inter / total > HEAT_MATCH or inter / area > HEAT_MATCH:
            label[k - 1] = 1.0
    return label


class CAMTrainDataset(Dataset):
    """Training samples for the classifier, indexed by stream key (:class:`urn.engine.sampling.KeyBatchSampler`).

    Key ``e * N + i`` is image ``i`` in epoch ``e``; its random draws come from a generator seeded by
    ``(seed, e, i)``, so a sample is a pure function of the run seed and its key.

    Args:
        layout: the dataset (only images and image-level labels are read, never ground truth).
        ids: image ids of the training split.
        labels: foreground classes per id (contiguous 1..C-1).
        cfg: the ``cam`` section (crop size, resize range, jitter, heat maps).
        seed: the run seed (``cam.seed``).
    """

    def __init__(
        self,
        layout: DatasetLayout,
        ids: list[str],
        labels: dict[str, tuple[int, ...]],
        cfg: CAMConfig,
        seed: int = 0,
    ) -> None:
        self.layout, self.ids, self.cfg, self.seed = layout, ids, cfg, seed
        self.num_fg = layout.classes.num_classes - 1
        self.targets = np.zeros((len(ids), self.num_fg), np.float32)
        for i, image_id in enumerate(ids):
            if image_id not in labels:
                raise DataError(layout.labels_file() or layout.root, f"no image-level labels for {image_id!r}")
            for k in labels[image_id]:
                self.targets[i, k - 1] = 1.0

    def __len__(self) -> int:
        return len(self.ids)

    def augmentation_seed(self, key: int) -> int:
        """The seed of sample ``key``'s random draws: ``SeedSequence([seed, epoch, index])``."""
        epoch, index = divmod(key, len(self.ids))
        return int(np.random.SeedSequence([self.seed, epoch, index]).generate_state(1)[0])

    def __getitem__(self, key: int) -> dict[str, object]:
        """``image`` ``(3, crop, crop)`` float32, ``target`` ``(C - 1,)`` multi-hot, ``id``."""
        index = key % len(self.ids)
        rng = np.random.default_rng(self.augmentation_seed(key))
        img = Image.fromarray(self.layout.read_image(self.ids[index]))
        if self.cfg.heat_dir:
            img, target = self._heat_crop(img, index, rng)
        else:
            img, target = self._resize_crop(img, rng), self.targets[index]
        return {"image": img, "target": torch.from_numpy(np.asarray(target, np.float32)), "id": self.ids[index]}

    def _resize_crop(self, img: Image.Image, rng: np.random.Generator) -> torch.Tensor:
        lo, hi = self.cfg.resize_long
        long_side = int(rng.integers(lo, hi + 1))
        w, h = img.size
        ratio = long_side / max(w, h)
        img = img.resize((max(1, round(w * ratio)), max(1, round(h * ratio))), Image.BICUBIC)
        if rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        img = color_jitter(img, rng, self.cfg.color_jitter)
        x = normalize(np.asarray(img)).numpy().transpose(1, 2, 0)
        return torch.from_numpy(np.ascontiguousarray(random_crop(x, self.cfg.crop_size, rng).transpose(2, 0, 1)))

    def _heat_crop(self, img: Image.Image, index: int, rng: np.random.Generator) -> tuple[torch.Tensor, np.ndarray]:
        cfg = self.cfg
        classes, probs = load_heat(Path(cfg.heat_dir) / f"{self.ids[index]}.npz")
        scales = cfg.crop_scales
        boxes = multi_crop_boxes(
            img.size[0], img.size[1], [scales[int(rng.integers(len(scales)))]], cfg.crop_size, cfg.crop_stride
        )[0]
        # up to len(boxes) random tries for a tile holding a class; else the last try (maybe empty)
        for _ in range(len(boxes)):
            box = boxes[int(rng.integers(len(boxes)))]
            target = tile_label(classes, probs, box, self.num_fg)
            if target.sum() > 0:
                break
        img = img.crop(box)
        if rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        img = color_jitter(img, rng, cfg.color_jitter).resize((cfg.crop_size, cfg.crop_size), Image.BILINEAR)
        return normalize(np.asarray(img)), target
