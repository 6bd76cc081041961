"""`urn data demo DIR` / `urn data scenes DIR` into a folder that holds something, through the real CLI
(issue 17, item 3): a generator writes only into a new or empty folder or over its own earlier output
with the same options; anything else is refused with one line naming the folder, and left untouched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.reliability.conftest import assert_no_temp_files, assert_user_error

import urn.data.demo as demo_module
from urn.data.generated import MARKER

SMALL = ("--n-train", "2", "--n-val", "1", "--size", "48")


@pytest.fixture(autouse=True)
def _no_progress_bars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("URN_NO_PROGRESS", "1")


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _stamps(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


def test_demo_into_a_folder_with_other_files_is_refused(cli, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("my notes")
    result = cli("data", "demo", folder, *SMALL)
    assert_user_error(result, str(folder), "not empty", f"no {MARKER}")
    assert _tree(folder) == {"notes.txt": b"my notes"}


def test_demo_over_a_dataset_it_did_not_make_is_refused(cli, demo_copy):
    (demo_copy / MARKER).unlink()  # a VOC dataset of someone else's, same file names as the demo's
    before = _tree(demo_copy)
    result = cli("data", "demo", demo_copy, *SMALL)
    assert_user_error(result, str(demo_copy), "holds no dataset made by `urn data`")
    assert _tree(demo_copy) == before


def test_demo_with_other_options_over_its_own_output_is_refused(cli, tmp_path):
    root = tmp_path / "demo"
    assert cli("data", "demo", root, *SMALL).code == 0
    before = _tree(root)
    result = cli("data", "demo", root, "--n-train", "3", "--n-val", "1", "--size", "48", "--seed", "4")
    line = assert_user_error(result, str(root), "made by `urn data demo` with n_train=2, seed=0")
    assert "this command asks n_train=3, seed=4" in line
    assert _tree(root) == before
    assert_no_temp_files(root)


def test_demo_with_the_same_options_writes_nothing(cli, tmp_path):
    root = tmp_path / "demo"
    assert cli("data", "demo", root, *SMALL).code == 0
    before, stamps = _tree(root), _stamps(root)
    result = cli("data", "demo", root, *SMALL)
    assert result.code == 0, result.text
    assert "already holds these 2 train + 1 val images" in result.out and "nothing written" in result.out
    assert _tree(root) == before and _stamps(root) == stamps


def test_demo_killed_midway_is_finished_by_the_same_command(cli, tmp_path, monkeypatch):
    root, fresh = tmp_path / "demo", tmp_path / "fresh"
    real = demo_module.save_palette_png
    calls = []

    def save_then_die(path, mask):
        real(path, mask)
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C after the second image

    with monkeypatch.context() as m:
        m.setattr(demo_module, "save_palette_png", save_then_die)
        assert cli("data", "demo", root, *SMALL).code == 130
    assert json.loads((root / MARKER).read_text())["complete"] is False
    result = cli("data", "demo", root, *SMALL)
    assert result.code == 0 and "wrote 2 train + 1 val" in result.out, result.text
    assert cli("data", "demo", fresh, *SMALL).code == 0
    assert _tree(root) == _tree(fresh)  # identical to an uninterrupted run, marker included
    assert json.loads((root / MARKER).read_text())["complete"] is True


def test_demo_regenerates_deleted_files_of_its_own_dataset(cli, tmp_path):
    root, fresh = tmp_path / "demo", tmp_path / "fresh"
    assert cli("data", "demo", root, *SMALL).code == 0
    (root / "JPEGImages" / "train_0001.jpg").unlink()
    result = cli("data", "demo", root, *SMALL)
    assert result.code == 0 and "wrote" in result.out, result.text
    assert cli("data", "demo", fresh, *SMALL).code == 0
    assert _tree(root) == _tree(fresh)


def test_scenes_over_a_demo_dataset_is_refused(cli, tmp_path):
    root = tmp_path / "data"
    assert cli("data", "demo", root, *SMALL).code == 0
    before = _tree(root)
    result = cli("data", "scenes", root, "--n-train", "1", "--n-val", "1")
    assert_user_error(result, str(root), "made by `urn data demo`, not `urn data scenes`")
    assert _tree(root) == before


def test_scenes_with_the_same_options_writes_nothing_and_other_options_are_refused(cli, tmp_path):
    root = tmp_path / "scenes"
    assert cli("data", "scenes", root, "--n-train", "1", "--n-val", "1").code == 0
    stamps = _stamps(root)
    again = cli("data", "scenes", root, "--n-train", "1", "--n-val", "1")
    assert again.code == 0 and "nothing written" in again.out, again.text
    other = cli("data", "scenes", root, "--n-train", "1", "--n-val", "1", "--seed", "1")
    assert_user_error(other, str(root), "seed=0", "seed=1")
    assert _stamps(root) == stamps


def test_demo_into_a_file_is_refused(cli, tmp_path):
    path = tmp_path / "data"
    path.write_text("not a folder")
    assert_user_error(cli("data", "demo", path, *SMALL), str(path), "is a file, not a folder")
    assert path.read_text() == "not a folder"


def test_unreadable_marker_is_refused(cli, tmp_path):
    root = tmp_path / "demo"
    assert cli("data", "demo", root, *SMALL).code == 0
    (root / MARKER).write_text("{not json")
    before = _tree(root)
    assert_user_error(cli("data", "demo", root, *SMALL), str(root / MARKER), "unreadable dataset marker")
    assert _tree(root) == before


def test_urn_demo_does_not_write_its_data_into_a_foreign_folder(cli, tmp_path):
    data = tmp_path / "photos"
    data.mkdir()
    (data / "holiday.jpg").write_bytes(b"\xff\xd8 a photo")
    result = cli("demo", "--data", data, "--out", tmp_path / "run", "--quiet")
    assert_user_error(result, str(data), "not empty")
    assert _tree(data) == {"holiday.jpg": b"\xff\xd8 a photo"}
    assert not (tmp_path / "run").exists()
