"""Label-free checks of a mask folder: does it still hold the objects the image-level tags promise?

A weak pipeline can lose its objects at two places without any error: the pseudo-masks (weak CAMs, a
background score that wins everywhere) and the cyclic masks (a Seg-1 that never learned the objects).
Ground truth is often missing on the training split, so the mIoU cannot tell. The tags can: every
tagged class should own some pixels of its image. :func:`mask_coverage` measures, from the tags and
the masks only (ground truth is never read):

- ``missing_tag_rate``: share of (image, tag) pairs whose tagged class has no pixel in the mask;
- ``empty_share``: share of tagged images whose mask has no foreground pixel at all;
- ``foreground_share``: share of the tagged images' pixels the masks assign to any foreground class;
- per class: ``tags`` (images tagged with it) and ``foreground_share`` (share of those images' pixels
  the masks assign to it).

Pixels labelled 255 (ignore) are left out of every count. Shares are pooled over pixels (a large
image weighs more than a small one). Masks are read as the training dataset reads them
(:func:`urn.data.layout.read_target`: raw label values on disk, mapped to contiguous indices), and
tags come as :meth:`DatasetLayout.image_labels` gives them (contiguous indices 1..C-1), so raw ids
that differ from the contiguous indices (COCO) are compared correctly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from urn.data.layout import DatasetLayout, read_target
from urn.io import IGNORE_INDEX


@dataclass(frozen=True)
class ClassCoverage:
    """One foreground class: ``tags`` images carry its tag; ``foreground_share`` of their pixels are it."""

    tags: int
    foreground_share: float | None


@dataclass(frozen=True)
class Coverage:
    """What a mask folder keeps of the tagged objects (definitions in the module docstring).

    Rates are fractions in [0, 1], ``None`` when nothing was there to count (no tagged image).
    ``per_class`` is keyed by class name and holds only classes tagged at least once.
    """

    images: int
    tagged_images: int
    pairs: int
    missing_pairs: int
    empty_images: int
    missing_tag_rate: float | None
    empty_share: float | None
    foreground_share: float | None
    per_class: dict[str, ClassCoverage] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``per_class`` as ``{name: {"tags", "foreground_share"}}``)."""
        return asdict(self)


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def mask_coverage(
    layout: DatasetLayout,
    ids: Sequence[str],
    tags: Mapping[str, Sequence[int]],
    mask_dir: str | Path,
) -> Coverage:
    """Measure how much of the tagged objects the masks ``mask_dir/<id>.png`` keep.

    Args:
        layout: the dataset (class list, for reading masks and naming classes).
        ids: the images to check (a split's ids); an id without tags counts in ``images`` only.
        tags: ``{id: contiguous class indices 1..C-1}`` as :meth:`DatasetLayout.image_labels` returns.
        mask_dir: folder of ``<id>.png`` masks, raw label values as the training dataset reads them.

    Returns:
        The :class:`Coverage` of the folder.

    Raises:
        DataError: a mask of a tagged image is missing or unreadable, or holds values outside the class list.
    """
    n = layout.classes.num_classes
    tag_count = np.zeros(n, np.int64)  # images tagged with class c
    class_pixels = np.zeros(n, np.int64)  # pixels labelled c in the images tagged with c
    tagged_pixels = np.zeros(n, np.int64)  # valid pixels of the images tagged with c
    pairs = missing = empty = tagged_images = fg_pixels = all_pixels = 0
    for image_id in ids:
        present = sorted({int(c) for c in tags.get(image_id, ()) if 0 < int(c) < n})
        if not present:
            continue
        mask, _ = read_target(Path(mask_dir) / f"{image_id}.png", layout)  # (H, W) uint8, 255 = ignore
        counts = np.bincount(mask[mask != IGNORE_INDEX].ravel(), minlength=n)[:n]  # (C,)
        valid = int(counts.sum())
        tagged_images += 1
        pairs += len(present)
        missing += sum(int(counts[c] == 0) for c in present)
        empty += int(valid - counts[0] == 0)
        fg_pixels += valid - int(counts[0])
        all_pixels += valid
        tag_count[present] += 1
        class_pixels[present] += counts[present]
        tagged_pixels[present] += valid
    per_class = {
        layout.classes.names[c]: ClassCoverage(int(tag_count[c]), _ratio(int(class_pixels[c]), int(tagged_pixels[c])))
        for c in range(1, n)
        if tag_count[c]
    }
    return Coverage(
        images=len(ids),
        tagged_images=tagged_images,
        pairs=pairs,
        missing_pairs=missing,
        empty_images=empty,
        missing_tag_rate=_ratio(missing, pairs),
        empty_share=_ratio(empty, tagged_images),
        foreground_share=_ratio(fg_pixels, all_pixels),
        per_class=per_class,
    )


def summary_line(coverage: Mapping[str, Any]) -> str:
    """One line on a :meth:`Coverage.as_dict`: missing-tag rate, foreground share, weakest class."""
    rate, fg, empty = (coverage.get(k) for k in ("missing_tag_rate", "foreground_share", "empty_share"))
    if rate is None:
        return "no tagged image to check"
    text = (
        f"tagged classes missing from {100 * rate:.0f}% of (image, tag) pairs; "
        f"foreground share {100 * (fg or 0.0):.0f}% of the tagged images' pixels; "
        f"{100 * (empty or 0.0):.0f}% of tagged images all background"
    )
    scored = {
        k: v["foreground_share"] for k, v in coverage.get("per_class", {}).items() if v["foreground_share"] is not None
    }
    if scored:
        weakest = min(scored, key=lambda k: scored[k])
        text += f"; lowest class foreground share {100 * scored[weakest]:.1f}% ({weakest})"
    return text
