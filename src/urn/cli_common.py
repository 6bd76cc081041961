"""What every ``urn`` command module shares: argument and option types, and the output-folder claim.

:mod:`urn.cli` and :mod:`urn.cam.cli` both import from here (and not from each other), so the
commands spell each option the same way and no command module imports another.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Any

import typer

ConfigArg = Annotated[str, typer.Argument(help="YAML config path or preset name (see `urn presets`).")]
OverridesArg = Annotated[
    list[str] | None,
    typer.Argument(help="Dotted overrides, e.g. train.iters=200 model.backbone.name=resnet18"),
]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output folder.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", help="No progress bars.")]
DeviceOpt = Annotated[str | None, typer.Option(help="cpu or cuda (default: cuda when available).")]
SplitOpt = Annotated[str | None, typer.Option("--split", "-s", help="Split to process (default: data.train_split).")]
RecomputeOpt = Annotated[
    bool,
    typer.Option(
        "--recompute",
        help="OUT holds this command's outputs of other inputs or config: delete them and start over.",
    ),
]

#: This run's command line, written into the output folder's lock (:func:`urn.cli.main` sets it).
command_line = "urn"


def claim(out: Path, option: str = "--out") -> contextlib.AbstractContextManager[Path]:
    """Check the output folder ``out`` and hold its lock while the command runs (:func:`urn.io.claim_output`)."""
    from urn.io import claim_output

    return claim_output(out, option, command=command_line)


def claim_recorded(
    out: Path, record: dict[str, Any], recompute: bool, option: str = "--out"
) -> contextlib.AbstractContextManager[Path]:
    """:func:`claim`, plus the rerun policy of :mod:`urn.output_record` (same record resumes, another stops)."""
    from urn.output_record import recorded_output

    return recorded_output(out, record, recompute=recompute, option=option, command_line=command_line)
