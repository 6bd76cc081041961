"""Paired training transforms that mirror mmseg 0.8 (URN_ALGORITHM.md §2.3), driven by an explicit RNG.

A *sample* is a dict::

    {"image": (H, W, 3) uint8 RGB  (float32 after Normalize),
     "target": (H, W) uint8 class indices, 255 = ignore,
     "weight": (H, W) float32 per-pixel loss weight   (optional),
     ...any other keys, passed through untouched}

Every transform is a callable ``t(sample, rng) -> sample`` that draws its random numbers from the
``numpy.random.Generator`` it is given, in the same order as mmseg draws them from the global
``np.random``; the same generator state therefore gives the same augmentation, in any process. Geometric
transforms move image, target and weight together (nearest-neighbour for target and weight), so they
stay aligned pixel for pixel.

Differences from mmseg, on purpose:

- The image is RGB throughout (mmseg loads BGR and swaps in Normalize); the colour-space conversions
  use the matching RGB codes, so the result is the same.
- ``RandomCrop``'s ``cat_max_ratio`` counts only target values, never weights (fixes quirk Q8).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np

from urn.io import IGNORE_INDEX

Sample = dict[str, Any]
Transform = Callable[[Sample, np.random.Generator], Sample]

IMAGENET_MEAN = (123.675, 116.28, 103.53)  # RGB, 0..255 scale
IMAGENET_STD = (58.395, 57.12, 57.375)
_ARRAYS = ("image", "target", "weight")  # the per-pixel arrays of a sample, moved together


def _map(sample: Sample, fn: Callable[[np.ndarray], np.ndarray], keys: Sequence[str] = _ARRAYS) -> Sample:
    """A copy of ``sample`` with ``fn`` applied to those of ``keys`` that it holds."""
    return {**sample, **{key: fn(sample[key]) for key in keys if key in sample}}


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    """``size`` as ``(h, w)``; one int means a square."""
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


class Compose:
    """Apply transforms in order, all drawing from the same generator."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        for t in self.transforms:
            sample = t(sample, rng)
        return sample

    def __repr__(self) -> str:
        return "Compose([" + ", ".join(type(t).__name__ for t in self.transforms) + "])"


