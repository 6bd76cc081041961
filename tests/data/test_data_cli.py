"""``urn data demo | labels | check`` through Typer's runner, and the user-error exit path via a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from urn.data.cli import data_app

runner = CliRunner()


def test_demo_labels_check_round_trip(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    result = runner.invoke(data_app, ["demo", str(root), "--n-train", "3", "--n-val", "2", "--size", "48"])
    assert result.exit_code == 0, result.output
    assert "3 train + 2 val" in result.output
    assert len(list((root / "JPEGImages").glob("*.jpg"))) == 5
    from PIL import Image

    assert Image.open(root / "JPEGImages" / "train_0000.jpg").size == (48, 36)

    labels = json.loads((root / "cls_labels.json").read_text())
    (root / "cls_labels.json").unlink()
    result = runner.invoke(data_app, ["labels", str(root), "--split", "train"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(data_app, ["labels", str(root), "--split", "val"])
    assert result.exit_code == 0, result.output
    assert json.loads((root / "cls_labels.json").read_text()) == labels

    result = runner.invoke(data_app, ["check", str(root), "--split", "train"])
    assert result.exit_code == 0, result.output
    assert "no problems found" in result.output


def test_check_exit_code_one_on_problems(demo_copy: Path) -> None:
    (demo_copy / "JPEGImages" / "val_0001.jpg").write_bytes(b"")
    result = runner.invoke(data_app, ["check", str(demo_copy), "--split", "val"])
    assert result.exit_code == 1
    assert "val_0001.jpg: empty file" in result.output
    assert "1 problem(s) found" in result.output


def test_user_errors_exit_two_with_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "urn", "data", "labels", str(tmp_path / "missing"), "--split", "train"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1
    assert "dataset folder not found" in proc.stderr
    assert "Traceback" not in proc.stderr
