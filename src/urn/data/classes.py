"""Class lists: names, the label value stored on disk for each class, and the mapping between the two.

Training, losses, models and metrics always use *contiguous* indices ``0..C-1`` with 0 = background
and 255 = ignore. Files on disk (ground truth, pseudo-masks, predictions, ``cls_labels.json``) store
*raw* ids, ``ClassList.raw_ids[i]`` for contiguous index ``i``. For VOC and any dataset described by a
plain ``classes.txt`` the two are the same (identity). For COCO in the reference's ``voc_format``,
masks hold raw category ids 1..90, of which only 80 are used; :meth:`ClassList.to_train` maps them to
0..80 and :meth:`ClassList.to_raw` maps back (use it before writing any mask).

Why 81 contiguous classes score the same as the reference's 91 slots: mmseg's mIoU is the nanmean of
per-slot IoUs, where a slot whose union (GT + prediction) is empty is NaN and left out. The 10 unused
category ids never occur in COCO ground truth, and a network with 81 outputs cannot predict them, so
their slots are always NaN. The 81 remaining slots have exactly the same intersections and unions as
the 81 contiguous classes, hence the same nanmean (tested in ``tests/data/test_classes.py``). The one
difference: a 91-way reference network *could* predict an unused id; that slot would score 0 in the
reference, a case that cannot arise here.

``classes.txt`` format: one class per line, background first. Either plain names (identity raw ids)
or ``<raw id>: <name>`` on every line (for datasets whose masks use non-contiguous values). Blank
lines and lines starting with ``#`` are skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from urn.errors import DataError
from urn.io import IGNORE_INDEX

VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip

# Raw COCO category ids 1..90 minus the 10 ids no annotation uses.
COCO_UNUSED_IDS: tuple[int, ...] = (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)
COCO_CATEGORY_IDS: tuple[int, ...] = tuple(i for i in range(1, 91) if i not in COCO_UNUSED_IDS)

_COCO_THINGS: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip
COCO_CLASSES: tuple[str, ...] = ("background", *_COCO_THINGS)

_RAW_LINE = re.compile(r"^(\d+)\s*:\s*(\S.*)$")


@dataclass(frozen=True)
class ClassList:
    """An ordered list of classes and the raw label value each one has on disk.

    Args:
        names: class names, background first; ``num_classes = len(names)``.
        raw_ids: the value stored in mask files for each contiguous index (same length as
            ``names``, distinct, in 0..254; 255 is reserved for ignore).
    """

    names: tuple[str, ...]
    raw_ids: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.names) < 2:
            raise ValueError("a class list needs background and at least one foreground class")
        if len(self.names) != len(self.raw_ids):
            raise ValueError(f"{len(self.names)} names but {len(self.raw_ids)} raw ids")
        if len(set(self.names)) != len(self.names):
            raise ValueError("class names must be distinct")
        if len(set(self.raw_ids)) != len(self.raw_ids):
            raise ValueError("raw ids must be distinct")
        if any(not 0 <= r < IGNORE_INDEX for r in self.raw_ids):
            raise ValueError(f"raw ids must lie in 0..{IGNORE_INDEX - 1} ({IGNORE_INDEX} means ignore)")

    # ------------------------------------------------------------------------------ constructors
    @classmethod
    def from_names(cls, names: tuple[str, ...] | list[str]) -> ClassList:
        """A class list whose raw ids are the contiguous indices (VOC-like)."""
        return cls(tuple(names), tuple(range(len(names))))

    @property
    def num_classes(self) -> int:
        """Number of contiguous classes C, background included."""
        return len(self.names)

    @property
    def is_identity(self) -> bool:
        """True when raw ids equal contiguous indices (no mapping needed)."""
        return self.raw_ids == tuple(range(len(self.raw_ids)))

    @property
    def max_raw_id(self) -> int:
        """Largest raw id: the length of a SEAM/PMM ``cls_labels.npy`` vector (index k = raw id k+1)."""
        return max(self.raw_ids)

    # ---------------------------------------------------------------------------------- mapping
    @cached_property
    def _train_lut(self) -> np.ndarray:
        # -1 marks raw values that are not a class; 255 (ignore) maps to itself.
        lut = np.full(256, -1, dtype=np.int16)
        lut[list(self.raw_ids)] = np.arange(self.num_classes)
        lut[IGNORE_INDEX] = IGNORE_INDEX
        return lut

    @cached_property
    def _raw_lut(self) -> np.ndarray:
        lut = np.full(256, -1, dtype=np.int16)
        lut[: self.num_classes] = self.raw_ids
        lut[IGNORE_INDEX] = IGNORE_INDEX
        return lut

    def to_train(self, mask_raw: np.ndarray) -> np.ndarray:
        """Map raw label values to contiguous indices.

        Args:
            mask_raw: integer array of any shape holding raw ids or 255.

        Returns:
            uint8 array of the same shape with values in ``0..C-1`` or 255.

        Raises:
            ValueError: a value is neither a raw id of this list nor 255 (message lists them).
        """
        return _apply_lut(self._train_lut, mask_raw, "raw label values", self)

    def to_raw(self, mask: np.ndarray) -> np.ndarray:
        """Map contiguous indices (or 255) back to raw ids, for writing masks. Inverse of :meth:`to_train`.

        Raises:
            ValueError: a value is ``>= num_classes`` and not 255.
        """
        return _apply_lut(self._raw_lut, mask, "class indices", self)

    def raw_to_index(self, raw_id: int) -> int:
        """Contiguous index of one raw id. Raises ValueError when ``raw_id`` is not a class."""
        if not 0 <= raw_id < 256 or self._train_lut[raw_id] < 0 or raw_id == IGNORE_INDEX:
            raise ValueError(f"raw label {raw_id} is not one of the {self.num_classes} classes")
        return int(self._train_lut[raw_id])


def _apply_lut(lut: np.ndarray, mask: np.ndarray, what: str, classes: ClassList) -> np.ndarray:
    mask = np.asarray(mask)
    if not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(f"{what} must be integers, got dtype {mask.dtype}")
    if mask.size and (int(mask.min()) < 0 or int(mask.max()) > 255):
        raise ValueError(f"{what} outside 0..255")
    out = lut[mask.astype(np.uint8, copy=False)]
    if (out < 0).any():
        bad = sorted(int(v) for v in np.unique(mask[out < 0]))[:8]
        raise ValueError(f"{what} {bad} are not among the {classes.num_classes} classes (255 = ignore)")
    return out.astype(np.uint8)


# ---------------------------------------------------------------------------------- constructors
def voc() -> ClassList:
    """PASCAL VOC 2012: 21 classes, identity raw ids."""
    return ClassList.from_names(VOC_CLASSES)


def coco() -> ClassList:
    """COCO 2014 in the reference's ``voc_format``: 81 classes, raw ids 0 + the 80 category ids."""
    return ClassList(COCO_CLASSES, (0, *COCO_CATEGORY_IDS))


