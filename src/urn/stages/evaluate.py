"""Stage ``evaluate``: Seg-1 and Seg-2 on val (MS + flip + CRF as configured), the pseudo-masks and
cyclic masks on train where it has ground truth, the label-free checks and notes, into
``RUN/metrics.json``; the gallery's artefacts for the report (:mod:`urn.stages.gallery`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from urn.config import Config, config_to_dict
from urn.engine import distributed
from urn.errors import DataError
from urn.io import atomic_write_json
from urn.stages.checks import COVERAGE_STAGES, diagnose, stage_coverage
from urn.stages.configs import stage_configs
from urn.stages.run_folder import stage_seconds


def run(cfg: Config, run_dir: Path, *, device: str | None = None, quiet: bool = False) -> Path:
    """Score Seg-1 and Seg-2 on val, the masks on train, write ``RUN/metrics.json`` and the gallery's
    artefacts; returns ``RUN/evaluate``."""
    from urn.data.layout import DatasetLayout
    from urn.stages.gallery import write_gallery
    from urn.stages.segmentation import run_eval
    from urn.stages.uncertainty_report import build_uncertainty_report

    configs = stage_configs(cfg, run_dir)
    cfg = configs["evaluate"]
    folder = run_dir / "evaluate"

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
            report = build_uncertainty_report(
                layout,
                cfg.data.train_split,
                run_dir / "uncertainty",
                folder / "uncertainty_report",
                weight_thresh=cfg.seg2.weight_thresh,
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
        coverage = {key: stage_coverage(configs, run_dir, st, quiet=quiet) for st, key in COVERAGE_STAGES.items()}
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
            "coverage": coverage,
            "seconds": stage_seconds(run_dir),
            "notes": notes + diagnose(miou, report, coverage),
            "config": config_to_dict(cfg),
        }
        atomic_write_json(run_dir / "metrics.json", metrics)
        write_gallery(cfg, run_dir, folder / "gallery", device=device)
    return folder
