"""``urn run``: the whole pipeline, one folder per stage, resumable. This module only chains the stages.

Each stage is one module ``urn.stages.<stage>`` with ``run(cfg, run_dir, *, device, quiet) -> Path``
(IRN's one file per step): it derives its own config (:func:`urn.stages.configs.stage_configs`), reads
the earlier stages' folders and writes its own. Stages, in order (each writes into ``RUN_DIR/<stage>/``
and ends by writing ``DONE.json``, which holds the stage's resolved config and wall time)::

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

import importlib
import json
import os
import time
from pathlib import Path
from typing import Any

from urn.config import Config, config_to_dict
from urn.engine import distributed
from urn.engine import resume as resume_policy
from urn.errors import ConfigError, DataError, UrnError
from urn.io import atomic_write_json, remove_path
from urn.stages.checks import COVERAGE, COVERAGE_STAGES, check_coverage
from urn.stages.configs import stage_configs
from urn.stages.order import CAM_STAGES, HEAT_STAGES, STAGES
from urn.stages.run_folder import DONE, STARTED, read_metrics

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
    _check_records(configs, run_dir, recompute=recompute, is_main=info.is_main, first=first)
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
        importlib.import_module(f"urn.stages.{stage}").run(cfg, run_dir, device=device, quiet=quiet)
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
    return {
        "stage": stage,
        "config": config_to_dict(configs[stage]),
        "run_dir": os.path.abspath(run_dir),
        "cwd": os.getcwd(),  # what the config's relative paths (data.root=data/demo) were relative to
    }


def stage_reads(stage: str, config: dict[str, Any], run_dir: str | Path, cwd: str | None = None) -> dict[str, Any]:
    """The keys of ``config`` (plain data) that ``stage`` reads, flattened and comparable.

    Paths are absolute (relative ones taken from ``cwd``, default the current folder), and those inside
    ``run_dir`` are written ``RUN/...``, so a run folder reached by another spelling (or moved) still
    matches its records.
    """
    picked = resume_policy.pick_keys(config, STAGE_READS[stage], STAGE_IGNORES.get(stage, ()), IGNORED_NAMES)
    return resume_policy.normalise_paths(picked, root=run_dir, cwd=cwd)


def _as_written(value: Any) -> str:
    """A value as the user wrote it: 11.0 is shown as 11."""
    return resume_policy.show_value(int(value) if isinstance(value, float) and value.is_integer() else value)


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


def _check_records(
    configs: dict[str, Config], run_dir: Path, *, recompute: bool, is_main: bool, first: int = 0
) -> None:
    """Stop (or, with ``recompute``, delete from there on) at the first stage made with other values.

    A stage before ``first`` (``--from``) is an input the command does not redo: made otherwise, it
    stops the run even with ``recompute`` (deleting it would lose work the command excluded).
    """
    for i, stage in enumerate(STAGES):
        folder = run_dir / stage
        record = _stored_record(folder)
        if record is None:
            continue
        stored = stage_reads(stage, record["config"], record.get("run_dir") or run_dir, record.get("cwd"))
        wanted = stage_reads(stage, config_to_dict(configs[stage]), run_dir)
        keys = resume_policy.differences(stored, wanted)
        if not keys:
            continue
        if i < first:
            hint = f"--from {STAGES[first]} uses it as it is: rerun without --from to redo it, or use a new --out"
        elif not recompute:
            after = f" and the stages after it ({', '.join(STAGES[i + 1 :])})" if i + 1 < len(STAGES) else ""
            hint = f"rerun with --recompute to redo {stage}{after}, or use a new --out"
        else:
            if is_main:
                _delete_after(run_dir, stage, including=True)
            distributed.barrier()
            return
        raise UrnError(
            resume_policy.mismatch_message(folder, stored, wanted, keys, made="made", hint=hint, show=_as_written)
        )


def _delete_after(run_dir: Path, stage: str, *, including: bool = False) -> None:
    """Delete the folders of the stages after ``stage`` (and its own with ``including``) and the run
    files that ``stage`` or a later stage makes."""
    start = STAGES.index(stage)
    stale = [run_dir / later for later in STAGES[start + (0 if including else 1) :]]
    stale += [run_dir / name for name, maker in RUN_FILES.items() if STAGES.index(maker) >= start]
    for path in stale:
        remove_path(path, "cannot delete this stale stage output")


def _check_init(cfg: Config, stages: tuple[str, ...], use_cam: bool, heat: Config | None) -> None:
    """Refuse now, not after hours of earlier stages, a network that would start without its ImageNet weights.

    ``heat`` is the stage-1 classifier's config (:func:`stage_configs`), ``None`` without ``cam.heat_stage``.
    """
    from urn.models import check_backbone_init

    if use_cam and "cam_train" in stages:
        check_backbone_init(cfg.cam.backbone, "cam.backbone")
    if heat is not None and "heat_train" in stages:
        try:
            check_backbone_init(heat.cam.backbone, "cam.backbone")
        except ConfigError as exc:  # its keys live in that config: say where, and how to change them
            raise ConfigError(
                f"cam.heat_stage={cfg.cam.heat_stage} (the stage-1 classifier): {exc} in a YAML with "
                f"'base: {cfg.cam.heat_stage}' named by cam.heat_stage"
            ) from None
    if "seg1" in stages or "seg2" in stages:
        check_backbone_init(cfg.model.backbone, "model.backbone")
