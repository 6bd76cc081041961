"""``urn data check``: read every file of a split and report every problem, one line each.

Nothing is fixed or written; each line names the offending file first. Checked:

- the split file: missing, empty, bad lines, unsafe or duplicate ids;
- images: missing, a folder, empty, truncated or otherwise unreadable;
- ground-truth masks (when the dataset has them): unreadable, size != image size, values outside the
  class list (255 = ignore is allowed); ids without a mask are summarised in one line;
- a pseudo-mask folder (``masks``): the same checks, and every id must have a mask;
- image-level labels: a malformed file (e.g. label vectors of the wrong length), ids without labels,
  and tags that contradict the ground truth (a class in the mask but not tagged, or tagged but absent;
  both directions are reported).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from urn.data.layout import DatasetLayout, parse_split_file, read_target, wxh
from urn.errors import DataError
from urn.progress import iter_progress


def check_dataset(
    root: str | Path,
    split: str,
    *,
    masks: str | Path | None = None,
    layout: Literal["auto", "voc", "coco"] = "auto",
    classes_file: str | Path | None = None,
    progress: bool = False,
) -> list[str]:
    """Check ``split`` of the dataset at ``root``.

    Args:
        root: dataset root.
        split: split name.
        masks: optional folder of pseudo-masks (``<id>.png``) to check as well.
        layout: ``"auto"``, ``"voc"`` or ``"coco"``.
        classes_file: class list (default as in :meth:`DatasetLayout.open`).
        progress: show a progress bar on stderr.

    Returns:
        One line per problem, each naming the file; empty when the split is clean.
    """
    try:
        ds = DatasetLayout.open(root, layout, classes_file)
        split_file = ds.split_path(split)
    except DataError as exc:
        return [str(exc)]
    ids, split_problems = parse_split_file(split_file)
    problems = [f"{split_file}: {p}" for p in split_problems]
    mask_dir: Path | None = None
    if masks is not None:
        mask_dir = Path(masks)
        if not mask_dir.is_dir():
            problems.append(f"{mask_dir}: mask folder not found")
            mask_dir = None

    tags, tag_file = _load_tags(ds, problems)
    missing_gt: list[str] = []
    missing_tags: list[str] = []
    for image_id in iter_progress(ids, progress, "check"):
        size = _check_image(ds, image_id, split_file, problems)
        gt_classes = None
        if ds.gt_dir is not None:
            gt_path = ds.gt_path(image_id)
            if gt_path.exists():
                gt_classes = _check_mask(gt_path, ds, size, problems, gt=True)
            else:
                missing_gt.append(image_id)
        if mask_dir is not None:
            path = mask_dir / f"{image_id}.png"
            if path.exists():
                _check_mask(path, ds, size, problems, gt=False)
            else:
                problems.append(f"{path}: no pseudo-mask for id {image_id!r}")
        if tags is not None:
            if image_id not in tags:
                missing_tags.append(image_id)
            elif gt_classes is not None:
                _compare_tags(ds, image_id, tags[image_id], gt_classes, tag_file, problems)
    for missing, where, what in (
        (missing_gt, ds.gt_dir, "ground-truth mask"),
        (missing_tags, tag_file, "image-level labels"),
    ):
        if missing:
            problems.append(f"{where}: no {what} for {len(missing)} of {len(ids)} ids (e.g. {', '.join(missing[:3])})")
    return problems


def _load_tags(ds: DatasetLayout, problems: list[str]) -> tuple[dict[str, tuple[int, ...]] | None, Path | None]:
    try:
        return ds.image_labels(), ds.labels_file()
    except DataError as exc:
        problems.append(str(exc))
        return None, None


def _check_image(ds: DatasetLayout, image_id: str, split_file: Path, problems: list[str]) -> tuple[int, int] | None:
    """Decode the whole image; returns its ``(H, W)`` or None (problem recorded)."""
    path = ds.image_path(image_id)
    if not path.exists():
        problems.append(f"{path}: no image for id {image_id!r} listed in {split_file}")
        return None
    try:
        return ds.read_image(image_id).shape[:2]
    except DataError as exc:
        problems.append(str(exc))
        return None


def _check_mask(
    path: Path, ds: DatasetLayout, size: tuple[int, int] | None, problems: list[str], *, gt: bool
) -> set[int] | None:
    """Read one mask; returns its foreground classes (contiguous) or None (problem recorded)."""
    try:
        mask = ds.read_gt(path.stem) if gt else read_target(path, ds)[0]
    except DataError as exc:
        problems.append(str(exc))
        return None
    if size is not None and mask.shape != size:
        problems.append(f"{path}: mask size {wxh(mask.shape)} != image size {wxh(size)}")
    return {int(v) for v in np.unique(mask) if 0 < v < ds.classes.num_classes}


def _compare_tags(
    ds: DatasetLayout,
    image_id: str,
    tagged: tuple[int, ...],
    in_mask: set[int],
    tag_file: Path | None,
    problems: list[str],
) -> None:
    tagged_set = set(tagged)
    for classes, what in (
        (in_mask - tagged_set, f"classes in the mask but not in the image labels ({tag_file})"),
        (tagged_set - in_mask, f"classes tagged in the image labels ({tag_file}) but absent from the mask"),
    ):
        if classes:
            names = ", ".join(ds.classes.names[c] for c in sorted(classes))
            problems.append(f"{ds.gt_path(image_id)}: {what}: {names}")
