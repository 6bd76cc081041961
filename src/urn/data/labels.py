"""Image-level labels ("tags"): which foreground classes each image contains.

Two file formats are read:

- ``cls_labels.json`` (urn's own): ``{"<id>": [label values as stored in the masks, no background]}``.
  For COCO those values are raw category ids; they are mapped to contiguous indices on reading.
- ``cls_labels.npy`` (SEAM / IRN / PMM): a pickled dict ``id -> multi-hot float vector`` where index
  ``k`` stands for raw label ``k+1`` (VOC: 20 entries; COCO: 90, index = category id - 1). Its length
  must equal the largest raw id of the class list. IRN stores VOC ids as integers (``2007000032``);
  those are turned back into ``2007_000032``.

The ``.npy`` dict needs unpickling, which in general can run arbitrary code. It is therefore read
with a restricted unpickler that only rebuilds NumPy arrays, dtypes and scalars; anything else in the
file is refused as a :class:`DataError`.

Everything returned to callers uses contiguous indices ``1..C-1`` (sorted tuples). Deriving labels
from ground truth and writing ``cls_labels.json`` live in :mod:`urn.data.label_writing` (they need a
:class:`~urn.data.layout.DatasetLayout`, which reads labels through this module).
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from urn.data.classes import ClassList
from urn.errors import DataError

ImageLabels = dict[str, tuple[int, ...]]

# The only globals an np.save'd dict of numeric arrays needs (NumPy 1.x and 2.x module names).
_SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("collections", "OrderedDict"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


# -------------------------------------------------------------------------------------- reading
def load_labels_file(path: str | Path, classes: ClassList) -> ImageLabels:
    """Read ``cls_labels.json`` or ``cls_labels.npy`` into ``{id: sorted contiguous indices}``.

    Raises:
        DataError: unreadable or malformed file, unknown label, wrong vector length (names the file).
    """
    path = Path(path)
    if path.suffix == ".json":
        return _load_json(path, classes)
    if path.suffix == ".npy":
        return _load_npy_dict(path, classes)
    raise DataError(path, "image labels must be a .json or .npy file")


def _load_json(path: Path, classes: ClassList) -> ImageLabels:
    data = read_labels_json(path)
    background = classes.raw_ids[0]
    out: ImageLabels = {}
    for image_id, values in data.items():
        tags = set()
        for v in values:
            if v == background:
                continue  # tolerated: background is implied for every image
            try:
                tags.add(classes.raw_to_index(v))
            except ValueError:
                raise DataError(path, f"id {image_id!r}: label {v} is not in the class list") from None
        out[image_id] = tuple(sorted(tags))
    return out


def read_labels_json(path: Path) -> dict[str, list[int]]:
    """The raw content of a ``cls_labels.json``, validated as ``{str: [int, ...]}``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(path, f"cannot read ({exc.__class__.__name__})") from None
    except json.JSONDecodeError as exc:
        raise DataError(path, f"invalid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(data, dict):
        raise DataError(path, 'expected an object {"<id>": [labels, ...]}')
    for image_id, values in data.items():
        if not isinstance(values, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise DataError(path, f"id {image_id!r}: labels must be a list of integers")
    return data


def _load_npy_dict(path: Path, classes: ClassList) -> ImageLabels:
    raw = _read_pickled_dict(path)
    length = classes.max_raw_id
    known = np.isin(np.arange(1, length + 1), classes.raw_ids[1:])  # index k: raw id k+1 is a class
    out: ImageLabels = {}
    for key, vec in raw.items():
        image_id = _decode_key(key, path)
        arr = np.asarray(vec)
        if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise DataError(path, f"id {image_id!r}: expected a 1-d numeric vector, got {arr.dtype} {arr.shape}")
        if arr.shape[0] != length:
            raise DataError(
                path,
                f"id {image_id!r}: label vector has {arr.shape[0]} entries, expected {length} "
                f"(index k = label k+1 for {classes.num_classes} classes)",
            )
        values = arr.astype(np.float64)
        if not np.isfinite(values).all():
            raise DataError(path, f"id {image_id!r}: label vector holds NaN or infinity")
        hot = values >= 0.5
        if (hot & ~known).any():
            bad = [int(k) + 1 for k in np.flatnonzero(hot & ~known)][:5]
            raise DataError(path, f"id {image_id!r}: labels {bad} are not in the class list")
        out[image_id] = tuple(sorted(classes.raw_to_index(int(k) + 1) for k in np.flatnonzero(hot)))
    return out


def _read_pickled_dict(path: Path) -> dict[Any, Any]:
    """Load an ``np.save``'d dict without trusting the pickle (see module docstring)."""
    if not path.is_file() or path.stat().st_size == 0:
        raise DataError(path, "file not found" if not path.exists() else "not a file or empty")
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                _, _, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version == (2, 0):
                _, _, dtype = np.lib.format.read_array_header_2_0(fh)
            else:
                raise DataError(path, f"unsupported .npy format version {version}")
            if not dtype.hasobject:
                raise DataError(path, "expected a saved dict {id: label vector}, got a plain array")
            obj = _NumpyOnlyUnpickler(fh, encoding="latin1").load()
    except DataError:
        raise
    except (pickle.UnpicklingError, ValueError, EOFError, OSError, AttributeError, TypeError) as exc:
        raise DataError(path, f"unreadable label dict ({type(exc).__name__}: {exc})"[:200]) from None
    if isinstance(obj, np.ndarray) and obj.shape == () and obj.dtype.hasobject:
        obj = obj.item()
    if not isinstance(obj, dict):
        raise DataError(path, f"expected a dict {{id: label vector}}, got {type(obj).__name__}")
    return obj


def _decode_key(key: Any, path: Path) -> str:
    if isinstance(key, bytes):
        return key.decode("utf-8", errors="replace")
    if isinstance(key, str):
        return str(key)
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        s = str(int(key))
        # IRN parses "2007_000032" with np.loadtxt(int), giving 2007000032; undo that.
        return f"{s[:4]}_{s[4:]}" if len(s) == 10 else s
    raise DataError(path, f"label dict keys must be image ids, got {type(key).__name__}")
