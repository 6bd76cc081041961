"""Stage: pseudo-masks from CAMs (``urn pmm``).

Reads ``CAMS/<id>.npz`` (:mod:`urn.cam.infer`) and the image, and writes ``OUT/<id>.png``: a
VOC-palette PNG of raw label ids, as every mask on disk (:mod:`urn.data.classes`: COCO category ids,
VOC's indices; 0 = background; 255 only with ``pmm.low_confidence_ignore``, off by default as in the
reference). ``pmm.method``:

- ``pmm``: CVS + per-class two-label CRF (``pmm.crf_*``, the reference's PPMG CRF) + PPMG merging;
- ``threshold``: argmax over ``[pmm.bg_threshold, A_1..A_K]``;
- ``threshold_crf``: the same scores through one ``(K + 1)``-label CRF.

Resumable (readable outputs of the right size are kept, stale temps of this rank's ids swept),
sharded (``ids[rank::world]``), optionally over a process pool (``pmm.num_workers``). Never reads
ground truth.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing as mp
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from urn import io
from urn.cam.infer import read_cams, shard_env
from urn.cam.pmm import (
    MaskResult,
    bg_power_for_threshold,
    ignore_low_confidence,
    make_crf,
    otsu_threshold,
    pmm_mask,
    smoothed_foreground_values,
    threshold_crf_mask,
    threshold_mask,
)
from urn.config import Config, PMMConfig
from urn.data.layout import DatasetLayout
from urn.errors import DataError
from urn.progress import progress_bar

log = logging.getLogger(__name__)


def pseudo_mask(image: np.ndarray, classes: Sequence[int], cams: np.ndarray, cfg: PMMConfig) -> np.ndarray:
    """The ``(H, W)`` uint8 pseudo-mask of one image with the method and parameters of ``cfg``.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        classes: contiguous class indices of ``cams``.
        cams: ``(K, H, W)`` normalised CAMs.
    """
    crf = make_crf(cfg.crf, cfg.crf_backend)
    if cfg.method == "pmm" and cfg.bg_power == "auto":
        raise ValueError("pmm.bg_power='auto' is resolved over a whole split by run(); pass the chosen alpha")
    if image.shape[:2] != cams.shape[1:]:
        raise ValueError(f"CAM size {cams.shape[1:]} != image size {image.shape[:2]}")
    result: MaskResult
    if cfg.method == "pmm":
        result = pmm_mask(
            image, cams, classes, crf, cam_thresh=cfg.cam_thresh, cv_scale=cfg.cv_scale, bg_power=cfg.bg_power
        )
    elif cfg.method == "threshold":
        result = threshold_mask(cams, classes, cfg.bg_threshold)
    else:
        result = threshold_crf_mask(image, cams, classes, crf, cfg.bg_threshold)
    return ignore_low_confidence(result, cfg.low_confidence_ignore)


# ---------------------------------------------------------------------------------- label-free alpha
AUTO_ALPHA_MAX_IMAGES = 1000  # an even subsample bounds the pre-pass on VOC/COCO-sized splits
AUTO_ALPHA_FILE = "bg_power.json"


def auto_bg_power(layout: DatasetLayout, ids: Sequence[str], cams_dir: Path, cfg: PMMConfig) -> dict[str, float]:
    """``pmm.bg_power: auto``: alpha from the CAMs alone, never from masks (docs/cam.md).

    Pools the CVS-smoothed values above ``cam_thresh`` of every tagged class's CAM over (an even
    subsample of) ``ids``, takes their Otsu threshold tau, and returns the alpha with
    ``(1 - tau) ** alpha = tau``. Every rank computes the same value from the same files.

    Returns:
        ``{"bg_power": alpha, "otsu_threshold": tau, "images": n}``.
    """
    step = max(1, -(-len(ids) // AUTO_ALPHA_MAX_IMAGES))
    sample = list(ids)[::step]
    values = []
    for image_id in sample:
        _, cams = read_cams(Path(cams_dir) / f"{image_id}.npz", layout.classes.num_classes)
        values.append(smoothed_foreground_values(cams.astype(np.float32), cfg.cam_thresh, cfg.cv_scale))
    tau = otsu_threshold(np.concatenate(values) if values else np.zeros(0))
    return {"bg_power": bg_power_for_threshold(tau), "otsu_threshold": tau, "images": len(sample)}


# ------------------------------------------------------------------------------------------- stage
_WORKER: dict[str, object] = {}


def _init_worker(root: str, layout: str, classes_file: str | None, cfg: PMMConfig, cams_dir: Path, out: Path) -> None:
    _WORKER.update(layout=DatasetLayout.open(root, layout, classes_file), cfg=cfg, cams=cams_dir, out=out)  # type: ignore[arg-type]


def _make_one(image_id: str) -> bool:
    """Write one pseudo-mask unless a complete one exists. Returns whether it wrote."""
    layout: DatasetLayout = _WORKER["layout"]  # type: ignore[assignment]
    out_path = Path(_WORKER["out"]) / f"{image_id}.png"  # type: ignore[arg-type]
    size = layout.image_size(image_id)
    if io.mask_complete(out_path, size):
        return False
    cam_path = Path(_WORKER["cams"]) / f"{image_id}.npz"  # type: ignore[arg-type]
    classes, cams = read_cams(cam_path, layout.classes.num_classes)
    if tuple(cams.shape[1:]) != size:
        raise DataError(cam_path, f"CAM size {cams.shape[1:]} != image size {size}")
    image = layout.read_image(image_id)
    mask = pseudo_mask(image, classes.tolist(), cams.astype(np.float32), _WORKER["cfg"])  # type: ignore[arg-type]
    io.save_palette_png(out_path, layout.classes.to_raw(mask))  # raw ids on disk, as training reads them
    return True


def run(cfg: Config, cams_dir: Path, split: str, out: Path, *, quiet: bool = False) -> Path:
    """Write the pseudo-masks of ``split`` (this rank's share) to ``out``; returns ``out``.

    Raises:
        DataError: a CAM file is missing or malformed, or an image is unreadable.
    """
    rank, world, _ = shard_env()
    cams_dir, out = Path(cams_dir), Path(out)
    if not cams_dir.is_dir():
        raise DataError(cams_dir, "CAM folder not found (run `urn cam infer` first)")
    d = cfg.data
    layout = DatasetLayout.open(d.root, d.layout, d.classes_file)
    all_ids = layout.ids(split)
    ids = all_ids[rank::world]
    out.mkdir(parents=True, exist_ok=True)
    pmm_cfg, chosen = cfg.pmm, None
    if pmm_cfg.method == "pmm" and pmm_cfg.bg_power == "auto":
        chosen = auto_bg_power(layout, all_ids, cams_dir, pmm_cfg)
        pmm_cfg = dataclasses.replace(pmm_cfg, bg_power=chosen["bg_power"])
        log.info("pmm.bg_power=auto: Otsu threshold %.3f -> alpha %.3f", chosen["otsu_threshold"], chosen["bg_power"])
    masks = [f"{i}.png" for i in ids]
    # this rank's ids only; rank 0 also owns bg_power.json, whose write a kill may have torn
    io.remove_stale_temps_of(out, masks + ([AUTO_ALPHA_FILE] if rank == 0 else []))
    init = (d.root, d.layout, d.classes_file, pmm_cfg, cams_dir, out)
    bar = progress_bar(total=len(ids), desc=f"pmm {cfg.pmm.method} {split}", unit="img", disable=quiet or rank != 0)
    written = 0
    try:
        if cfg.pmm.num_workers > 0:
            # spawn: a forked copy of a process holding torch threads can deadlock
            with mp.get_context("spawn").Pool(cfg.pmm.num_workers, _init_worker, init) as pool:
                for wrote in pool.imap_unordered(_make_one, ids, chunksize=1):
                    written += wrote
                    bar.update(1)
        else:
            _init_worker(*init)
            for image_id in ids:
                written += _make_one(image_id)
                bar.update(1)
    except Exception:
        io.remove_stale_temps_of(out, masks)  # what workers stopped by the pool's terminate() were writing
        raise
    bar.close()
    if chosen is not None and rank == 0:  # the record of what made the masks, once they are all there
        io.atomic_write_json(out / AUTO_ALPHA_FILE, chosen)
    log.info("pmm %s: %d masks written, %d already complete", split, written, len(ids) - written)
    return out
