"""The evaluate stage's gallery artefacts: what the report shows beside each of the first val images.

For the first :data:`GALLERY_IMAGES` images of ``data.val_split`` it writes into ``OUT``:

- ``<id>_pseudo.png``: the PMM pseudo-mask, made the way the train split's were (the run's CAM
  classifier on the image's tags, then PMM with the run's background power); a palette PNG of training
  class indices. Absent when the run started from the user's own pseudo-masks (no classifier).
- ``<id>_uncertainty.png``: the response-scaling uncertainty of Seg-1's multi-scale + flip prediction
  (URN's step 3 on a val image), inferno colours. Absent with ``crf.enabled=false`` (no CRF, so no
  response scaling).
- ``gallery.json``: ``{"ids": [...]}``, the images in order.

The report (:mod:`urn.report`) only reads these files, the evaluate stage's predictions and the
dataset; it runs no model.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from urn.config import Config
from urn.data.layout import DatasetLayout
from urn.io import atomic_save_png, atomic_write_json, save_palette_png

GALLERY_IMAGES = 6
INDEX = "gallery.json"


def write_gallery(cfg: Config, run_dir: Path, out: Path, *, device: str | None = None) -> Path:
    """Write the gallery artefacts of ``run_dir``'s first val images to ``out``; returns ``out / INDEX``."""
    import torch
    from PIL import Image

    from urn.engine import distributed
    from urn.engine.checkpoint import load_segmentor
    from urn.engine.inference import predict_probs
    from urn.stages.uncertainty_report import heatmap
    from urn.uncertainty_core import response_scaling

    info = distributed.setup(device)
    layout = DatasetLayout.open(cfg.data.root, cfg.data.layout, cfg.data.classes_file)
    ids = layout.ids(cfg.data.val_split)[:GALLERY_IMAGES]
    seg1 = load_segmentor(cfg.model, layout.classes.num_classes, run_dir / "seg1" / "last.pt", info.device)
    pseudo_masker = _val_pseudo_masker(cfg, run_dir, layout)
    out.mkdir(parents=True, exist_ok=True)
    for image_id in ids:
        image = layout.read_image(image_id)
        if cfg.crf.enabled:
            with torch.no_grad():
                probs = predict_probs(seg1, image, cfg.infer, info.device)
            result = response_scaling(
                image,
                probs,
                exponents=cfg.uncertainty.exponents,
                params=cfg.crf,
                backend=cfg.crf.backend,
            )
            atomic_save_png(out / f"{image_id}_uncertainty.png", Image.fromarray(heatmap(result.uncertainty)))
        if pseudo_masker is not None:
            save_palette_png(out / f"{image_id}_pseudo.png", pseudo_masker(image_id, image))
    index = out / INDEX
    atomic_write_json(index, {"ids": ids})
    return index


def _val_pseudo_masker(
    cfg: Config, run_dir: Path, layout: DatasetLayout
) -> Callable[[str, np.ndarray], np.ndarray] | None:
    """A function (id, image) -> PMM pseudo-mask from this run's CAM classifier (None with user masks).

    Val images have no pseudo-masks on disk; the gallery makes them the same way the train split's
    were made (CAMs of the tagged classes, then PMM), so the columns compare like with like.
    """
    from urn.cam.infer import compute_cams, load_classifier
    from urn.cam.make_masks import AUTO_ALPHA_FILE, pseudo_mask
    from urn.cam.train import classifier_checkpoint

    ckpt = classifier_checkpoint(run_dir / "cam_train")
    if not ckpt.is_file():  # the run started from the user's own pseudo-masks: no classifier made them
        return None

    net, _ = load_classifier(ckpt)
    tags = layout.image_labels()
    pmm_cfg = cfg.pmm
    if pmm_cfg.method == "pmm" and pmm_cfg.bg_power == "auto":  # the alpha the train split's masks were made with
        chosen = json.loads((run_dir / "pseudo_masks" / "masks" / AUTO_ALPHA_FILE).read_text(encoding="utf-8"))
        pmm_cfg = dataclasses.replace(pmm_cfg, bg_power=float(chosen["bg_power"]))

    def make(image_id: str, image: np.ndarray) -> np.ndarray:
        classes = tags.get(image_id, ())
        return pseudo_mask(image, classes, compute_cams(net, image, classes, cfg.cam), pmm_cfg)

    return make
