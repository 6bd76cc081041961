"""Shared fixtures: a tiny demo dataset (built once per session) and a writable copy of it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only-by-convention demo dataset: 6 train + 3 val images of 64x48, VOC layout."""
    from urn.data.demo import make_demo

    root = tmp_path_factory.mktemp("demo") / "demo"
    make_demo(root, n_train=6, n_val=3, seed=0, size=(64, 48))
    return root


@pytest.fixture
def demo_copy(demo_root: Path, tmp_path: Path) -> Path:
    """A private copy of :func:`demo_root` that a test may modify or break."""
    dst = tmp_path / "demo"
    shutil.copytree(demo_root, dst)
    return dst


def _kill_when(args: list[str], ready, timeout: float = 300.0) -> None:
    """Start ``args``, SIGKILL it as soon as ``ready()`` is true (or it exits, or ``timeout`` passes)."""
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + timeout
        while proc.poll() is None and time.time() < deadline and not ready():
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()


@pytest.fixture
def kill_when():
    """``kill_when(args, ready)``: run a command and SIGKILL it once ``ready()`` holds (interruption tests)."""
    return _kill_when


def _torchrun(nproc: int, port: int, *urn_args: str):
    """Run ``urn URN_ARGS`` under ``torchrun --nproc_per_node NPROC`` on CPU; returns the CompletedProcess."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(nproc),
            "--master_port",
            str(port),
            "-m",
            "urn",
            *urn_args,
            "--quiet",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


@pytest.fixture
def torchrun():
    """``torchrun(nproc, port, *urn_args)``: a multi-process CPU (gloo) run of the real CLI."""
    return _torchrun


#: Fixtures that start real processes (torchrun worlds, SIGKILLed runs): every test using one is ``slow``.
SLOW_FIXTURES = frozenset({"torchrun", "kill_when"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests that start real processes ``slow``: ``pytest -m "not slow"`` is the quick loop."""
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
