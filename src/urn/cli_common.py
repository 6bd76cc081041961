"""What every ``urn`` command module shares: argument and option types, and the output-folder claim.

:mod:`urn.cli`, :mod:`urn.cam.cli` and :mod:`urn.data.cli` import from here (and not from each other), so the
commands spell each option the same way and no command module imports another.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from urn.config import Config

ConfigArg = Annotated[str, typer.Argument(help="YAML config path or preset name (see `urn presets`).")]
OverridesArg = Annotated[
    list[str] | None,
    typer.Argument(help="Dotted overrides, e.g. train.iters=200 model.backbone.name=resnet18"),
]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output folder.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", help="No progress bars.")]
DeviceOpt = Annotated[str | None, typer.Option(help="cpu or cuda (default: cuda when available).")]
SplitOpt = Annotated[str | None, typer.Option("--split", "-s", help="Split to process (default: data.train_split).")]
#: Every training (``urn train``, ``urn cam train``) resumes and restarts the same way (urn.engine.resume).
ResumeOpt = Annotated[
    bool, typer.Option("--resume", help="Continue OUT/last.pt (done without it too when the config is the same).")
]
RestartOpt = Annotated[
    bool, typer.Option("--restart", help="Delete OUT's checkpoint, log and metrics first and train from the start.")
]
RecomputeOpt = Annotated[
    bool,
    typer.Option(
        "--recompute",
        help="OUT holds this command's outputs of other inputs or config: delete them and start over.",
    ),
]

#: This run's command line, written into the output folder's lock (:func:`urn.cli.main` sets it).
command_line = "urn"


def command_group(help_text: str) -> typer.Typer:
    """A group of subcommands (``urn cam``, ``urn data``), set up like the main app."""
    return typer.Typer(help=help_text, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


def load(config: str, overrides: list[str] | None) -> Config:
    """The command's config: ``config`` (YAML path or preset name), then its dotted ``overrides``."""
    from urn.config import load_config

    return load_config(config, overrides or [])


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


class _CurrentStream(logging.StreamHandler):
    """A stream handler writing to whatever ``sys.stdout`` / ``sys.stderr`` is at the time of each record
    (a redirected or captured stream included), never to one captured when logging was configured."""

    def __init__(self, name: str) -> None:
        self._stream_name = name  # not `_name`: logging.Handler keeps its own name there
        super().__init__()

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201 - a text stream
        return getattr(sys, self._stream_name)

    @stream.setter
    def stream(self, value) -> None:  # noqa: ANN001 - StreamHandler.__init__ assigns one; ignored
        pass


def configure_logging(quiet: bool = False) -> None:
    """Show the ``urn`` loggers' messages: information on stdout as ``[urn] ...`` (none with ``--quiet``),
    warnings and errors on stderr. Called once per command by :func:`urn.cli.main`; a library user who
    configures logging themselves is not overridden (nothing here runs on import)."""
    logger = logging.getLogger("urn")
    for handler in list(logger.handlers):
        if getattr(handler, "_urn_cli", False):
            logger.removeHandler(handler)
    fmt = logging.Formatter("[urn] %(message)s")
    info = _CurrentStream("stdout")
    info.addFilter(lambda record: record.levelno < logging.WARNING)  # warnings go to stderr only
    warn = _CurrentStream("stderr")
    warn.setLevel(logging.WARNING)
    for handler in (info, warn):
        handler.setFormatter(fmt)
        handler._urn_cli = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
