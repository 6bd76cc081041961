"""Label-free checks of a run (no ground truth): the masks against the image tags, and plain-language
notes when a run breaks the premises URN's gain rests on."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from urn.config import Config
from urn.coverage import mask_coverage, summary_line
from urn.errors import DataError
from urn.io import atomic_write_json

COVERAGE = "coverage.json"
#: The stages whose masks the label-free check reads, and their key in ``metrics.json["coverage"]``.
COVERAGE_STAGES = {"pseudo_masks": "pseudo_masks", "uncertainty": "cyclic_masks"}
#: A tagged class is missing from the mask in at least this share of (image, tag) pairs: the stage
#: lost most of its objects. Healthy masks miss a tag only where its object is tiny, occluded or
#: missed by the CAM, a minority of pairs; from half on, the next network sees mostly background
#: where objects were promised and learns to predict background. The point is a collapse, not
#: noise, so the bar is "most", not a tuned value.
COLLAPSE_MISSING_TAG_RATE = 0.5


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
