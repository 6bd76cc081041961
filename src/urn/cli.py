"""The ``urn`` command line: one subcommand per pipeline stage. No logic lives here.

Each command parses its options, loads the config (YAML path or preset name, then dotted
overrides) and calls one function. User errors (:class:`~urn.errors.UrnError`) are printed as one
line, ``error: ...``, and exit with code 2; nothing else is caught.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated

import typer

from urn import cli_common
from urn.cam.cli import cam_app, pmm
from urn.cli_common import (
    ConfigArg,
    DeviceOpt,
    OutOpt,
    OverridesArg,
    QuietOpt,
    RecomputeOpt,
    RestartOpt,
    ResumeOpt,
    claim,
    claim_recorded,
    command_group,
    load,
)
from urn.data.cli import data_app
from urn.errors import EXIT_USER_ERROR, UrnError
from urn.stages.order import Phase, Stage

try:  # typer >= 0.22 carries its own copy of click
    from typer._click import exceptions as click_errors
except ImportError:  # older typer runs on click
    from click import exceptions as click_errors  # type: ignore[no-redef]

app = command_group("Weakly-supervised semantic segmentation from image-level labels (PMM + URN).")


@app.command()
def presets() -> None:
    """List the shipped config presets."""
    from urn.config import list_presets

    for name in list_presets():
        typer.echo(name)


@app.command("show-config")
def show_config(config: ConfigArg, overrides: OverridesArg = None) -> None:
    """Print the resolved config (preset + overrides) as YAML."""
    from urn.config import dump_yaml

    typer.echo(dump_yaml(load(config, overrides)), nl=False)


@app.command("score-masks")
def score_masks(
    pred_dir: Annotated[Path, typer.Argument(help="Folder of predicted <id>.png class-index masks.")],
    gt_dir: Annotated[Path, typer.Argument(help="Folder of ground-truth <id>.png masks (255 = ignore).")],
    ids: Annotated[Path | None, typer.Option(help="Split file of ids to score (default: all GT files).")] = None,
    classes: Annotated[Path | None, typer.Option(help="classes.txt (default: VOC's 21).")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the scores to this JSON file.")] = None,
) -> None:
    """Score a folder of predicted masks against ground truth; ends with `mIoU=XX.XX`."""
    from urn.scoring import score_mask_folders

    text = score_mask_folders(pred_dir, gt_dir, ids_file=ids, classes_file=classes, json_out=json_out)
    typer.echo(text)


@app.command()
def train(
    config: ConfigArg,
    overrides: OverridesArg = None,
    out: OutOpt = Path("runs/train"),
    phase: Annotated[
        Phase | None,
        typer.Option(help="seg1 (config `train`) or seg2 (config `seg2`); default: config `phase`."),
    ] = None,
    resume: ResumeOpt = False,
    restart: RestartOpt = False,
    device: DeviceOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Train a segmentation network (Seg-1 on pseudo-masks with PUS, or Seg-2 with uncertainty weights).

    A run already in OUT is continued when its config is the same, refused (naming what differs) if not.
    """
    from urn.stages.segmentation import run_train

    cfg = load(config, overrides)
    with claim(out):
        path = run_train(
            cfg, out, phase=phase.value if phase else None, resume=resume, restart=restart, device=device, quiet=quiet
        )
    typer.echo(f"checkpoint: {path}")


