"""What an RGB pseudo-mask PNG is: the reference's 3-channel URN file, a grey mask stored as RGB, or a colour mask.

The reference writes its Seg-2 targets with ``cv2.imwrite`` from ``[label, w, w]``; OpenCV takes the
array as BGR, so an RGB reader sees R = G = w (the loss-weight byte, ``uint8((1 - U) * 255)``) and
B = label. That format is recognised by what it is, R = G at every pixel, not by having three channels:

- ``"urn3"``: R = G everywhere (and not also = B everywhere): label = B, weight byte = R;
- ``"grey"``: R = G = B everywhere, not all one value: a single-channel mask stored as RGB (what
  ``Image.convert("RGB")`` or an image editor leaves). Read as that mask, without weights: a URN file
  would need the weight byte equal to the label at every pixel, which no run writes (the weights
  come from a min-max normalised uncertainty, so some pixel has w = 255, and others have w far from
  their label). A file of one value throughout reads the same either way and counts as ``"urn3"``;
- ``"colour"``: R != G somewhere: a colour-coded mask (VOC's palette colours as RGB, a
  visualisation). Refused: read as ``[w, w, label]`` its blue channel would be taken for labels, so
  VOC-coloured masks would become mostly background (aeroplane, bicycle, bird have B = 0) or values
  outside the class list, and their red channel for loss weights.

A colour mask whose colours all have R = G (only background and VOC's bird, (128, 128, 0), say)
cannot be told from a URN file by its pixels; it is read as one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from urn.errors import DataError

RGBTargetKind = Literal["urn3", "grey", "colour"]


def classify_rgb_target(arr: np.ndarray) -> RGBTargetKind:
    """Which kind of RGB pseudo-mask ``arr`` (``(H, W, 3)``, channels in RGB order) is; see the module docstring."""
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB array, got shape {arr.shape}")
    r, g, b = arr[:, :, 0], arr[:, :, 1], arr[:, :, 2]
    if not np.array_equal(r, g):
        return "colour"
    if np.array_equal(r, b) and r.size and r.min() != r.max():
        return "grey"
    return "urn3"


def split_rgb_target(arr: np.ndarray, path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The raw label values and the weight byte of an RGB pseudo-mask read from ``path``.

    Returns:
        ``(label, weight_byte)``, both ``(H, W)`` uint8 and contiguous: ``(B, R)`` for the reference's
        3-channel URN file, ``(B, None)`` for a grey mask stored as RGB.

    Raises:
        DataError: naming ``path``: a colour mask (R != G somewhere), with how the file was read, where
            R and G first differ, and what to write instead.
    """
    kind = classify_rgb_target(arr)
    label = np.ascontiguousarray(arr[:, :, 2])
    if kind == "urn3":
        return label, np.ascontiguousarray(arr[:, :, 0])
    if kind == "grey":
        return label, None
    differ = arr[:, :, 0] != arr[:, :, 1]
    y, x = (int(v) for v in np.argwhere(differ)[0])
    rgb = tuple(int(v) for v in arr[y, x])
    raise DataError(
        path,
        "RGB pseudo-mask read as the reference's 3-channel URN file (R = G = loss weight, B = label), but "
        f"R != G at {int(differ.sum())} of {differ.size} pixels (first at x={x}, y={y}: RGB {rgb}): a colour "
        "mask? Write pseudo-masks as single-channel PNGs of class ids (palette or grey, 255 = ignore)",
    )
