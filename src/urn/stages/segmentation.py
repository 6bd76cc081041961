"""Segmentation stages: train (Seg-1 / Seg-2), evaluate, predict.

Thin wiring around :mod:`urn.engine`: pick the schedule for the phase, build the model from the
config, load a checkpoint, write results.
"""

from __future__ import annotations

import gzip
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING

from urn.config import Config
from urn.engine import distributed
from urn.engine.checkpoint import load_segmentor
from urn.io import atomic_open, atomic_write_json, atomic_write_text, remove_stale_temps_of

if TYPE_CHECKING:
    from urn.data.layout import DatasetLayout
    from urn.engine.distributed import DistInfo
    from urn.models import Segmentor

#: The PASCAL VOC evaluation server's layout for segmentation results (competition 6: outside data allowed).
VOC_SERVER_DIR = Path("results/VOC2012/Segmentation/comp6_test_cls")
TARBALL = "results.tar.gz"


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
    from urn.data.dataset import SegmentationDataset
    from urn.data.layout import DatasetLayout
    from urn.data.transforms import train_transforms
    from urn.engine.train import train_segmentor

    phase = phase or cfg.phase
    tcfg = cfg.seg2 if phase == "seg2" else cfg.train
    distributed.setup(device)  # a device or world that cannot be used is the first thing said
    layout = DatasetLayout.open(cfg.data.root, cfg.data.layout, cfg.data.classes_file)
    # Seg-1 learns the pseudo-masks (or the ground truth with data.fully_supervised), Seg-2 the cyclic
    # masks with their uncertainty as per-pixel loss weights
    dataset = SegmentationDataset(
        layout,
        cfg.data.train_split,
        target_dir=cfg.data.pseudo_masks,
        uncertainty_dir=cfg.data.uncertainty,
        fully_supervised=cfg.data.fully_supervised,
        transform=train_transforms(cfg.data),
        seed=tcfg.seed,
    )
    # URN's weighting without weights would train Seg-2 as plain cross-entropy: refuse before anything runs
    dataset.require_weights(tcfg.weighting, "seg2" if phase == "seg2" else "train")
    inputs = {"target_dir": cfg.data.pseudo_masks, "uncertainty_dir": cfg.data.uncertainty}
    return train_segmentor(
        cfg,
        tcfg,
        Path(out),
        dataset=dataset,
        layout=layout,
        inputs=inputs,
        resume=resume,
        restart=restart,
        device=device,
        quiet=quiet,
    )


def _open_model(cfg: Config, checkpoint: str | Path, device: str | None) -> tuple[DistInfo, DatasetLayout, Segmentor]:
    """The process's distributed info, the dataset, and the segmentor of ``checkpoint`` in eval mode."""
    from urn.data.layout import DatasetLayout

    info = distributed.setup(device)
    layout = DatasetLayout.open(cfg.data.root, cfg.data.layout, cfg.data.classes_file)
    return info, layout, load_segmentor(cfg.model, layout.classes.num_classes, checkpoint, info.device)


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
    from urn.engine.evaluate import evaluate_segmentor, uses_crf
    from urn.metrics import format_scores

    info, layout, model = _open_model(cfg, checkpoint, device)
    split = split or cfg.data.val_split
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
    """Write palette PNG predictions of a split into ``out/predictions``; returns that folder.

    With ``voc_server``, the PNGs go to ``out/results/VOC2012/Segmentation/comp6_test_cls/`` and
    ``out/results.tar.gz`` is packed for the PASCAL VOC evaluation server (reproducible bytes).
    """
    from urn.engine.evaluate import predict_split

    info, layout, model = _open_model(cfg, checkpoint, device)
    out = Path(out)
    if voc_server and info.is_main:
        remove_stale_temps_of(out, [TARBALL])  # an archive a killed run was packing
    target = predict_split(
        model, layout, split, cfg, info, out / (VOC_SERVER_DIR if voc_server else "predictions"), quiet=quiet
    )
    if voc_server and info.is_main:
        write_tarball(out / TARBALL, out / "results", "results")
    distributed.barrier()
    return target


def write_tarball(path: Path, folder: Path, arcname: str) -> None:
    """Pack ``folder`` as ``arcname`` into the gzipped tar ``path``, atomically and reproducibly.

    The bytes depend only on the files' names and contents (sorted members, no timestamps, owners
    or permissions of this machine), so a resumed run writes the same archive as an uninterrupted one.
    """

    def plain(member: tarfile.TarInfo) -> tarfile.TarInfo:
        member.mtime, member.uid, member.gid, member.uname, member.gname = 0, 0, 0, "", ""
        member.mode = 0o755 if member.isdir() else 0o644
        return member

    with (
        atomic_open(path, "wb") as fh,
        gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w") as tar,
    ):
        tar.add(folder, arcname=arcname, filter=plain)
