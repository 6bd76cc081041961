"""``urn run``: the whole pipeline, one folder per stage, resumable.

Stages, in order (each writes into ``RUN_DIR/<stage>/`` and ends by writing ``DONE.json``, which
holds the stage's resolved config and wall time)::

    heat_train    PMM's stage-1 classifier (cam.heat_stage; VOC: WRN-38)     (only with cam.heat_stage)
    heat_maps     its CAMs and CRF heat maps of the training split          (only with cam.heat_stage)
    cam_train     multi-label CAM classifier on image-level labels        (skipped with user masks)
    cams          CAMs of the training split                                (skipped with user masks)
    pseudo_masks  PMM pseudo-masks (CVS + per-class CRF + PPMG)            (skipped with user masks)
    seg1          PSPNet on the pseudo-masks with PUS
    uncertainty   cyclic masks + uncertainty by response scaling
    seg2          PSPNet on the cyclic masks, uncertainty-weighted loss
    evaluate      Seg-1 / Seg-2 on val (MS + flip + CRF as configured), pseudo-mask quality on train
    export        Seg-2 on data.test_split in the VOC server layout + results.tar.gz (when the split exists)
    report        report.html

A rerun skips stages with a ``DONE.json`` and resumes an interrupted one (every stage resumes
itself: training from ``last.pt``, per-image stages by skipping complete files), provided the stage
was made with the same config keys it reads (:data:`STAGE_READS`; recorded in ``DONE.json``, and in
``STARTED.json`` while it runs). A stage made with other values stops the run before anything runs,
with one line naming the key; ``recompute`` deletes that stage and every later one instead. Running
a stage first deletes the later stages' folders and ``metrics.json`` / ``report.html``: they were
made from the stage's earlier output, so a run never mixes old and new results. Ground truth is
read only by ``evaluate`` and ``report``; if the training split's ground truth is missing, the
pseudo-mask scores are left out (null) and the pipeline still runs. ``RUN_DIR/metrics.json`` holds
``miou`` (percentages: ``pseudo_masks``, ``cyclic_masks`` on train; ``seg1``, ``seg2`` on val),
``seconds`` per stage, the resolved config, ``coverage`` and ``notes``.

Label-free checks: after ``pseudo_masks`` and after ``uncertainty`` (whose cyclic masks are Seg-1's
train predictions + CRF), :func:`check_coverage` compares the masks with the image-level tags
(:mod:`urn.coverage`; no ground truth), writes ``RUN_DIR/<stage>/coverage.json``, prints one line and,
when most tagged objects are gone, a warning on stderr before the next network trains on the masks.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from urn.config import Config, config_to_dict
from urn.coverage import mask_coverage, summary_line
from urn.engine import distributed
from urn.engine import resume as resume_policy
from urn.errors import DataError, UrnError
from urn.io import atomic_write_json
from urn.stages.order import CAM_STAGES, HEAT_STAGES, STAGES

DONE = "DONE.json"
STARTED = "STARTED.json"
#: Files of the run folder and the stage that makes each: deleted whenever that stage or an earlier one runs anew.
RUN_FILES = {"metrics.json": "evaluate", "report.html": "report"}
#: The config sections / dotted keys each stage reads itself (what earlier stages read reaches it
#: through their outputs: a change there redoes them and so every stage after them).
STAGE_READS: dict[str, tuple[str, ...]] = {
    "heat_train": ("data.root", "data.layout", "data.classes_file", "data.train_split", "cam"),
    "heat_maps": ("cam",),
    "cam_train": ("data.root", "data.layout", "data.classes_file", "data.train_split", "cam"),
    "cams": ("cam",),
    "pseudo_masks": ("pmm",),
    "seg1": ("data", "model", "train"),
    "uncertainty": ("uncertainty", "infer", "crf"),
    "seg2": ("seg2",),
    "evaluate": ("data.val_split", "infer", "crf"),
    "export": ("data.test_split", "infer", "crf"),
    "report": (),
}
#: Keys under those that do not change a stage's output (logging, checkpoints, workers, batching of
#: same-result forwards; the uncertainty stage's split is set by the pipeline, Seg-1 never reads val).
STAGE_IGNORES: dict[str, tuple[str, ...]] = {
    "seg1": ("data.val_split", "data.test_split"),
    "uncertainty": ("uncertainty.split",),
}
IGNORED_NAMES = frozenset(
    {"log_every", "ckpt_every", "val_every", "num_workers", "eval_val", "batch_views", "heat_alpha"}
)
COVERAGE = "coverage.json"
#: The stages whose masks the label-free check reads, and their key in ``metrics.json["coverage"]``.
COVERAGE_STAGES = {"pseudo_masks": "pseudo_masks", "uncertainty": "cyclic_masks"}
#: A tagged class is missing from the mask in at least this share of (image, tag) pairs: the stage
#: lost most of its objects. Healthy masks miss a tag only where its object is tiny, occluded or
#: missed by the CAM, a minority of pairs; from half on, the next network sees mostly background
#: where objects were promised and learns to predict background. The point is a collapse, not
#: noise, so the bar is "most", not a tuned value.
COLLAPSE_MISSING_TAG_RATE = 0.5


def heat_stage_config(cfg: Config) -> Config | None:
    """The stage-1 classifier's config (``cam.heat_stage``) on the run's dataset, or ``None``."""
    if not cfg.cam.heat_stage or cfg.data.pseudo_masks is not None:
        return None
    from urn.config import load_config

    heat = load_config(cfg.cam.heat_stage)
    # the run's dataset, whatever the stage-1 preset was written for
    return dataclasses.replace(heat, data=cfg.data, cam=dataclasses.replace(heat.cam, heat_stage=None, heat_dir=None))


def stage_configs(cfg: Config, run_dir: Path) -> dict[str, Config]:
    """The resolved config of every stage: later stages read earlier stages' folders."""
    heat = heat_stage_config(cfg)
    cam = cfg
    if heat is not None:  # the classifier trains on tiles guided by the stage-1 heat maps
        cam = dataclasses.replace(cfg, cam=dataclasses.replace(cfg.cam, heat_dir=str(run_dir / "heat_maps" / "heat")))
    masks = cfg.data.pseudo_masks or str(run_dir / "pseudo_masks" / "masks")
    seg1 = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, pseudo_masks=masks, uncertainty=None))
    seg2_data = dataclasses.replace(
        cfg.data,
        pseudo_masks=str(run_dir / "uncertainty" / "masks"),
        uncertainty=str(run_dir / "uncertainty" / "uncertainty"),
    )
    seg2 = dataclasses.replace(cfg, data=seg2_data)
    return {
        "heat_train": heat or cfg,
        "heat_maps": heat or cfg,
        "cam_train": cam,
        "cams": cam,
        "pseudo_masks": cfg,
        "seg1": seg1,
        "uncertainty": seg1,
        "seg2": seg2,
        "evaluate": seg2,
        "export": seg2,
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
    recompute: bool = False,
) -> dict[str, Any]:
    """Run (or resume) the pipeline into ``run_dir``; returns the content of ``metrics.json``.

    Args:
        recompute: a stage made with other values of the keys it reads is deleted with every later
            stage and run again (without it, such a stage stops the run with one line).
    """
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
    _check_records(configs, run_dir, recompute=recompute, is_main=info.is_main)
    if not cfg.crf.enabled and "uncertainty" in STAGES[first : last + 1]:
        from urn.stages.uncertainty import CRF_REQUIRED

        if not (run_dir / "uncertainty" / DONE).is_file():  # refuse now, not after hours of Seg-1
            raise UrnError(CRF_REQUIRED)
    use_heat = use_cam and bool(cfg.cam.heat_stage)
    _check_init(cfg, STAGES[first : last + 1], use_cam, configs["heat_train"] if use_heat else None)
    for stage in STAGES[:first]:
        skipped = (stage in CAM_STAGES and not use_cam) or (stage in HEAT_STAGES and not use_heat)
        if not skipped and not (run_dir / stage / DONE).is_file():
            raise UrnError(f"--from {from_stage}: earlier stage {stage!r} is not complete in {run_dir}")
    for stage in STAGES[first : last + 1]:
        if stage in HEAT_STAGES and not use_heat:
            continue
        if stage in CAM_STAGES and not use_cam:
            if stage == "pseudo_masks" and info.is_main and not (run_dir / stage / COVERAGE).is_file():
                check_coverage(configs, run_dir, stage, quiet=quiet)  # the user's masks, before Seg-1
            continue
        folder = run_dir / stage
        if (folder / DONE).is_file():
            continue
        if info.is_main:
            # the later stages were made from this stage's earlier output: never keep them beside the new one
            _delete_after(run_dir, stage)
            atomic_write_json(folder / STARTED, _record(stage, configs, run_dir))
        distributed.barrier()
        if info.is_main and not quiet:
            print(f"[urn run] stage {stage}", flush=True)
        t0 = time.perf_counter()
        _RUNNERS[stage](configs, run_dir, folder, device, quiet)
        distributed.barrier()
        if info.is_main:
            atomic_write_json(
                folder / DONE,
                {**_record(stage, configs, run_dir), "seconds": time.perf_counter() - t0},
            )
            if stage in COVERAGE_STAGES:
                check_coverage(configs, run_dir, stage, quiet=quiet)
    return read_metrics(run_dir) if (run_dir / "metrics.json").is_file() else {}


