"""SIGTERM to the whole process group (issue 17 item 7), as ``timeout``, Slurm preemption and
``kill -- -PGID`` send it: the DataLoader workers ignore it, the training saves its checkpoint and
exits with 128 + SIGTERM and one line; rerunning the command continues from that checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.reliability.test_rerun_training import CAM, SEG

from urn.engine.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow  # real process groups, signalled mid-run

ITERS = 400  # far more than a test waits for: the signal always lands mid-run

CASES = {
    "train": (
        ["train", "demo", *SEG, f"train.iters={ITERS}", "train.ckpt_every=1000", "data.num_workers=1"],
        "last.pt",
    ),
    "cam train": (
        ["cam", "train", "demo", *CAM, f"cam.iters={ITERS}", "cam.ckpt_every=1000", "cam.num_workers=1"],
        "last.pt",
    ),
}


def _start(args: list[str], root: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "URN_NO_PROGRESS": "1"}
    command = [sys.executable, "-m", "urn", *args, f"data.root={root}", "--out", str(out)]
    if args[0] == "train":
        command += ["--quiet", "--device", "cpu"]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )


def _run_then_signal(args: list[str], root: Path, out: Path, ready, send) -> tuple[int, str]:
    """Start the command in its own session, call ``send(proc)`` once ``ready()`` holds; returns (exit code, stderr).

    Whatever happens, the process group is SIGKILLed on the way out, so no training outlives the test.
    """
    proc = _start(args, root, out)
    try:
        deadline = time.time() + 240
        while proc.poll() is None and time.time() < deadline and not ready():
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        send(proc)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, err


def _sigterm_group(proc: subprocess.Popen, settle: float = 0.0) -> None:
    time.sleep(settle)  # let the workers run: the signal must meet them mid-epoch
    os.killpg(proc.pid, signal.SIGTERM)  # start_new_session: the group id is the pid


def _logged_iters(out: Path) -> list[int]:
    path = out / "log.jsonl"
    if not path.is_file():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    iters = []
    for line in lines:
        try:
            iters.append(json.loads(line)["iter"])
        except (json.JSONDecodeError, KeyError):
            continue
    return iters


@pytest.mark.parametrize("command", list(CASES))
def test_sigterm_to_the_process_group_saves_and_resumes(demo_root, tmp_path, command):
    args, ckpt_name = CASES[command]
    out = tmp_path / "run"
    code, err = _run_then_signal(
        args, demo_root, out, lambda: bool(_logged_iters(out)), lambda proc: _sigterm_group(proc, settle=0.3)
    )
    assert code == 128 + signal.SIGTERM, err
    assert "Traceback" not in err and "DataLoader worker" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: stopped by signal 15 at iteration "), err
    stopped_at = int(lines[0].split(" at iteration ")[1].split(";")[0])
    assert 0 < stopped_at < ITERS
    assert load_checkpoint(out / ckpt_name)["iteration"] == stopped_at

    # the same command continues from the checkpoint; kill it again once it has logged past it
    code, err = _run_then_signal(
        args, demo_root, out, lambda: max(_logged_iters(out), default=0) > stopped_at, _sigterm_group
    )
    assert code == 128 + signal.SIGTERM, err
    assert "Traceback" not in err, err
    iters = _logged_iters(out)
    # one clean run in the log: each iteration once, in order, the resumed part right after the checkpoint
    assert iters == list(range(1, len(iters) + 1)), iters
    assert len(iters) > stopped_at
    assert load_checkpoint(out / ckpt_name)["iteration"] > stopped_at


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with open(task / "children", encoding="ascii") as fh:
            found += [int(p) for p in fh.read().split()]
    return found


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc to find the worker")
@pytest.mark.parametrize("command", list(CASES))
def test_a_worker_killed_outright_is_one_line_and_a_checkpoint(demo_root, tmp_path, command):
    """A worker that dies anyway (SIGKILL, out of memory): one line, no traceback, and a resumable checkpoint."""
    args, ckpt_name = CASES[command]
    out = tmp_path / "run"

    def kill_workers(proc: subprocess.Popen) -> None:
        workers = _children(proc.pid)
        assert workers
        for pid in workers:
            os.kill(pid, signal.SIGKILL)

    code, err = _run_then_signal(args, demo_root, out, lambda: bool(_logged_iters(out)), kill_workers)
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: DataLoader worker (pid"), err
    assert "rerun the same command to continue" in lines[0]
    if "checkpoint saved" in lines[0]:
        assert load_checkpoint(out / ckpt_name)["iteration"] > 0
