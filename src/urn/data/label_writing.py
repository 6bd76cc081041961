"""Derive image-level labels from ground-truth masks and write ``cls_labels.json`` (``urn data labels``).

Kept apart from :mod:`urn.data.labels` (reading) because it works on a
:class:`~urn.data.layout.DatasetLayout`, and the layout itself reads labels through that module: this
module imports both, neither imports it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from urn.data.labels import ImageLabels, read_labels_json
from urn.data.layout import DatasetLayout
from urn.io import atomic_write_json
from urn.progress import iter_progress


def derive_labels(layout: DatasetLayout, split: str, *, progress: bool = False) -> ImageLabels:
    """Image-level labels of every id in ``split`` from its ground-truth masks.

    Args:
        layout: the dataset.
        split: split name.
        progress: show a progress bar on stderr.

    Returns:
        ``{id: sorted contiguous foreground indices}`` (background and 255 left out).

    Raises:
        DataError: no ground truth, or a mask is missing/unreadable/out of range.
    """
    ids = layout.ids(split)
    if layout.gt_dir is None:
        layout.gt_path(ids[0])  # raises the "no ground-truth folder" error
    out: ImageLabels = {}
    for image_id in iter_progress(ids, progress, "labels"):
        mask = layout.read_gt(image_id)
        values = np.unique(mask)
        out[image_id] = tuple(int(v) for v in values if 0 < v < layout.classes.num_classes)
    return out


def write_labels(layout: DatasetLayout, labels: ImageLabels) -> Path:
    """Write ``labels`` (contiguous indices) to ``ROOT/cls_labels.json`` as raw values, atomically.

    Ids already in the file and absent from ``labels`` are kept; ids in both are replaced.

    Returns:
        The path written.
    """
    path = layout.labels_json_path
    merged: dict[str, list[int]] = read_labels_json(path) if path.exists() else {}
    raw_ids = layout.classes.raw_ids
    for image_id, tags in labels.items():
        merged[image_id] = sorted(raw_ids[t] for t in tags)
    atomic_write_json(path, merged)
    layout.forget_labels()
    return path


def make_labels(layout: DatasetLayout, split: str, *, progress: bool = False) -> tuple[Path, int]:
    """Derive the labels of ``split`` from ground truth and merge them into ``cls_labels.json``.

    Returns:
        ``(path written, number of ids)``.
    """
    labels = derive_labels(layout, split, progress=progress)
    return write_labels(layout, labels), len(labels)
