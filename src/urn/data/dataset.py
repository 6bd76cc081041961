"""PyTorch dataset: segmentation training samples (image, target, per-pixel weight).

Training targets come from a pseudo-mask folder (weak supervision, the default) or from ground truth
(``fully_supervised=True``, the upper bound). Ground truth is never opened otherwise, so weak training
cannot leak it.

Files read from ``target_dir`` (``<id>.png``):

- a single-channel PNG (palette or grey) of label values, as stored on disk (raw ids; see
  :mod:`urn.data.classes`), 255 = ignore; or
- the reference's 3-channel URN PNG, written by ``cv2.imwrite`` from ``[label, w, w]``, so that on disk
  R = w, G = w, B = label: the label is channel 2 of an RGB read (quirk Q21).

Files read from ``uncertainty_dir`` (optional):

- ``<id>.npy``: float HxW normalised uncertainty U in [0, 1]; weight = 1 - U; or
- ``<id>.png``: the reference 3-channel PNG (weight = R byte / 255) or an 8-bit grey PNG (byte / 255).

Where the weights come from (:attr:`SegmentationDataset.weight_source`): ``uncertainty_dir`` when
given; else, when ``target_dir`` holds the reference's 3-channel PNGs, their weight byte / 255 (the
reference trains Seg-2 on exactly these files); else there are none and every weight is 1. A loss
that weights by uncertainty must not start without a source
(:meth:`SegmentationDataset.require_weights`), or Seg-2 would silently train as plain cross-entropy.

A relative folder is looked up in the working directory first, then under the dataset root (the
reference keeps ``ppmg/`` and ``urn_r2n/`` inside the root). Weights returned are soft values in
[0, 1]; turning them into the reference's hard {0.05, 1} weighting is the loss's job. Padded pixels
have weight 0 and target 255.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from urn.data.layout import DatasetLayout, header, read_target, read_weight, resolve_dir, wxh
from urn.data.transforms import Normalize, Sample, Transform
from urn.errors import DataError, UrnError

_NORMALIZE = Normalize()


def _writable(arr: np.ndarray) -> np.ndarray:
    # PIL-backed arrays are read-only; transforms and torch.from_numpy want to own their memory.
    return arr if arr.flags.writeable else arr.copy()


def _to_tensors(sample: Sample) -> Sample:
    if sample["image"].dtype == np.uint8:
        sample = _NORMALIZE(sample)  # a transform without Normalize still yields a normalised image
    out = dict(sample)
    out["image"] = torch.from_numpy(np.ascontiguousarray(sample["image"].transpose(2, 0, 1)))
    if "target" in sample:
        out["target"] = torch.from_numpy(sample["target"].astype(np.int64))
    if "weight" in sample:
        out["weight"] = torch.from_numpy(np.ascontiguousarray(sample["weight"], dtype=np.float32))
    return out


# --------------------------------------------------------------------------------------- datasets
class SegmentationDataset(Dataset):
    """Training/validation samples: image, target and per-pixel weight.

    Args:
        layout: the dataset.
        split: split name (ids are read from its split file).
        target_dir: pseudo-mask folder; required unless ``fully_supervised``.
        uncertainty_dir: optional folder of per-pixel uncertainty/weights.
        fully_supervised: use ground truth as targets (``target_dir`` is then not used).
        transform: applied to the numpy sample with a per-key generator; None = Normalize only.
        seed: base seed (>= 0) of the per-sample generators.

    ``dataset[key]`` reads index ``key % len`` and augments it with
    ``np.random.default_rng((seed, key))``: a sampler passing ``epoch * len + i`` gets fresh but
    reproducible augmentations every epoch, in any worker process.

    Items: ``image`` float32 (3, H, W) normalised; ``target`` int64 (H, W) (255 = ignore); ``weight``
    float32 (H, W) (1.0 without a weight source, 0 on padding); ``id`` str; ``index`` int.

    Attributes:
        weight_source: ``"uncertainty"`` (``uncertainty_dir``), ``"pseudo_masks"`` (the weight
            channel of 3-channel reference PNGs in ``target_dir``) or None (all weights 1).
    """

    def __init__(
        self,
        layout: DatasetLayout,
        split: str,
        *,
        target_dir: str | Path | None,
        uncertainty_dir: str | Path | None = None,
        fully_supervised: bool = False,
        transform: Transform | None = None,
        seed: int = 0,
    ) -> None:
        if not fully_supervised and target_dir is None:
            raise UrnError("no pseudo-mask folder: set data.pseudo_masks or data.fully_supervised=true")
        if seed < 0:
            raise UrnError(f"seed must be >= 0, got {seed}")
        self.layout = layout
        self.split = split
        self.ids = layout.ids(split)
        self.fully_supervised = fully_supervised
        self.target_dir = None if fully_supervised else resolve_dir(target_dir, layout, "pseudo-mask")  # type: ignore[arg-type]
        self.uncertainty_dir = None if uncertainty_dir is None else resolve_dir(uncertainty_dir, layout, "uncertainty")
        self.weight_source: Literal["uncertainty", "pseudo_masks"] | None = None
        if self.uncertainty_dir is not None:
            self.weight_source = "uncertainty"
        elif self._targets_carry_weights():
            self.weight_source = "pseudo_masks"
        self.transform = transform
        self.seed = seed

    def _targets_carry_weights(self) -> bool:
        """Whether ``target_dir`` holds 3-channel reference PNGs (judged by the first file present)."""
        if self.target_dir is None:
            return False
        first = next((p for p in (self.target_dir / f"{i}.png" for i in self.ids) if p.is_file()), None)
        return first is not None and header(first)[0] == "RGB"

    def require_weights(self, weighting: str, key: str) -> None:
        """Refuse an uncertainty-weighted loss (``weighting`` hard/soft) when the data has no weights.

        Args:
            weighting: the schedule's ``weighting`` (``none``, ``hard`` or ``soft``).
            key: the config section it comes from (``seg2`` or ``train``), for the message.

        Raises:
            UrnError: weighting is on and :attr:`weight_source` is None.
        """
        if weighting != "none" and self.weight_source is None:
            where = f"the pseudo-masks in {self.target_dir} carry"
            if self.fully_supervised:
                where = "the ground truth carries"
            raise UrnError(
                f"{key}.weighting={weighting} needs per-pixel weights, but data.uncertainty is not set and "
                f"{where} none: set data.uncertainty to the uncertainty folder `urn uncertainty` wrote, "
                f"point data.pseudo_masks at the reference's 3-channel [label, w, w] PNGs, "
                f"or set {key}.weighting=none to train without URN's weighting"
            )

    def __len__(self) -> int:
        return len(self.ids)

    def target_path(self, image_id: str) -> Path:
        """The file the target of ``image_id`` is read from."""
        if self.target_dir is None:
            return self.layout.gt_path(image_id)
        return self.target_dir / f"{image_id}.png"

    def load(self, index: int) -> Sample:
        """The un-augmented numpy sample of ``index`` (image uint8 RGB, target uint8, weight float32).

        Raises:
            DataError: any file missing, unreadable, out of range or of the wrong size.
        """
        image_id = self.ids[index]
        image = _writable(self.layout.read_image(image_id))
        size = image.shape[:2]
        target_path = self.target_path(image_id)
        if self.target_dir is None:
            target, byte = self.layout.read_gt(image_id), None
        else:
            target, byte = read_target(target_path, self.layout)
        if target.shape != size:
            raise DataError(target_path, f"mask size {wxh(target.shape)} != image size {wxh(size)}")
        if self.uncertainty_dir is not None:
            weight, weight_path = read_weight(self.uncertainty_dir, image_id)
            if weight.shape != size:
                raise DataError(weight_path, f"weight size {wxh(weight.shape)} != image size {wxh(size)}")
        elif self.weight_source == "pseudo_masks":
            if byte is None:
                raise DataError(
                    target_path,
                    "single-channel pseudo-mask among 3-channel [label, w, w] ones: no weight channel to train on",
                )
            weight = byte.astype(np.float32) / 255.0
        else:
            weight = np.ones(size, dtype=np.float32)
        return {"image": image, "target": target, "weight": weight, "id": image_id, "index": index}

    def __getitem__(self, key: int) -> dict[str, Any]:
        key = int(key)
        if key < 0:
            raise IndexError(f"negative key {key}")
        index = key % len(self.ids)
        sample = self.load(index)
        if self.transform is not None:
            sample = self.transform(sample, np.random.default_rng((self.seed, key)))
        return _to_tensors(sample)
