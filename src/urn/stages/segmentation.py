"""Segmentation stages: train (Seg-1 / Seg-2), evaluate, predict.

Thin wiring around :mod:`urn.engine`: pick the schedule for the phase, build the model from the
config, load a checkpoint, write results.
"""

from __future__ import annotations

from pathlib import Path

import torch

from urn.config import Config
from urn.engine import distributed
from urn.engine.checkpoint import load_model_weights
from urn.io import atomic_write_json, atomic_write_text


def run_train(
    cfg: Config,
    out: Path,
    *,
    phase: str | None = None,
    resume: bool = False,
    restart: bool = False,
    device: str | None = None,
    quiet: bool = False,
) -> Path:
    """Train Seg-1 (``cfg.train``) or Seg-2 (``cfg.seg2``) into ``out``; returns ``out/last.pt``.

    A checkpoint already in ``out`` is resumed if it was trained with the same config, refused if not;
    ``restart`` deletes it first (:mod:`urn.engine.resume`).
    """
    from urn.engine.train import train_segmentor

    phase = phase or cfg.phase
    tcfg = cfg.seg2 if phase == "seg2" else cfg.train
    return train_segmentor(cfg, tcfg, Path(out), resume=resume, restart=restart, device=device, quiet=quiet)


def _load_model(cfg: Config, checkpoint: str | Path, num_classes: int, info) -> torch.nn.Module:
    from urn.models import build_segmentor

    model = build_segmentor(cfg.model, num_classes)
    load_model_weights(model, checkpoint)
    return model.to(info.device).eval()


def run_eval(
    cfg: Config,
    checkpoint: str | Path,
    *,
    split: str | None = None,
    out: Path | None = None,
    save_predictions: bool = False,
    device: str | None = None,
    quiet: bool = False,
) -> tuple[str, dict]:
    """Score ``checkpoint`` on a split with ``cfg.infer`` (MS/flip/CRF as configured).

    Returns:
        (the per-class table ending in ``mIoU=XX.XX``, the scores as a dict of percentages).
        With ``out``, also writes ``out/metrics.json`` (and ``out/predictions/`` if asked).
    """
    from urn.data.layout import DatasetLayout
    from urn.engine.evaluate import evaluate_segmentor, uses_crf

    info = distributed.setup(device)
    layout = DatasetLayout.open(cfg.data.root, cfg.data.layout, cfg.data.classes_file)
    split = split or cfg.data.val_split
    model = _load_model(cfg, checkpoint, layout.classes.num_classes, info)
    pred_dir = Path(out) / "predictions" if (out is not None and save_predictions) else None
    scores = evaluate_segmentor(model, layout, split, cfg, info, pred_dir=pred_dir, quiet=quiet)
    names = list(layout.classes.names)
    result = scores.as_dict(names)
    result.update(
        split=split,
        checkpoint=str(checkpoint),
        scales=list(cfg.infer.scales),
        flip=cfg.infer.flip,
        crf=uses_crf(cfg, cfg.infer),  # what ran: infer.crf and crf.enabled
        mode=cfg.infer.mode,
    )
    from urn.metrics import format_scores

    table = format_scores(scores, names)
    if out is not None and info.is_main:
        atomic_write_json(Path(out) / "metrics.json", result)
        atomic_write_text(Path(out) / "metrics.txt", table + "\n")
    return table, result


def run_predict(
    cfg: Config,
    checkpoint: str | Path,
    out: Path,
    *,
    split: str = "test",
    voc_server: bool = True,
    device: str | None = None,
    quiet: bool = False,
) -> Path:
    """Write palette PNG predictions for a split (and the VOC server tarball); returns the folder."""
    from urn.data.layout import DatasetLayout
    from urn.engine.evaluate import predict_split

    info = distributed.setup(device)
    layout = DatasetLayout.open(cfg.data.root, cfg.data.layout, cfg.data.classes_file)
    model = _load_model(cfg, checkpoint, layout.classes.num_classes, info)
    return predict_split(model, layout, split, cfg, info, Path(out), voc_server=voc_server, quiet=quiet)
