"""Score folders of masks against ground truth (``urn score-masks``).

This is how WSSS papers report pseudo-mask quality (pseudo-masks of the train split against its
ground truth) and how predictions are scored. Ground truth is only ever read here and in evaluation,
never by a training path.
"""

from __future__ import annotations

from pathlib import Path

from urn.errors import DataError, UrnError
from urn.io import atomic_write_json, check_labels, read_mask
from urn.metrics import ConfusionMatrix


def read_id_list(path: Path) -> list[str]:
    """Ids from a split file, read by the one split parser (:func:`urn.data.layout.parse_split_file`)."""
    from urn.data.layout import parse_split_file

    ids, problems = parse_split_file(Path(path))
    if problems:
        raise DataError(path, problems[0])
    return ids


def score_mask_folders(
    pred_dir: Path,
    gt_dir: Path,
    *,
    ids_file: Path | None = None,
    classes_file: Path | None = None,
    json_out: Path | None = None,
) -> str:
    """Compare ``pred_dir/<id>.png`` with ``gt_dir/<id>.png`` over the ids and return the table text.

    The table ends with the line ``mIoU=XX.XX`` (percent, nanmean over class slots). Both folders hold
    single-channel PNGs of the same label space (GT may use 255 = ignore). Missing predictions are an
    error that lists them.
    """
    from urn.data.classes import read_classes_file, voc

    classes = read_classes_file(classes_file) if classes_file is not None else voc()
    for folder in (pred_dir, gt_dir):
        if not Path(folder).is_dir():
            raise DataError(folder, "folder not found")
    ids = read_id_list(ids_file) if ids_file is not None else sorted(p.stem for p in Path(gt_dir).glob("*.png"))
    if not ids:
        raise DataError(gt_dir, "no ground-truth PNG files")
    missing = [i for i in ids if not (Path(pred_dir) / f"{i}.png").is_file()]
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise UrnError(f"{pred_dir}: {len(missing)} predictions missing: {shown}")
    n = classes.num_classes
    cm = ConfusionMatrix(n)
    for image_id in ids:
        gt = classes.to_train(read_mask(Path(gt_dir) / f"{image_id}.png"))
        pred_path = Path(pred_dir) / f"{image_id}.png"
        pred = classes.to_train(read_mask(pred_path))
        if pred.shape != gt.shape:
            raise DataError(pred_path, f"size {pred.shape[::-1]} differs from ground truth {gt.shape[::-1]}")
        check_labels(pred, n, pred_path)
        cm.update_mask(gt, pred)
    if json_out is not None:
        result = cm.compute().as_dict(list(classes.names))
        result["images"] = len(ids)
        atomic_write_json(json_out, result)
    return cm.table(list(classes.names))