# ------------------------------------------------------------------------------------ stage records
def _record(stage: str, configs: dict[str, Config], run_dir: Path) -> dict[str, Any]:
    """What ``DONE.json`` / ``STARTED.json`` hold: the stage, its resolved config and the run folder."""
    return {"stage": stage, "config": config_to_dict(configs[stage]), "run_dir": os.path.abspath(run_dir)}


def stage_reads(stage: str, config: dict[str, Any], run_dir: str | Path) -> dict[str, Any]:
    """The keys of ``config`` (plain data) that ``stage`` reads, flattened and comparable.

    Paths are absolute, and those inside ``run_dir`` are written ``RUN/...``, so a run folder
    reached by another spelling (or moved) still matches its records.
    """
    picked = resume_policy.pick_keys(config, STAGE_READS[stage], STAGE_IGNORES.get(stage, ()), IGNORED_NAMES)
    root = os.path.normpath(os.path.abspath(run_dir))
    for key in resume_policy.PATH_KEYS & picked.keys():
        if picked[key] not in (None, ""):
            path = os.path.normpath(os.path.abspath(os.path.expanduser(str(picked[key]))))
            picked[key] = "RUN" + path[len(root) :] if path == root or path.startswith(root + os.sep) else path
    return json.loads(json.dumps(picked))