@app.command("eval")
def evaluate(
    config: ConfigArg,
    overrides: OverridesArg = None,
    checkpoint: Annotated[Path, typer.Option(help="Model checkpoint (.pt).")] = Path("runs/train/last.pt"),
    split: Annotated[str | None, typer.Option(help="Split to score (default: data.val_split).")] = None,
    ms: Annotated[
        bool | None, typer.Option("--ms/--no-ms", help="Multi-scale (infer.scales) or scale 1.0 only.")
    ] = None,
    flip: Annotated[bool | None, typer.Option("--flip/--no-flip", help="Add horizontally flipped views.")] = None,
    crf: Annotated[bool | None, typer.Option("--crf/--no-crf", help="Dense-CRF post-processing.")] = None,
    out: Annotated[Path | None, typer.Option(help="Write metrics.json (and predictions with --save) here.")] = None,
    save: Annotated[bool, typer.Option("--save", help="Also write the predicted masks.")] = False,
    device: DeviceOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Score a checkpoint on a split: per-class IoU table ending with `mIoU=XX.XX`."""
    from urn.config import with_values
    from urn.stages.segmentation import run_eval

    options = {"infer.scales": [1.0] if ms is False else None, "infer.flip": flip, "infer.crf": crf}
    cfg = with_values(load(config, overrides), {k: v for k, v in options.items() if v is not None})
    with claim(out) if out is not None else contextlib.nullcontext():
        table, _ = run_eval(cfg, checkpoint, split=split, out=out, save_predictions=save, device=device, quiet=quiet)
    typer.echo(table)


@app.command()
def predict(
    config: ConfigArg,
    overrides: OverridesArg = None,
    checkpoint: Annotated[Path, typer.Option(help="Model checkpoint (.pt).")] = Path("runs/train/last.pt"),
    split: Annotated[str, typer.Option(help="Split to predict.")] = "test",
    out: OutOpt = Path("runs/predict"),
    voc_server: Annotated[
        bool, typer.Option("--voc-server/--plain", help="VOC server layout + tar.gz, or OUT/predictions/.")
    ] = True,
    device: DeviceOpt = None,
    quiet: QuietOpt = False,
    recompute: RecomputeOpt = False,
) -> None:
    """Write palette PNG predictions (VOC evaluation-server layout and tarball by default).

    OUT records what made it: a rerun with the same checkpoint and config resumes, another stops.
    """
    from urn.output_record import command_record, input_file
    from urn.stages.segmentation import run_predict

    cfg = load(config, overrides)
    record = command_record("predict", cfg, checkpoint=input_file(checkpoint), split=split, voc_server=voc_server)
    with claim_recorded(out, record, recompute):
        folder = run_predict(cfg, checkpoint, out, split=split, voc_server=voc_server, device=device, quiet=quiet)
    typer.echo(f"predictions: {folder}")


@app.command()
def uncertainty(
    config: ConfigArg,
    overrides: OverridesArg = None,
    checkpoint: Annotated[
        Path | None, typer.Option(help="Seg-1 checkpoint whose 12-view predictions are used.")
    ] = None,
    probs: Annotated[
        Path | None,
        typer.Option(help="Instead of a checkpoint: folder of <id>.npy (C, H, W) probabilities from any method."),
    ] = None,
    out: OutOpt = Path("runs/uncertainty"),
    limit: Annotated[int | None, typer.Option(help="Only the first N images (a quick look).")] = None,
    reference_format: Annotated[
        bool, typer.Option("--reference-format", help="Also write the reference's 3-channel PNGs.")
    ] = False,
    device: DeviceOpt = None,
    quiet: QuietOpt = False,
    recompute: RecomputeOpt = False,
) -> None:
    """Cyclic pseudo-masks + per-pixel uncertainty by response scaling (URN).

    OUT records what made it: a rerun with the same inputs and config resumes, another stops.
    """
    from urn.config import with_values
    from urn.output_record import command_record, input_file, input_folder
    from urn.stages.uncertainty import run_uncertainty

    cfg = load(config, overrides)
    if reference_format:
        cfg = with_values(cfg, {"uncertainty.reference_format": True}, where="--reference-format")
    record = command_record("uncertainty", cfg, checkpoint=input_file(checkpoint), probs=input_folder(probs))
    with claim_recorded(out, record, recompute):
        folder = run_uncertainty(
            cfg, out, checkpoint=checkpoint, probs_dir=probs, limit=limit, device=device, quiet=quiet
        )
    typer.echo(f"cyclic masks: {folder / 'masks'}\nuncertainty: {folder / 'uncertainty'}")


@app.command("convert-checkpoint")
def convert_checkpoint(
    inp: Annotated[Path, typer.Argument(help="A PSPNet checkpoint trained by the reference (mmseg key names).")],
    out: Annotated[Path, typer.Argument(help="Where to write the urn checkpoint.")],
    config: Annotated[str, typer.Option(help="Config/preset describing the model (backbone, classes).")] = "voc12_r2n",
    overrides: OverridesArg = None,
) -> None:
    """Import a reference (XMed-Lab/URN, mmsegmentation 0.x) PSPNet checkpoint; loads with strict=True."""
    from urn.models.convert import convert_checkpoint_file

    path = convert_checkpoint_file(inp, out, load(config, overrides))
    typer.echo(f"converted: {path}")


@app.command("uncertainty-report")
def uncertainty_report(
    config: ConfigArg,
    overrides: OverridesArg = None,
    uncertainty_dir: Annotated[Path, typer.Option("--uncertainty", help="Output folder of `urn uncertainty`.")] = Path(
        "runs/uncertainty"
    ),
    pseudo_masks: Annotated[Path | None, typer.Option(help="The original pseudo-masks, to compare.")] = None,
    split: Annotated[str | None, typer.Option(help="Split (default: uncertainty.split).")] = None,
    out: OutOpt = Path("runs/uncertainty_report"),
    grid: Annotated[int, typer.Option(help="Rows in the most-uncertain grid.")] = 6,
) -> None:
    """Score the uncertainty against ground truth: AUROC, AP, error by decile, grid image (evaluation only)."""
    import json

    from urn.data.layout import DatasetLayout
    from urn.stages.uncertainty_report import build_uncertainty_report

    cfg = load(config, overrides)
    layout = DatasetLayout.open(cfg.data.root, cfg.data.layout, cfg.data.classes_file)
    with claim(out):
        report = build_uncertainty_report(
            layout,
            split or cfg.uncertainty.split,
            uncertainty_dir,
            out,
            weight_thresh=cfg.seg2.weight_thresh,
            pseudo_mask_dir=pseudo_masks,
            grid_images=grid,
        )
    typer.echo(json.dumps(report, indent=2))


RecomputeStagesOpt = Annotated[
    bool,
    typer.Option(
        "--recompute",
        help="Redo a complete stage made with other config values, and every stage after it (default: stop).",
    ),
]


@app.command()
def run(
    config: ConfigArg,
    overrides: OverridesArg = None,
    out: OutOpt = Path("runs/run"),
    from_stage: Annotated[
        Stage | None, typer.Option("--from", help="First stage to run (earlier ones must be complete).")
    ] = None,
    until_stage: Annotated[Stage | None, typer.Option("--until", help="Last stage to run.")] = None,
    recompute: RecomputeStagesOpt = False,
    device: DeviceOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """The whole pipeline: CAMs -> PMM pseudo-masks -> Seg-1 -> uncertainty -> Seg-2 -> evaluation -> report.

    Complete stages are reused when made with the same config; one made otherwise stops the run
    (naming the key) unless --recompute redoes it and every later stage.
    """
    import json

    from urn.stages.pipeline import run_pipeline

    cfg = load(config, overrides)
    with claim(out):
        metrics = run_pipeline(
            cfg,
            out,
            from_stage=from_stage.value if from_stage else None,
            until_stage=until_stage.value if until_stage else None,
            device=device,
            quiet=quiet,
            recompute=recompute,
        )
    if metrics:
        typer.echo(json.dumps(metrics.get("miou", {}), indent=2))
        _echo_notes(metrics)
    if (out / "report.html").is_file():
        typer.echo(f"report: {out / 'report.html'}")


@app.command()
def demo(
    out: OutOpt = Path("runs/demo"),
    data: Annotated[Path, typer.Option(help="Where the demo dataset is (made if missing).")] = Path("data/demo"),
    overrides: OverridesArg = None,
    recompute: RecomputeStagesOpt = False,
    device: DeviceOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Make the demo dataset (if needed) and run the whole pipeline on it with the `demo` preset."""
    from urn.data.check import check_dataset
    from urn.data.demo import make_demo
    from urn.data.generated import read_marker
    from urn.stages.pipeline import run_pipeline

    with claim(out):
        marker = read_marker(data) if data.is_dir() else None
        if not (data / "ImageSets").is_dir() or (marker is not None and not marker.get("complete")):
            typer.echo(f"making the demo dataset in {data}")
            make_demo(data)  # refuses a folder holding anything else
        problems = check_dataset(data, "train")
        if problems:
            raise UrnError(f"{data}: demo data has problems, e.g. {problems[0]}")
        cfg = load("demo", [f"data.root={data}", *(overrides or [])])
        metrics = run_pipeline(cfg, out, device=device, quiet=quiet, recompute=recompute)
        miou = metrics.get("miou", {})
        typer.echo("mIoU (%): " + ", ".join(f"{k}={v:.2f}" if v is not None else f"{k}=n/a" for k, v in miou.items()))
        _echo_notes(metrics)
        typer.echo(f"report: {out / 'report.html'}")


# the sub-apps after the commands: `urn --help` lists pmm last, then the groups data and cam
app.command("pmm")(pmm)
app.add_typer(data_app, name="data")
app.add_typer(cam_app, name="cam")


def _echo_notes(metrics: dict) -> None:
    """The run's notes (skipped scores, broken URN premises), one per line."""
    for note in metrics.get("notes") or []:
        typer.echo(f"note: {note}")


def _close_progress_bars() -> None:
    """Finish any open progress bar so the error message starts on a line of its own."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``urn`` program (``argv`` defaults to ``sys.argv[1:]``).

    Exits with 0 on success, 2 on a user error (one line on stderr, no traceback), 130 on Ctrl-C;
    a training stopped by SIGTERM/SIGINT after saving its checkpoint exits with 143/130.
    """
    args = sys.argv[1:] if argv is None else [str(a) for a in argv]
    cli_common.command_line = " ".join(["urn", *args])
    # every command that prints progress takes --quiet; it also silences the informational log lines
    cli_common.configure_logging(quiet="--quiet" in args)
    try:
        # Not click's standalone mode: its usage errors (a bad option value, a missing argument) become
        # one line like every other user error, instead of a usage box.
        code = app(args=argv, prog_name="urn", standalone_mode=False)
    except click_errors.NoArgsIsHelpError as exc:
        exc.show()  # `urn` or `urn cam` alone: the help, as click prints it
        sys.exit(exc.exit_code)
    except click_errors.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx is not None else "urn"
        typer.echo(f"error: {exc.format_message()} (see `{command} --help`)", err=True)
        sys.exit(EXIT_USER_ERROR)
    except click_errors.ClickException as exc:  # e.g. a file option click opens itself
        typer.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except UrnError as exc:
        _close_progress_bars()
        typer.echo(f"error: {exc}", err=True)
        # a training stopped by SIGINT/SIGTERM after saving exits with 128 + signal (urn.engine.stopping)
        sys.exit(getattr(exc, "exit_code", EXIT_USER_ERROR))
    except (typer.Abort, KeyboardInterrupt):  # Ctrl-C, at a click prompt or anywhere else
        typer.echo("interrupted", err=True)
        sys.exit(130)
    # as in click's standalone mode, every run ends in SystemExit (an Exit, e.g. from --help, is returned here)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