class RandomRescale:
    """mmseg ``Resize(img_scale=base_size, ratio_range=..., keep_ratio=True)``.

    A ratio r ~ U(ratio_range) gives the bound ``(int(L*r), int(S*r))``; the image is scaled by
    ``min(long_bound / long_side, short_bound / short_side)`` and rounded like mmcv
    (``int(x * f + 0.5)``). Image bilinear, target and weight nearest.

    Args:
        base_size: ``(long, short)`` bound before the ratio, mmseg's ``img_scale``.
        ratio_range: ``(min, max)`` of r, or None for a fixed r = 1 (no random draw).
    """

    def __init__(
        self,
        base_size: tuple[int, int] = (2048, 512),
        ratio_range: tuple[float, float] | None = (0.5, 2.0),
    ) -> None:
        self.base_size = (int(base_size[0]), int(base_size[1]))
        self.ratio_range = ratio_range

    def output_size(self, height: int, width: int, ratio: float) -> tuple[int, int]:
        """``(new_h, new_w)`` for an image of ``height x width`` at ratio ``ratio``."""
        bound = (int(self.base_size[0] * ratio), int(self.base_size[1] * ratio))
        factor = min(max(bound) / max(height, width), min(bound) / min(height, width))
        return max(1, int(height * factor + 0.5)), max(1, int(width * factor + 0.5))

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if self.ratio_range is None:
            ratio = 1.0
        else:
            lo, hi = self.ratio_range
            ratio = rng.random() * (hi - lo) + lo
        h, w = sample["image"].shape[:2]
        new_h, new_w = self.output_size(h, w, ratio)
        out = _map(sample, lambda a: cv2.resize(a, (new_w, new_h), interpolation=cv2.INTER_NEAREST), _ARRAYS[1:])
        out["image"] = cv2.resize(sample["image"], (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        return out


class RandomCrop:
    """mmseg ``RandomCrop(crop_size, cat_max_ratio)``.

    Draws an offset; while the crop holds fewer than 2 non-ignored label values or its largest one
    covers ``>= cat_max_ratio`` of the labelled pixels, draws again, at most 10 times (mmseg keeps the
    10th re-draw unchecked). A crop larger than the image is clipped to it (Pad fills up later).

    Args:
        size: crop ``(h, w)`` or one int for a square.
        cat_max_ratio: 1.0 or more disables the re-draw rule.
        ignore: target value that is not counted as a category.
    """

    def __init__(self, size: int | tuple[int, int], cat_max_ratio: float = 0.75, ignore: int = IGNORE_INDEX):
        self.size = _pair(size)
        self.cat_max_ratio = cat_max_ratio
        self.ignore = ignore

    def _draw(self, h: int, w: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        margin_h, margin_w = max(h - self.size[0], 0), max(w - self.size[1], 0)
        y = int(rng.integers(0, margin_h + 1))
        x = int(rng.integers(0, margin_w + 1))
        return y, min(y + self.size[0], h), x, min(x + self.size[1], w)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        h, w = sample["image"].shape[:2]
        y0, y1, x0, x1 = self._draw(h, w, rng)
        if self.cat_max_ratio < 1.0 and "target" in sample:
            for _ in range(10):
                values, counts = np.unique(sample["target"][y0:y1, x0:x1], return_counts=True)
                counts = counts[values != self.ignore]
                if len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio:
                    break
                y0, y1, x0, x1 = self._draw(h, w, rng)
        return _map(sample, lambda a: np.ascontiguousarray(a[y0:y1, x0:x1]))


class RandomHorizontalFlip:
    """Flip image, target and weight left-right with probability ``p`` (one draw per call)."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if not rng.random() < self.p:
            return sample
        return _map(sample, lambda a: np.ascontiguousarray(a[:, ::-1]))


class PhotoMetricDistortion:
    """mmseg ``PhotoMetricDistortion`` on a uint8 RGB image; target and weight untouched.

    In order, each step with probability 0.5: brightness ``+U(-32, 32)``; contrast ``*U(0.5, 1.5)``
    (before the HSV steps or after them, chosen at random); saturation ``*U(0.5, 1.5)``; hue
    ``+randint(-18, 18)`` mod 180 (OpenCV's 0..179 hue, upper bound exclusive as in NumPy). Every step
    clips to uint8.
    """

    def __init__(
        self,
        brightness_delta: int = 32,
        contrast_range: tuple[float, float] = (0.5, 1.5),
        saturation_range: tuple[float, float] = (0.5, 1.5),
        hue_delta: int = 18,
    ) -> None:
        self.brightness_delta = brightness_delta
        self.contrast_range = contrast_range
        self.saturation_range = saturation_range
        self.hue_delta = hue_delta

    @staticmethod
    def _convert(img: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
        return np.clip(img.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)

    def _contrast(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.integers(2):
            return self._convert(img, alpha=rng.uniform(*self.contrast_range))
        return img

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        img = sample["image"]
        if img.dtype != np.uint8:
            raise TypeError("PhotoMetricDistortion needs the uint8 image: put it before Normalize")
        if rng.integers(2):
            img = self._convert(img, beta=rng.uniform(-self.brightness_delta, self.brightness_delta))
        contrast_first = rng.integers(2) == 1
        if contrast_first:
            img = self._contrast(img, rng)
        if rng.integers(2):
            hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
            hsv[:, :, 1] = self._convert(hsv[:, :, 1], alpha=rng.uniform(*self.saturation_range))
            img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        if rng.integers(2):
            hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
            shift = int(rng.integers(-self.hue_delta, self.hue_delta))
            hsv[:, :, 0] = (hsv[:, :, 0].astype(np.int32) + shift) % 180
            img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        if not contrast_first:
            img = self._contrast(img, rng)
        return {**sample, "image": img}


class Normalize:
    """uint8 RGB image -> float32 ``(x - mean) / std`` (ImageNet statistics, RGB order). No randomness."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        return {**sample, "image": (sample["image"].astype(np.float32) - self.mean) / self.std}


class Pad:
    """Pad bottom and right up to ``size``: image with ``image_value``, target 255, weight 0.

    A side already at least as large as ``size`` is left alone. No randomness.
    """

    def __init__(self, size: int | tuple[int, int], image_value: float = 0.0) -> None:
        self.size = _pair(size)
        self.image_value = image_value

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        h, w = sample["image"].shape[:2]
        ph, pw = max(self.size[0] - h, 0), max(self.size[1] - w, 0)
        if ph == 0 and pw == 0:
            return sample
        fill = {"image": self.image_value, "target": IGNORE_INDEX, "weight": 0.0}
        out = dict(sample)
        for key, value in fill.items():
            if key in sample:
                arr = sample[key]
                widths = ((0, ph), (0, pw)) + ((0, 0),) * (arr.ndim - 2)
                out[key] = np.pad(arr, widths, mode="constant", constant_values=value)
        return out


def train_transforms(data_cfg: Any) -> Compose:
    """The mmseg training pipeline from a :class:`urn.config.DataConfig`.

    Rescale -> RandomCrop -> flip -> PhotoMetricDistortion (when ``data_cfg.photometric``) ->
    Normalize -> Pad to the crop size.
    """
    steps: list[Transform] = [
        RandomRescale(tuple(data_cfg.base_size), tuple(data_cfg.ratio_range)),
        RandomCrop(data_cfg.crop_size, cat_max_ratio=data_cfg.cat_max_ratio),
        RandomHorizontalFlip(0.5),
    ]
    if data_cfg.photometric:
        steps.append(PhotoMetricDistortion())
    steps += [Normalize(), Pad(data_cfg.crop_size)]
    return Compose(steps)