def _stored_record(folder: Path) -> dict[str, Any] | None:
    """The record of a stage folder: ``DONE.json``, else ``STARTED.json`` (interrupted), else ``None``."""
    for name in (DONE, STARTED):
        path = folder / name
        if path.is_file():
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return None
            return record if isinstance(record, dict) and isinstance(record.get("config"), dict) else None
    return None


def _check_records(configs: dict[str, Config], run_dir: Path, *, recompute: bool, is_main: bool) -> None:
    """Stop (or, with ``recompute``, delete from there on) at the first stage made with other values."""
    for i, stage in enumerate(STAGES):
        folder = run_dir / stage
        record = _stored_record(folder)
        if record is None:
            continue
        stored = stage_reads(stage, record["config"], record.get("run_dir") or run_dir)
        wanted = stage_reads(stage, config_to_dict(configs[stage]), run_dir)
        keys = resume_policy.differences(stored, wanted)
        if not keys:
            continue
        later = STAGES[i + 1 :]
        if not recompute:

            def show(v: Any) -> str:  # 11.0 is shown as the 11 the user wrote
                return resume_policy.show_value(int(v) if isinstance(v, float) and v.is_integer() else v)

            shown = keys[: resume_policy.MAX_LISTED]
            more = f" and {len(keys) - len(shown)} more keys" if len(keys) > len(shown) else ""
            if len(keys) == 1:
                what = f"{keys[0]}={show(stored[keys[0]])}, the command asks {show(wanted[keys[0]])}"
            else:
                old = ", ".join(f"{k}={show(stored[k])}" for k in shown)
                what = f"{old}{more}; the command asks " + ", ".join(f"{k}={show(wanted[k])}" for k in shown)
            after = f" and the stages after it ({', '.join(later)})" if later else ""
            raise UrnError(
                f"{folder} was made with {what}; rerun with --recompute to redo {stage}{after}, or use a new --out"
            )
        if is_main:
            _delete_after(run_dir, stage, including=True)
        distributed.barrier()
        return


