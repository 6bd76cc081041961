"""Datasets on disk: class lists, layouts (VOC, COCO voc_format), image-level labels, training
samples with paired mmseg-style transforms, a procedural demo dataset and a dataset checker.

Convention: code works with contiguous class indices ``0..C-1`` (0 = background, 255 = ignore);
files on disk store raw ids (:attr:`ClassList.raw_ids`), which differ only for COCO.
"""

from urn.data.classes import (
    COCO_CATEGORY_IDS,
    COCO_CLASSES,
    VOC_CLASSES,
    ClassList,
    coco,
    read_classes_file,
    voc,
)
from urn.data.layout import DatasetLayout
from urn.data.transforms import train_transforms

_TORCH_NAMES = ("SegmentationDataset",)


def __getattr__(name: str) -> object:
    # The datasets need torch, which takes seconds to import; `urn data check/labels/demo` do not.
    if name in _TORCH_NAMES:
        from urn.data import dataset

        return getattr(dataset, name)
    raise AttributeError(f"module 'urn.data' has no attribute {name!r}")


__all__ = [
    "COCO_CATEGORY_IDS",
    "COCO_CLASSES",
    "VOC_CLASSES",
    "ClassList",
    "DatasetLayout",
    "SegmentationDataset",
    "coco",
    "read_classes_file",
    "train_transforms",
    "voc",
]
