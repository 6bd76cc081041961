"""``urn run``: the whole pipeline, one folder per stage, resumable.

Stages, in order (each writes into ``RUN_DIR/<stage>/`` and ends by writing ``DONE.json``, which
holds the stage's resolved config and wall time)::

    cam_train     multi-label CAM classifier on image-level labels        (skipped with user masks)
    cams          CAMs of the training split                                (skipped with user masks)
    pseudo_masks  PMM pseudo-masks (CVS + per-class CRF + PPMG)            (skipped with user masks)
    seg1          PSPNet on the pseudo-masks with PUS
    uncertainty   cyclic masks + uncertainty by response scaling
    seg2          PSPNet on the cyclic masks, uncertainty-weighted loss
    evaluate      Seg-1 / Seg-2 on val (MS + flip + CRF as configured), pseudo-mask quality on train
    report        report.html

A rerun skips stages with a ``DONE.json`` and resumes an interrupted one (every stage resumes
itself: training from ``last.pt``, per-image stages by skipping complete files). Ground truth is
read only by ``evaluate`` and ``report``; if the training split's ground truth is missing, the
pseudo-mask scores are left out (null) and the pipeline still runs. ``RUN_DIR/metrics.json`` holds
``miou`` (percentages: ``pseudo_masks``, ``cyclic_masks`` on train; ``seg1``, ``seg2`` on val),
``seconds`` per stage and the resolved config.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

from urn.config import Config, config_to_dict
from urn.engine import distributed
from urn.errors import DataError, UrnError
from urn.io import atomic_write_json

STAGES = ("cam_train", "cams", "pseudo_masks", "seg1", "uncertainty", "seg2", "evaluate", "report")
CAM_STAGES = ("cam_train", "cams", "pseudo_masks")
DONE = "DONE.json"


def stage_configs(cfg: Config, run_dir: Path) -> dict[str, Config]:
    """The resolved config of every stage: later stages read earlier stages' folders."""
    user_masks = cfg.data.pseudo_masks
    masks = user_masks or str(run_dir / "pseudo_masks" / "masks")
    seg1 = copy.deepcopy(cfg)
    seg1.data.pseudo_masks = masks
    seg1.data.uncertainty = None
    seg2 = copy.deepcopy(cfg)
    seg2.data.pseudo_masks = str(run_dir / "uncertainty" / "masks")
    seg2.data.uncertainty = str(run_dir / "uncertainty" / "uncertainty")
    return {
        "cam_train": cfg,
        "cams": cfg,
        "pseudo_masks": cfg,
        "seg1": seg1,
        "uncertainty": seg1,
        "seg2": seg2,
        "evaluate": seg2,
        "report": seg2,
    }