def _delete_stage(folder: Path) -> None:
    import shutil

    try:
        if folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder)
        elif folder.exists() or folder.is_symlink():
            folder.unlink()
    except OSError as exc:
        raise UrnError(f"{folder}: cannot delete this stale stage output ({exc.strerror or exc})") from None


def _delete_after(run_dir: Path, stage: str, *, including: bool = False) -> None:
    """Delete the folders of the stages after ``stage`` (and its own with ``including``) and the run
    files that ``stage`` or a later stage makes."""
    start = STAGES.index(stage)
    for later in STAGES[start + (0 if including else 1) :]:
        _delete_stage(run_dir / later)
    for name, maker in RUN_FILES.items():
        if STAGES.index(maker) >= start:
            _delete_stage(run_dir / name)


def _check_init(cfg: Config, stages: tuple[str, ...], use_cam: bool, heat: Config | None) -> None:
    """Refuse now, not after hours of earlier stages, a network that would start without its ImageNet weights.

    ``heat`` is the stage-1 classifier's config (:func:`stage_configs`), ``None`` without ``cam.heat_stage``.
    """
    from urn.models import check_backbone_init

    if use_cam and "cam_train" in stages:
        check_backbone_init(cfg.cam.backbone, "cam.backbone")
    if heat is not None and "heat_train" in stages:
        from urn.errors import ConfigError

        try:
            check_backbone_init(heat.cam.backbone, "cam.backbone")
        except ConfigError as exc:  # its keys live in that config: say where, and how to change them
            raise ConfigError(
                f"cam.heat_stage={cfg.cam.heat_stage} (the stage-1 classifier): {exc} in a YAML with "
                f"'base: {cfg.cam.heat_stage}' named by cam.heat_stage"
            ) from None
    if "seg1" in stages or "seg2" in stages:
        check_backbone_init(cfg.model.backbone, "model.backbone")


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


# ---------------------------------------------------------------------------- label-free checks
def coverage_mask_dir(configs: dict[str, Config], run_dir: Path, stage: str) -> Path:
    """The mask folder the label-free check of ``stage`` reads (the user's masks for ``pseudo_masks``)."""
    if stage == "uncertainty":
        return Path(run_dir) / "uncertainty" / "masks"
    return Path(configs["seg1"].data.pseudo_masks)  # type: ignore[arg-type]


def check_coverage(configs: dict[str, Config], run_dir: Path, stage: str, *, quiet: bool = False) -> dict | None:
    """Compare ``stage``'s masks with the tags; write ``RUN_DIR/<stage>/coverage.json``, print, warn.

    Call on the main rank only. Never fails the run: without tags or readable masks it prints why
    the check was skipped (stderr) and returns ``None``.

    Returns:
        The :meth:`urn.coverage.Coverage.as_dict` plus ``split`` and ``masks`` (the folder read).
    """
    from urn.data.layout import DatasetLayout

    cfg = configs[stage]
    mask_dir = coverage_mask_dir(configs, run_dir, stage)
    try:
        layout = DatasetLayout.open(cfg.data.root, cfg.data.layout, cfg.data.classes_file)
        split = cfg.data.train_split
        coverage = mask_coverage(layout, layout.ids(split), layout.image_labels(), mask_dir).as_dict()
    except DataError as exc:
        print(f"[urn run] {stage}: label-free check skipped: {exc}", file=sys.stderr, flush=True)
        return None
    coverage.update(split=split, masks=str(mask_dir))
    atomic_write_json(Path(run_dir) / stage / COVERAGE, coverage)
    if not quiet:
        print(f"[urn run] {stage}: {summary_line(coverage)}", flush=True)
    warn_if_collapsed(stage, coverage)
    return coverage


