"""The ``urn`` command line: one subcommand per pipeline stage. No logic lives here.

Each command parses its options, loads the config (YAML path or preset name, then dotted
overrides) and calls one function. User errors (:class:`~urn.errors.UrnError`) are printed as one
line, ``error: ...``, and exit with code 2; nothing else is caught.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from urn.errors import EXIT_USER_ERROR, UrnError

app = typer.Typer(
    name="urn",
    help="Weakly-supervised semantic segmentation from image-level labels (PMM + URN).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigArg = Annotated[str, typer.Argument(help="YAML config path or preset name (see `urn presets`).")]
OverridesArg = Annotated[
    list[str] | None, typer.Argument(help="Dotted overrides, e.g. train.iters=200 model.backbone.name=resnet18")
]


def _register_subapps() -> None:
    from urn.data.cli import data_app

    app.add_typer(data_app, name="data", help="Demo data, image-level labels, dataset checks.")


@app.command()
def presets() -> None:
    """List the shipped config presets."""
    from urn.config import list_presets

    for name in list_presets():
        typer.echo(name)


@app.command("show-config")
def show_config(config: ConfigArg, overrides: OverridesArg = None) -> None:
    """Print the resolved config (preset + overrides) as YAML."""
    from urn.config import dump_yaml, load_config

    typer.echo(dump_yaml(load_config(config, overrides or [])), nl=False)


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


def main() -> None:
    """Entry point of the ``urn`` program."""
    _register_subapps()
    try:
        app()
    except UrnError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
