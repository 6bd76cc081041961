"""Output folders (issue 17 items 5 and 8): every command that writes an --out checks it before any work
(one line for a file, a path under a file, a folder it cannot make) and holds an exclusive lock on it
for its lifetime, so a second run into the same folder stops with one line naming the holder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.reliability.conftest import assert_user_error
from tests.reliability.test_rerun_training import SEG as TINY_TRAINING

from urn.io import LOCK_NAME, claim_output


@pytest.fixture(autouse=True)
def _no_progress_bars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("URN_NO_PROGRESS", "1")


def _commands(root: Path, tmp: Path, out: Path) -> dict[str, list]:
    """Each command that writes an output folder, with the least it needs to reach its --out."""
    missing = tmp / "missing.pt"
    return {
        "train": ["train", "demo", f"data.root={root}", "--out", out, "--quiet", "--device", "cpu"],
        "eval": ["eval", "demo", f"data.root={root}", "--checkpoint", missing, "--out", out, "--quiet"],
        "predict": ["predict", "demo", f"data.root={root}", "--checkpoint", missing, "--out", out, "--quiet"],
        "uncertainty": ["uncertainty", "demo", f"data.root={root}", "--checkpoint", missing, "--out", out, "--quiet"],
        "uncertainty-report": ["uncertainty-report", "demo", f"data.root={root}", "--out", out],
        "run": ["run", "demo", f"data.root={root}", "--out", out, "--quiet"],
        "demo": ["demo", "--out", out, "--data", root, "--quiet"],
        "cam train": ["cam", "train", "demo", f"data.root={root}", "--out", out],
        "cam infer": ["cam", "infer", "demo", f"data.root={root}", "--checkpoint", missing, "--out", out],
        "pmm": ["pmm", "demo", f"data.root={root}", "--cams", tmp / "no_cams", "--out", out],
    }


COMMANDS = list(_commands(Path("r"), Path("t"), Path("o")))


# ------------------------------------------------------------------------- item 8: outputs checked first
@pytest.mark.parametrize("command", COMMANDS)
def test_out_that_is_a_file_is_one_line_before_any_work(cli, demo_root, tmp_path, command):
    out = tmp_path / "results.txt"
    out.write_text("not a folder")
    result = cli(*_commands(demo_root, tmp_path, out)[command])
    # the --out message comes first, before the missing checkpoint / CAM folder any of them would meet
    assert_user_error(result, str(out), "--out is a file, not a folder")
    assert out.read_text() == "not a folder"


@pytest.mark.parametrize("command", ["train", "eval", "predict", "uncertainty", "cam infer", "pmm"])
def test_out_under_a_file_is_one_line_before_any_work(cli, demo_root, tmp_path, command):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    result = cli(*_commands(demo_root, tmp_path, blocker / "sub" / "out")[command])
    assert_user_error(result, "--out cannot be made", f"({blocker} is a file, not a folder)")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_out_in_a_read_only_folder_is_one_line(cli, demo_root, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        result = cli(*_commands(demo_root, tmp_path, ro / "out")["pmm"])
        assert_user_error(result, "--out cannot be made", "ermission denied")
    finally:
        ro.chmod(0o700)


def test_heat_out_that_is_a_file_is_one_line(cli, demo_root, tmp_path):
    heat = tmp_path / "heat"
    heat.write_text("x")
    args = _commands(demo_root, tmp_path, tmp_path / "cams")["cam infer"] + ["--heat-out", heat]
    assert_user_error(cli(*args), str(heat), "--heat-out is a file, not a folder")
    assert not (tmp_path / "cams").exists()


def test_eval_out_file_fails_before_the_evaluation(cli, demo_root, tmp_path):
    """Before, `urn eval --out FILE` evaluated the whole split and failed writing metrics.json."""
    out = tmp_path / "metrics.json"
    out.write_text("{}")
    result = cli(*_commands(demo_root, tmp_path, out)["eval"])
    assert "missing.pt" not in result.err  # the checkpoint was not even opened
    assert_user_error(result, "--out is a file, not a folder")


def test_failed_command_leaves_no_folder_and_no_lock(cli, demo_root, tmp_path):
    out = tmp_path / "new_out"
    result = cli(*_commands(demo_root, tmp_path, out)["eval"])
    assert_user_error(result, "missing.pt")
    assert not out.exists()


def test_failed_command_in_an_existing_folder_leaves_it_as_it_was(cli, demo_root, tmp_path):
    out = tmp_path / "existing"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert_user_error(cli(*_commands(demo_root, tmp_path, out)["eval"]), "missing.pt")
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    # a per-image command will not write beside files it did not make (tests/reliability/test_output_records.py)
    assert_user_error(cli(*_commands(demo_root, tmp_path, out)["predict"]), "no urn-record.json describes")
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


@pytest.mark.parametrize("command", ["predict", "uncertainty", "cam infer", "pmm"])
def test_failed_command_in_an_existing_empty_folder_leaves_it_empty(cli, demo_root, tmp_path, command):
    out = tmp_path / "existing"
    out.mkdir()
    assert cli(*_commands(demo_root, tmp_path, out)[command]).code == 2
    assert out.is_dir() and not list(out.iterdir())


# ------------------------------------------------------------------------------- item 5: one run per --out
@pytest.mark.parametrize("command", COMMANDS)
def test_second_run_into_a_held_out_stops_naming_the_holder(cli, demo_root, tmp_path, command):
    out = tmp_path / "shared"
    with claim_output(out, command="urn train demo --out shared"):
        result = cli(*_commands(demo_root, tmp_path, out)[command])
        line = assert_user_error(result, str(out), "in use by another urn run", "urn train demo --out shared")
        assert f"pid {os.getpid()}" in line
    assert not out.exists()  # the holder made it, wrote nothing, and cleaned up


def _holder(out: Path) -> subprocess.Popen:
    """Another process holding ``out`` through the same helper until killed."""
    code = (
        "import sys, time\nfrom urn.io import claim_output\n"
        f"with claim_output({str(out)!r}, command='urn pmm demo --out held'):\n"
        "    print('held', flush=True)\n    time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_lock_held_by_another_process_and_freed_when_it_is_killed(cli, demo_root, tmp_path):
    out = tmp_path / "shared"
    proc = _holder(out)
    try:
        line = assert_user_error(cli(*_commands(demo_root, tmp_path, out)["pmm"]), "in use by another urn run")
        assert f"pid {proc.pid}: urn pmm demo --out held" in line
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (out / LOCK_NAME).exists()  # a killed holder leaves its lock file, but not its lock
    result = cli(*_commands(demo_root, tmp_path, out)["pmm"])
    assert_user_error(result, "no_cams")  # gets past the lock to its own work
    assert not (out / LOCK_NAME).exists()


@pytest.mark.slow
def test_two_real_trainings_into_one_out(demo_copy, tmp_path):
    """The first training holds OUT for its lifetime; the second stops at once with one line, and the
    first one's files are untouched by it."""
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "URN_NO_PROGRESS": "1"}
    args = [
        sys.executable,
        "-m",
        "urn",
        "train",
        "demo",
        f"data.root={demo_copy}",
        *TINY_TRAINING,
        "train.iters=100000",
        "--quiet",
    ]
    args += ["--device", "cpu", "--out", str(out)]
    first = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.time() + 120
        while not (out / "log.jsonl").exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert first.poll() is None, first.stderr.read() if first.stderr else ""
        second = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
        assert second.returncode == 2, second.stderr
        lines = [line for line in second.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "Traceback" not in second.stderr, second.stderr
        assert f"{out}: in use by another urn run (pid {first.pid}: urn train demo" in lines[0], lines[0]
        assert first.poll() is None  # the first run goes on
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()


def test_successful_command_leaves_no_lock_file(cli, demo_copy, tmp_path):
    out = tmp_path / "run"
    result = cli("train", "demo", f"data.root={demo_copy}", *TINY_TRAINING, "train.iters=1", "--out", out, "--quiet")
    assert result.code == 0, result.text
    assert (out / "last.pt").is_file() and not (out / LOCK_NAME).exists()
