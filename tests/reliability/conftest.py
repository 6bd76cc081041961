"""Helpers for the reliability suite: run the real CLI entry point and check how it fails."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from urn.io import TMP_SUFFIX


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


#: Set to a file path to collect every case run through :func:`cli` as JSON lines (the closing note's table:
#: ``python -m tests.reliability.case_table FILE``).
CASE_TABLE_ENV = "URN_CASE_TABLE"


@pytest.fixture
def cli(capsys, request, tmp_path_factory):
    """Run ``urn ARGS`` in-process through :func:`urn.cli.main` (the same code path as the program)."""
    from urn.cli import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        result = CliResult(code, captured.out, captured.err)
        _record_case(request.node.nodeid, [str(a) for a in args], result, tmp_path_factory.getbasetemp())
        return result

    return run


def _record_case(test: str, args: list[str], result: CliResult, base: Path) -> None:
    path = os.environ.get(CASE_TABLE_ENV)
    if not path:
        return
    errors = [line for line in result.err.splitlines() if line.startswith("error: ")]
    case = {
        "test": test,
        "command": " ".join(a.replace(str(base), "TMP") for a in args),
        "exit": result.code,
        "message": errors[0].replace(str(base), "TMP") if errors else "",
        "traceback": "Traceback" in result.text,
    }
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(case) + "\n")


def assert_user_error(result: CliResult, *fragments: str, code: int = 2) -> str:
    """A user error: the exit code, one ``error:`` line naming the file/problem, no traceback."""
    assert result.code == code, (result.code, result.text)
    assert "Traceback" not in result.text, result.text
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def assert_no_temp_files(*folders: Path) -> None:
    for folder in folders:
        if Path(folder).exists():
            assert not list(Path(folder).rglob(f"*{TMP_SUFFIX}")), list(Path(folder).rglob(f"*{TMP_SUFFIX}"))
