"""``urn cam train``, ``urn cam infer`` and ``urn pmm``: parse, load the config, call one stage. No logic here.

``cam_app`` is mounted by :mod:`urn.cli` as ``urn cam``; :func:`pmm` is registered there as ``urn pmm``.
User errors (:class:`~urn.errors.UrnError`) propagate to the main app (one line, exit code 2).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer

from urn.cli_common import (
    ConfigArg,
    DeviceOpt,
    OutOpt,
    OverridesArg,
    QuietOpt,
    RecomputeOpt,
    RestartOpt,
    ResumeOpt,
    SplitOpt,
    claim,
    claim_recorded,
    command_group,
    load,
)

cam_app = command_group("Classification phase: CAM classifier training and CAM inference.")


@cam_app.command()
def train(
    config: ConfigArg,
    overrides: OverridesArg = None,
    out: OutOpt = Path("runs/cam"),
    resume: ResumeOpt = False,
    restart: RestartOpt = False,
    device: DeviceOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Train the multi-label CAM classifier (cam.network: plain or seam) on image-level labels.

    A run already in OUT is continued when its config is the same, refused (naming what differs) if not.
    """
    from urn.cam.train import run

    cfg = load(config, overrides)
    with claim(out):
        path = run(cfg, out, resume=resume, restart=restart, device=device, quiet=quiet)
    typer.echo(f"checkpoint: {path}")


@cam_app.command()
def infer(
    config: ConfigArg,
    checkpoint: Annotated[Path, typer.Option("--checkpoint", "-c", help="`urn cam train` checkpoint.")],
    out: OutOpt,
    overrides: OverridesArg = None,
    split: SplitOpt = None,
    heat_out: Annotated[
        Path | None, typer.Option(help="Also write stage-2 heat maps here (for cam.heat_dir training).")
    ] = None,
    recompute: RecomputeOpt = False,
    device: DeviceOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Write normalised multi-scale (or multi-crop) CAMs of the tagged classes, one OUT/<id>.npz each.

    OUT records what made it: a rerun with the same checkpoint and config resumes, another stops.
    """
    from urn.cam.infer import run
    from urn.output_record import command_record, input_file

    cfg = load(config, overrides)
    split = split or cfg.data.train_split
    other = heat_out is not None and heat_out.resolve() != out.resolve()
    record = command_record(
        "cam infer",
        cfg,
        checkpoint=input_file(checkpoint),
        split=split,
        heat_out=str(heat_out.resolve()) if heat_out is not None else None,
    )
    heat_claim = claim_recorded(heat_out, record, recompute, "--heat-out") if other else contextlib.nullcontext()
    with claim_recorded(out, record, recompute), heat_claim:
        path = run(cfg, checkpoint, split, out, heat_out=heat_out, device=device, quiet=quiet)
    typer.echo(f"CAMs: {path}")


def pmm(
    config: ConfigArg,
    cams: Annotated[Path, typer.Option("--cams", help="Folder of <id>.npz CAMs (`urn cam infer`).")],
    out: OutOpt,
    overrides: OverridesArg = None,
    split: SplitOpt = None,
    method: Annotated[str | None, typer.Option(help="pmm, threshold or threshold_crf (default: pmm.method).")] = None,
    workers: Annotated[int | None, typer.Option(min=0, help="Worker processes (default: pmm.num_workers).")] = None,
    recompute: RecomputeOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Pseudo-masks from CAMs: CVS + per-class CRF + PPMG (or a threshold baseline), OUT/<id>.png.

    OUT records what made it: a rerun with the same CAMs and config resumes, another stops.
    """
    from urn.cam.make_masks import run
    from urn.config import with_values

    cfg = load(config, overrides)
    if method is not None:
        cfg = with_values(cfg, {"pmm.method": method}, where="--method")
    if workers is not None:
        cfg = with_values(cfg, {"pmm.num_workers": workers}, where="--workers")
    from urn.output_record import command_record, input_folder

    split = split or cfg.data.train_split
    record = command_record("pmm", cfg, cams=input_folder(cams), split=split)
    with claim_recorded(out, record, recompute):
        path = run(cfg, cams, split, out, quiet=quiet)
    typer.echo(f"pseudo-masks: {path}")
