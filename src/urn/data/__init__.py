"""Datasets on disk: class lists, layouts (VOC, COCO voc_format), image-level labels, training
samples with paired mmseg-style transforms, a procedural demo dataset and a dataset checker.

Convention: code works with contiguous class indices ``0..C-1`` (0 = background, 255 = ignore);
files on disk store raw ids (:attr:`ClassList.raw_ids`), which differ only for COCO.
"""
