"""A full disk (issue 17 item 8): writing a training log or a checkpoint fails with one line naming the
file, not a traceback. The disk is ``/dev/full``, which answers every write with ENOSPC."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tests.reliability.conftest import assert_no_temp_files, assert_user_error
from tests.reliability.test_rerun_training import CAM as TINY_CAM
from tests.reliability.test_rerun_training import SEG as TINY_TRAINING

import urn.io
from urn.errors import UrnError
from urn.io import append_jsonl, atomic_write_json

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")


@pytest.fixture(autouse=True)
def _no_progress_bars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("URN_NO_PROGRESS", "1")


def _full_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every log append goes to /dev/full."""
    monkeypatch.setattr(urn.io, "_open_append", lambda path: open("/dev/full", "a", encoding="utf-8"))  # noqa: SIM115


def _full_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every atomic write (checkpoints, JSON) goes to /dev/full."""
    real = os.fdopen

    def fdopen(fd, mode="r", *args, **kwargs):
        os.close(fd)
        return real(os.open("/dev/full", os.O_WRONLY), mode, *args, **kwargs)

    monkeypatch.setattr(urn.io.os, "fdopen", fdopen)


def test_log_append_on_a_full_disk_is_one_error(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    log.symlink_to("/dev/full")
    with pytest.raises(UrnError, match=r"log\.jsonl: cannot append to the log \(No space left on device\)"):
        append_jsonl(log, {"iter": 1, "loss": 0.5})


def test_atomic_write_on_a_full_disk_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _full_files(monkeypatch)
    with pytest.raises(UrnError, match=r"out\.json: write failed \(No space left on device\)"):
        atomic_write_json(tmp_path / "out.json", {"a": 1})
    assert list(tmp_path.iterdir()) == []


def test_train_with_a_full_log_disk(cli, demo_root, tmp_path, monkeypatch):
    _full_log(monkeypatch)
    out = tmp_path / "run"
    result = cli("train", "demo", f"data.root={demo_root}", *TINY_TRAINING, "--out", out, "--quiet")
    assert_user_error(result, str(out / "log.jsonl"), "No space left on device")
    assert_no_temp_files(out)


def test_train_with_a_full_checkpoint_disk(cli, demo_root, tmp_path, monkeypatch):
    _full_files(monkeypatch)
    out = tmp_path / "run"
    result = cli("train", "demo", f"data.root={demo_root}", *TINY_TRAINING, "--out", out, "--quiet")
    assert_user_error(result, "No space left on device")
    assert_no_temp_files(out)
    assert not (out / "last.pt").exists()


def test_cam_train_with_a_full_log_disk(cli, demo_root, tmp_path, monkeypatch):
    _full_log(monkeypatch)
    out = tmp_path / "cam"
    result = cli("cam", "train", "demo", f"data.root={demo_root}", *TINY_CAM, "--out", out)
    assert_user_error(result, str(out / "log.jsonl"), "No space left on device")
    assert_no_temp_files(out)