def run_pipeline(
    cfg: Config,
    run_dir: Path,
    *,
    from_stage: str | None = None,
    until_stage: str | None = None,
    device: str | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Run (or resume) the pipeline into ``run_dir``; returns the content of ``metrics.json``."""
    for name in (from_stage, until_stage):
        if name is not None and name not in STAGES:
            raise UrnError(f"unknown stage {name!r} (stages: {', '.join(STAGES)})")
    run_dir = Path(run_dir)
    info = distributed.setup(device)
    configs = stage_configs(cfg, run_dir)
    use_cam = cfg.data.pseudo_masks is None
    if not use_cam and not Path(cfg.data.pseudo_masks).is_dir():
        raise DataError(cfg.data.pseudo_masks, "pseudo-mask folder not found (data.pseudo_masks)")
    first = STAGES.index(from_stage) if from_stage else 0
    last = STAGES.index(until_stage) if until_stage else len(STAGES) - 1
    for stage in STAGES[:first]:
        if not (stage in CAM_STAGES and not use_cam) and not (run_dir / stage / DONE).is_file():
            raise UrnError(f"--from {from_stage}: earlier stage {stage!r} is not complete in {run_dir}")
    for stage in STAGES[first : last + 1]:
        if stage in CAM_STAGES and not use_cam:
            continue
        folder = run_dir / stage
        if (folder / DONE).is_file():
            continue
        if info.is_main and not quiet:
            print(f"[urn run] stage {stage}", flush=True)
        t0 = time.perf_counter()
        _RUNNERS[stage](configs, run_dir, folder, device, quiet)
        distributed.barrier()
        if info.is_main:
            atomic_write_json(
                folder / DONE,
                {
                    "stage": stage,
                    "seconds": time.perf_counter() - t0,
                    "config": config_to_dict(configs[stage]),
                },
            )
    return read_metrics(run_dir) if (run_dir / "metrics.json").is_file() else {}


def read_metrics(run_dir: Path) -> dict[str, Any]:
    """The run's ``metrics.json`` as a dict."""
    return json.loads((Path(run_dir) / "metrics.json").read_text(encoding="utf-8"))


def stage_seconds(run_dir: Path) -> dict[str, float]:
    """Wall time of every completed stage, from the ``DONE.json`` markers."""
    out = {}
    for stage in STAGES:
        marker = Path(run_dir) / stage / DONE
        if marker.is_file():
            out[stage] = round(json.loads(marker.read_text(encoding="utf-8"))["seconds"], 2)
    return out


# ------------------------------------------------------------------------------------------ runners
def _cam_train(configs: dict[str, Config], run_dir: Path, folder: Path, device: str | None, quiet: bool) -> None:
    cfg = configs["cam_train"]
    from urn.cam.train import run as train_cam

    train_cam(cfg, folder, resume=True)


def _cams(configs: dict[str, Config], run_dir: Path, folder: Path, device: str | None, quiet: bool) -> None:
    cfg = configs["cams"]
    from urn.cam.infer import run as infer_cams
    from urn.cam.train import CHECKPOINT

    infer_cams(cfg, run_dir / "cam_train" / CHECKPOINT, cfg.data.train_split, folder)


def _pseudo_masks(configs: dict[str, Config], run_dir: Path, folder: Path, device: str | None, quiet: bool) -> None:
    cfg = configs["pseudo_masks"]
    from urn.cam.make_masks import run as make_masks

    make_masks(cfg, run_dir / "cams", cfg.data.train_split, folder / "masks")


def _seg1(configs: dict[str, Config], run_dir: Path, folder: Path, device: str | None, quiet: bool) -> None:
    cfg = configs["seg1"]
    from urn.stages.segmentation import run_train

    run_train(cfg, folder, phase="seg1", resume=True, device=device, quiet=quiet)


def _uncertainty(configs: dict[str, Config], run_dir: Path, folder: Path, device: str | None, quiet: bool) -> None:
    cfg = configs["uncertainty"]
    from urn.stages.uncertainty import run_uncertainty

    ucfg = copy.deepcopy(cfg)
    ucfg.uncertainty.split = cfg.data.train_split
    run_uncertainty(ucfg, folder, checkpoint=run_dir / "seg1" / "last.pt", device=device, quiet=quiet)


def _seg2(configs: dict[str, Config], run_dir: Path, folder: Path, device: str | None, quiet: bool) -> None:
    cfg = configs["seg2"]
    from urn.stages.segmentation import run_train

    run_train(cfg, folder, phase="seg2", resume=True, device=device, quiet=quiet)


def _evaluate(configs: dict[str, Config], run_dir: Path, folder: Path, device: str | None, quiet: bool) -> None:
    cfg = configs["evaluate"]
    from urn.data.layout import DatasetLayout
    from urn.stages.segmentation import run_eval

    info = distributed.setup(device)
    layout = DatasetLayout.open(cfg.data.root, cfg.data.layout, cfg.data.classes_file)
    miou: dict[str, float | None] = {}
    per_class: dict[str, Any] = {}
    for phase in ("seg1", "seg2"):
        _, result = run_eval(
            cfg,
            run_dir / phase / "last.pt",
            split=cfg.data.val_split,
            out=folder / phase,
            save_predictions=True,
            device=device,
            quiet=quiet,
        )
        miou[phase] = result["miou"]
        per_class[phase] = result["iou"]
    notes = []
    pseudo_dir = Path(configs["seg1"].data.pseudo_masks)  # type: ignore[arg-type]
    report = None
    if info.is_main:
        try:
            from urn.stages.uncertainty_report import build_uncertainty_report

            report = build_uncertainty_report(
                layout,
                cfg.data.train_split,
                run_dir / "uncertainty",
                folder / "uncertainty_report",
                pseudo_mask_dir=pseudo_dir,
                quiet=quiet,
            )
            miou["pseudo_masks"] = report["miou_pseudo_masks"]
            miou["cyclic_masks"] = report["miou_cyclic"]
        except DataError as exc:
            # Weak supervision: the training split may have no ground truth at all. Scores that
            # need it are left out rather than failing the run.
            notes.append(f"pseudo-mask scores skipped: {exc}")
            miou["pseudo_masks"] = miou["cyclic_masks"] = None
        metrics = {
            "miou": {k: miou.get(k) for k in ("pseudo_masks", "cyclic_masks", "seg1", "seg2")},
            "per_class_iou": per_class,
            "uncertainty": None
            if report is None
            else {
                k: report[k]
                for k in (
                    "auroc",
                    "average_precision",
                    "wrong_pixels_downweighted_by_hard",
                    "foreground_downweighted_by_hard",
                    "background_downweighted_by_hard",
                    "wrong_pixel_rate",
                )
            },
            "seconds": stage_seconds(run_dir),
            "notes": notes + diagnose(miou, report),
            "config": config_to_dict(cfg),
        }
        atomic_write_json(run_dir / "metrics.json", metrics)


def diagnose(miou: dict[str, float | None], uncertainty: dict[str, Any] | None) -> list[str]:
    """Plain-language notes on the two premises URN's gain rests on, when a run breaks them.

    Args:
        miou: percentages under ``pseudo_masks``, ``cyclic_masks``, ``seg1``, ``seg2`` (``None`` if unscored).
        uncertainty: the uncertainty report (``foreground_downweighted_by_hard``,
            ``background_downweighted_by_hard`` as fractions), or ``None``.

    Returns:
        One sentence per broken premise, and one if Seg-2 scores below Seg-1; empty when all is well.
    """
    notes = []
    pseudo, cyclic, seg1, seg2 = (miou.get(k) for k in ("pseudo_masks", "cyclic_masks", "seg1", "seg2"))
    if pseudo is not None and cyclic is not None and cyclic < pseudo:
        notes.append(
            f"The cyclic masks ({cyclic:.1f}) score below the pseudo-masks Seg-1 learned from ({pseudo:.1f}): "
            "Seg-1 does not fit and denoise them (too few iterations or too small a model?), so Seg-2 learns "
            "from worse targets."
        )
    if uncertainty is not None:
        fg, bg = uncertainty.get("foreground_downweighted_by_hard"), uncertainty.get("background_downweighted_by_hard")
        if fg is not None and bg is not None and fg >= 0.2 and fg > 3 * bg:
            notes.append(
                f"The hard weighting mutes {100 * fg:.0f}% of the cyclic masks' foreground pixels against "
                f"{100 * bg:.0f}% of background: Seg-1 is uncertain about whole objects rather than about their "
                "noisy pixels, and Seg-2 will under-learn the objects."
            )
    if seg1 is not None and seg2 is not None and seg2 < seg1:
        notes.append(
            f"Seg-2 ({seg2:.1f}) scores below Seg-1 ({seg1:.1f}); docs/pipeline.md ('The demo') walks through "
            "how to tell why."
        )
    return notes


def _report(configs: dict[str, Config], run_dir: Path, folder: Path, device: str | None, quiet: bool) -> None:
    cfg = configs["report"]
    from urn.report import write_report

    info = distributed.setup(device)
    if info.is_main:
        metrics = read_metrics(run_dir)
        metrics["seconds"] = stage_seconds(run_dir)
        atomic_write_json(run_dir / "metrics.json", metrics)
        write_report(cfg, run_dir, device=device)


_RUNNERS = {
    "cam_train": _cam_train,
    "cams": _cams,
    "pseudo_masks": _pseudo_masks,
    "seg1": _seg1,
    "uncertainty": _uncertainty,
    "seg2": _seg2,
    "evaluate": _evaluate,
    "report": _report,
}
