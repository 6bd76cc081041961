"""``urn uncertainty``: cyclic pseudo-masks and per-pixel uncertainty by response scaling (URN).

For each image of the split (spec section 3): 12-view softmax probabilities from the Seg-1
checkpoint (or a user's own ``<id>.npy`` probability maps from any WSSS method, ``--probs``), the
base dense CRF (argmax = the cyclic pseudo-mask), then the CRF re-run with each present class's
response raised to each exponent; U = max over classes of the variance of the binary maps,
normalised per image. Outputs, written atomically::

    OUT/masks/<id>.png           cyclic pseudo-mask, palette PNG of raw label ids (COCO category ids)
    OUT/uncertainty/<id>.npy     normalised uncertainty U, float16 (H, W) in [0, 1]; weight = 1 - U
    OUT/reference/<id>.png       (--reference-format) the reference's 3-channel file, see below
    OUT/summary.json             images done, timing per image (forward vs CRF)

The reference file is what its ``cv2.imwrite([label, w, w])`` leaves on disk: an RGB reader sees
R = G = w = uint8((1 - U) * 255) and B = label. Labels on disk are raw ids, as in every mask file
(:mod:`urn.data.classes`), so Seg-2 reads both files as it reads any pseudo-mask. Resumable
(complete outputs are skipped, a killed process leaves no partial file) and sharded over
``torchrun`` ranks.
"""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from urn.config import Config
from urn.engine import distributed
from urn.errors import DataError, UrnError
from urn.io import (
    atomic_save_npy,
    atomic_save_png,
    atomic_write_json,
    load_npy,
    read_mask,
    remove_stale_temps,
    save_palette_png,
)
from urn.progress import progress_bar
from urn.stages.configs import stage_configs

MASKS, UNCERTAINTY, REFERENCE = "masks", "uncertainty", "reference"
CRF_REQUIRED = (
    "crf.enabled=false, but URN's uncertainty is the dense CRF's response to scaled class scores "
    "(spec section 3): the uncertainty stage cannot run without it; set crf.enabled=true "
    "(infer.crf=false or `urn eval --no-crf` leave the CRF out of evaluation only)"
)


def output_complete(out: Path, image_id: str, reference_format: bool) -> bool:
    """True when every output of ``image_id`` exists and decodes (the mask is written last)."""
    try:
        read_mask(out / MASKS / f"{image_id}.png")
        u = load_npy(out / UNCERTAINTY / f"{image_id}.npy")
        if reference_format:
            from PIL import Image

            with Image.open(out / REFERENCE / f"{image_id}.png") as im:
                im.load()
    except (DataError, OSError):
        return False
    return u.ndim == 2


def load_probability_map(path: Path, num_classes: int, size: tuple[int, int]) -> np.ndarray:
    """Read a user's ``(C, H, W)`` probability map and check it.

    Raises:
        DataError: wrong shape or class count, NaN/inf, negative values, or rows not summing to 1.
    """
    probs = load_npy(path)
    if probs.ndim != 3 or probs.shape[0] != num_classes or probs.shape[1:] != size:
        raise DataError(
            path, f"probability map has shape {probs.shape}, expected ({num_classes}, {size[0]}, {size[1]})"
        )
    probs = probs.astype(np.float32)
    if not np.isfinite(probs).all():
        raise DataError(path, "probability map contains NaN or inf")
    if probs.min() < 0:
        raise DataError(path, "probability map has negative values")
    sums = probs.sum(0)
    if np.abs(sums - 1).max() > 1e-2:
        raise DataError(
            path, f"probabilities must sum to 1 over classes (found sums {sums.min():.3f}..{sums.max():.3f})"
        )
    return probs


