"""The CLI configures logging once: the library's information lines show as ``[urn] ...`` on stdout,
``--quiet`` silences them, and warnings go to stderr."""

from __future__ import annotations

import logging

import pytest
from tests.tiny import tiny_classifier

from urn.cli import main
from urn.cli_common import configure_logging

CAM = [*tiny_classifier(), "cam.batch_size=2", "cam.iters=2", "cam.ckpt_every=2", "cam.num_workers=0"]


def _run(capsys, *args: str) -> tuple[str, str]:
    with pytest.raises(SystemExit) as exited:
        main([str(a) for a in args])
    assert exited.value.code == 0
    captured = capsys.readouterr()
    return captured.out, captured.err


def test_information_lines_show_and_quiet_silences_them(demo_root, tmp_path, capsys):
    out, _ = _run(capsys, "cam", "train", "demo", f"data.root={demo_root}", *CAM, "--out", tmp_path / "loud")
    assert "[urn] classifier on val: mAP=" in out
    out, _ = _run(capsys, "cam", "train", "demo", f"data.root={demo_root}", *CAM, "--out", tmp_path / "q", "--quiet")
    assert "[urn]" not in out


def test_warnings_go_to_stderr_and_a_second_configuration_does_not_double_lines(capsys):
    configure_logging()
    configure_logging()
    logging.getLogger("urn.test").info("an information line")
    logging.getLogger("urn.test").warning("a warning")
    captured = capsys.readouterr()
    assert captured.out.count("[urn] an information line") == 1 and "a warning" not in captured.out
    assert captured.err.count("[urn] a warning") == 1