def stage_coverage(configs: dict[str, Config], run_dir: Path, stage: str, *, quiet: bool = False) -> dict | None:
    """``RUN_DIR/<stage>/coverage.json``, computed now if a stage finished without writing it."""
    path = Path(run_dir) / stage / COVERAGE
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    if not coverage_mask_dir(configs, run_dir, stage).is_dir():
        return None
    return check_coverage(configs, run_dir, stage, quiet=quiet)


def collapse_warning(stage: str, coverage: dict[str, Any]) -> str | None:
    """The multi-line warning for a stage whose masks lost most tagged objects, else ``None``.

    Args:
        stage: ``"pseudo_masks"`` or ``"uncertainty"`` (the cyclic masks).
        coverage: a :meth:`urn.coverage.Coverage.as_dict` (``missing_tag_rate``, ``empty_share``).
    """
    rate = coverage.get("missing_tag_rate")
    if rate is None or rate < COLLAPSE_MISSING_TAG_RATE:
        return None
    empty = coverage.get("empty_share") or 0.0
    if stage == "uncertainty":
        what, who = "cyclic masks (Seg-1's predictions on the train images + CRF)", "Seg-2"
        advice = [
            "Seg-1 did not learn the objects. What to try:",
            "  - more train.iters (Seg-1 may stop before it has learned the shapes);",
            "  - check train.pus: the PUS clamp starts once the mean loss falls below train.pus.beta; started",
            "    too early it stops Seg-1 learning the objects (train.pus.enabled=false tells whether it is PUS);",
            "  - if the pseudo-masks' own check above was bad too, fix them first.",
        ]
    else:
        what, who = "pseudo-masks", "Seg-1"
        advice = [
            "What to try:",
            "  - look at the CAMs (cams/<id>.npz) of a few images: weak or misplaced CAMs mean the classifier",
            "    (cam_train: cam.iters, cam.lr) is the problem, not the masks;",
            "  - a larger pmm.bg_power lowers the background score (1 - CAM) ** bg_power, so more pixels",
            "    become foreground;",
            "  - pmm.method=threshold (with pmm.bg_threshold) rules out the per-class CRF.",
        ]
    return "\n".join(
        [
            f"WARNING [urn run] {stage}: the {what} lost most tagged objects:",
            f"  the tagged class has no pixel in {100 * rate:.0f}% of (image, tag) pairs, and {100 * empty:.0f}% "
            "of tagged images are all background.",
            f"  {who} trains on these masks next and will learn mostly background.",
            *(f"  {line}" for line in advice),
            "  The run goes on; to redo it with new settings, rerun with them and --recompute.",
        ]
    )


def warn_if_collapsed(stage: str, coverage: dict[str, Any]) -> bool:
    """Print :func:`collapse_warning` to stderr when it fires. Returns whether it did."""
    text = collapse_warning(stage, coverage)
    if text is not None:
        print(text, file=sys.stderr, flush=True)
    return text is not None


# ------------------------------------------------------------------------------------------ runners
def _heat_train(configs: dict[str, Config], run_dir: Path, folder: Path, device: str | None, quiet: bool) -> None:
    from urn.cam.train import run as train_cam

    train_cam(configs["heat_train"], folder, resume=True, device=device, quiet=quiet)


def _heat_maps(configs: dict[str, Config], run_dir: Path, folder: Path, device: str | None, quiet: bool) -> None:
    cfg = configs["heat_maps"]
    from urn.cam.infer import run as infer_cams
    from urn.cam.train import CHECKPOINT

    checkpoint = run_dir / "heat_train" / CHECKPOINT
    infer_cams(
        cfg, checkpoint, cfg.data.train_split, folder / "cams", heat_out=folder / "heat", device=device, quiet=quiet
    )


def _cam_train(configs: dict[str, Config], run_dir: Path, folder: Path, device: str | None, quiet: bool) -> None:
    cfg = configs["cam_train"]
    from urn.cam.train import run as train_cam

    train_cam(cfg, folder, resume=True, device=device, quiet=quiet)