def read_classes_file(path: str | Path) -> ClassList:
    """Read a ``classes.txt`` (format in the module docstring).

    Raises:
        DataError: unreadable file, mixed or malformed lines, duplicates, fewer than 2 classes.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(path, f"cannot read class list ({exc.__class__.__name__})") from None
    entries = [
        (n, line.strip())
        for n, line in enumerate(text.splitlines(), 1)
        if line.strip() and not line.strip().startswith("#")
    ]
    if not entries:
        raise DataError(path, "class list is empty (one class per line, background first)")
    matches = [_RAW_LINE.match(line) for _, line in entries]
    if all(matches):
        raw = tuple(int(m.group(1)) for m in matches if m)
        names = tuple(m.group(2).strip() for m in matches if m)
    elif any(matches):
        line_no = next(n for (n, _), m in zip(entries, matches, strict=True) if not m)
        raise DataError(path, f"line {line_no}: either every line is '<raw id>: <name>' or none is")
    else:
        names = tuple(line for _, line in entries)
        raw = tuple(range(len(names)))
    try:
        return ClassList(names, raw)
    except ValueError as exc:
        raise DataError(path, f"bad class list: {exc}") from None


def write_classes_text(classes: ClassList) -> str:
    """The ``classes.txt`` text for ``classes`` (plain names when the raw ids are the identity)."""
    if classes.is_identity:
        return "".join(f"{n}\n" for n in classes.names)
    return "".join(f"{r}: {n}\n" for r, n in zip(classes.raw_ids, classes.names, strict=True))