def run_uncertainty(
    cfg: Config,
    out: Path,
    *,
    checkpoint: str | Path | None = None,
    probs_dir: str | Path | None = None,
    limit: int | None = None,
    device: str | None = None,
    quiet: bool = False,
) -> Path:
    """Write cyclic masks and uncertainty maps for ``cfg.uncertainty.split``. Returns ``out``."""
    import torch
    from PIL import Image

    from urn.data.layout import DatasetLayout, read_target, resolve_dir
    from urn.engine.inference import predict_probs
    from urn.uncertainty_core import reference_png_array, response_scaling

    if (checkpoint is None) == (probs_dir is None):
        raise UrnError("give exactly one of --checkpoint (a Seg-1 model) or --probs (a folder of <id>.npy maps)")
    if not cfg.crf.enabled:
        raise UrnError(CRF_REQUIRED)
    ucfg = cfg.uncertainty
    info = distributed.setup(device)
    out = Path(out)
    layout = DatasetLayout.open(cfg.data.root, cfg.data.layout, cfg.data.classes_file)
    classes = layout.classes
    ids = layout.ids(ucfg.split)
    if limit is not None:
        ids = ids[:limit]
    if info.is_main:
        for sub in (MASKS, UNCERTAINTY, REFERENCE):
            remove_stale_temps(out / sub)
    distributed.barrier()
    mine = distributed.shard(ids, info)
    todo = [i for i in mine if not output_complete(out, i, ucfg.reference_format)]
    tags = layout.image_labels() if ucfg.restrict_to_tags else {}
    if ucfg.keep_original_mask and not cfg.data.pseudo_masks:
        raise UrnError("uncertainty.keep_original_mask needs data.pseudo_masks (the masks to keep)")
    kept_dir = resolve_dir(cfg.data.pseudo_masks, layout, "pseudo-mask") if ucfg.keep_original_mask else None

    model = None
    if checkpoint is not None:
        from urn.engine.checkpoint import load_segmentor

        model = load_segmentor(cfg.model, classes.num_classes, checkpoint, info.device)
    params = cfg.crf

    def load(image_id: str) -> tuple[np.ndarray, Any]:
        image = layout.read_image(image_id)
        probs = None
        if probs_dir is not None:
            probs = load_probability_map(Path(probs_dir) / f"{image_id}.npy", classes.num_classes, image.shape[:2])
        return image, probs

    t_forward = t_crf = 0.0
    bar = progress_bar(
        total=len(mine),
        initial=len(mine) - len(todo),
        desc="uncertainty",
        unit="img",
        disable=quiet or not info.is_main,
    )
    # Read the next image on a thread while this one computes (decoding is I/O + C code, no GIL).
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(load, todo[0]) if todo else None
        for n, image_id in enumerate(todo):
            assert pending is not None
            image, probs = pending.result()
            pending = pool.submit(load, todo[n + 1]) if n + 1 < len(todo) else None
            t0 = time.perf_counter()
            if probs is None:
                with torch.no_grad():
                    probs = predict_probs(model, image, cfg.infer, info.device, amp=cfg.train.amp)
            t1 = time.perf_counter()
            allowed = {0, *tags.get(image_id, ())} if ucfg.restrict_to_tags else None
            try:
                result = response_scaling(
                    image,
                    probs,
                    exponents=ucfg.exponents,
                    params=params,
                    backend=cfg.crf.backend,
                    allowed_classes=allowed,
                )
            except ValueError as exc:
                raise DataError(Path(probs_dir or cfg.data.root) / image_id, str(exc)) from None
            t2 = time.perf_counter()
            t_forward += t1 - t0
            t_crf += t2 - t1
            mask = result.cyclic_mask
            if ucfg.keep_original_mask:
                mask, _ = read_target(kept_dir / f"{image_id}.png", layout)  # type: ignore[operator]
            raw = classes.to_raw(mask)  # files hold raw ids; training maps them back (read_target)
            atomic_save_npy(out / UNCERTAINTY / f"{image_id}.npy", result.uncertainty.astype(np.float16))
            if ucfg.reference_format:
                reference = reference_png_array(raw, result.uncertainty)[..., ::-1].copy()
                atomic_save_png(out / REFERENCE / f"{image_id}.png", Image.fromarray(reference))
            # The mask goes last: its presence marks the image as complete for a resumed run.
            save_palette_png(out / MASKS / f"{image_id}.png", raw)
            bar.update(1)
    bar.close()
    done = len(todo)
    if info.is_main:
        atomic_write_json(
            out / "summary.json",
            {
                "split": ucfg.split,
                "images": len(ids),
                "computed_by_rank0": done,
                "exponents": list(ucfg.exponents),
                "source": "checkpoint" if checkpoint is not None else "probs",
                "seconds_per_image": {
                    "forward": t_forward / done if done else None,
                    "crf": t_crf / done if done else None,
                },
                "crf_backend": cfg.crf.backend,
            },
        )
    distributed.barrier()
    return out


def run(cfg: Config, run_dir: Path, *, device: str | None = None, quiet: bool = False) -> Path:
    """Stage ``uncertainty`` of ``urn run``: the cyclic masks and uncertainty of the training split from
    Seg-1 (``RUN/uncertainty``); returns that folder."""
    seg1 = stage_configs(cfg, run_dir)["uncertainty"]
    ucfg = dataclasses.replace(seg1, uncertainty=dataclasses.replace(seg1.uncertainty, split=seg1.data.train_split))
    folder = run_dir / "uncertainty"
    run_uncertainty(ucfg, folder, checkpoint=run_dir / "seg1" / "last.pt", device=device, quiet=quiet)
    return folder