def _cams(configs: dict[str, Config], run_dir: Path, folder: Path, device: str | None, quiet: bool) -> None:
    cfg = configs["cams"]
    from urn.cam.infer import run as infer_cams
    from urn.cam.train import CHECKPOINT

    infer_cams(cfg, run_dir / "cam_train" / CHECKPOINT, cfg.data.train_split, folder, device=device, quiet=quiet)


def _pseudo_masks(configs: dict[str, Config], run_dir: Path, folder: Path, device: str | None, quiet: bool) -> None:
    cfg = configs["pseudo_masks"]
    from urn.cam.make_masks import run as make_masks

    make_masks(cfg, run_dir / "cams", cfg.data.train_split, folder / "masks", quiet=quiet)


def _seg1(configs: dict[str, Config], run_dir: Path, folder: Path, device: str | None, quiet: bool) -> None:
    cfg = configs["seg1"]
    from urn.stages.segmentation import run_train

    run_train(cfg, folder, phase="seg1", resume=True, device=device, quiet=quiet)


def _uncertainty(configs: dict[str, Config], run_dir: Path, folder: Path, device: str | None, quiet: bool) -> None:
    cfg = configs["uncertainty"]
    from urn.stages.uncertainty import run_uncertainty

    ucfg = dataclasses.replace(cfg, uncertainty=dataclasses.replace(cfg.uncertainty, split=cfg.data.train_split))
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
        from urn.stages.gallery import write_gallery

        write_gallery(cfg, run_dir, folder / "gallery", device=device)


def diagnose(
    miou: dict[str, float | None],
    uncertainty: dict[str, Any] | None,
    coverage: dict[str, dict[str, Any] | None] | None = None,
) -> list[str]:
    """Plain-language notes on the two premises URN's gain rests on, when a run breaks them.

    Args:
        miou: percentages under ``pseudo_masks``, ``cyclic_masks``, ``seg1``, ``seg2`` (``None`` if unscored).
        uncertainty: the uncertainty report (``foreground_downweighted_by_hard``,
            ``background_downweighted_by_hard`` as fractions), or ``None``.
        coverage: the label-free checks under ``pseudo_masks`` and ``cyclic_masks`` (each a
            :meth:`urn.coverage.Coverage.as_dict` or ``None``), or ``None``.

    Returns:
        One sentence per collapsed mask set, per broken premise, and one if Seg-2 scores below Seg-1;
        empty when all is well.
    """
    notes = []
    for key, what in (("pseudo_masks", "pseudo-masks"), ("cyclic_masks", "cyclic masks")):
        rate = ((coverage or {}).get(key) or {}).get("missing_tag_rate")
        if rate is not None and rate >= COLLAPSE_MISSING_TAG_RATE:
            notes.append(
                f"The {what} lost most tagged objects: the tagged class has no pixel in {100 * rate:.0f}% of "
                "(image, tag) pairs (a label-free check, no ground truth needed); see the warning printed at "
                "that stage for what to try."
            )
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
        write_report(cfg, run_dir)


def _export(configs: dict[str, Config], run_dir: Path, folder: Path, device: str | None, quiet: bool) -> None:
    """Seg-2's predictions of ``data.test_split`` in the VOC server layout + ``results.tar.gz``."""
    cfg = configs["export"]
    from urn.data.layout import DatasetLayout
    from urn.stages.segmentation import run_predict

    split = cfg.data.test_split
    if not split:
        return
    layout = DatasetLayout.open(cfg.data.root, cfg.data.layout, cfg.data.classes_file)
    try:
        layout.split_path(split)
    except DataError:  # an optional split: a dataset without it has nothing to export
        if distributed.setup(device).is_main and not quiet:
            print(f"[urn run] export: no split {split!r} in {layout.root}; nothing to export", flush=True)
        return
    run_predict(cfg, run_dir / "seg2" / "last.pt", folder, split=split, voc_server=True, device=device, quiet=quiet)


_RUNNERS = {
    "heat_train": _heat_train,
    "heat_maps": _heat_maps,
    "cam_train": _cam_train,
    "cams": _cams,
    "pseudo_masks": _pseudo_masks,
    "seg1": _seg1,
    "uncertainty": _uncertainty,
    "seg2": _seg2,
    "evaluate": _evaluate,
    "export": _export,
    "report": _report,
}
