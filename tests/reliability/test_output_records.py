"""Per-image commands never mix outputs of different inputs or configs (issue 17 item 1).

``urn predict``, ``urn uncertainty``, ``urn cam infer`` and ``urn pmm`` skip complete output files so that
they resume; each writes ``OUT/urn-record.json`` (what made the folder) and on a rerun resumes only when
the record is the same. Another checkpoint, other CAMs or another config value stop the command with one
line naming what changed; ``--recompute`` deletes the old outputs first; files without a record are
never taken for outputs of the command.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.reliability.conftest import assert_user_error
from tests.tiny import tiny_segmentor

from urn.output_record import RECORD_NAME

SEG = [*tiny_segmentor(), "infer.base_size=[64, 48]", "infer.scales=[1.0]", "infer.flip=false", "infer.crf=false"]


@pytest.fixture(autouse=True)
def _no_progress_bars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("URN_NO_PROGRESS", "1")


def _write_cams(root: Path, out: Path, scale: float) -> Path:
    """CAMs of every train image in ``urn cam infer``'s format: a blob per tagged class."""
    from urn.data.layout import DatasetLayout

    layout = DatasetLayout.open(str(root), "voc", None)
    tags = layout.image_labels()
    out.mkdir(parents=True)
    yy, xx = np.mgrid[0:48, 0:64]
    for i, image_id in enumerate(layout.ids("train")):
        classes = tags[image_id]
        blobs = [np.exp(-((xx - 12 - 20 * k - i) ** 2 + (yy - 24) ** 2) / 128.0) for k in range(len(classes))]
        cams = np.stack(blobs) * scale
        np.savez(out / f"{image_id}.npz", classes=np.asarray(classes, np.int64), cams=cams.astype(np.float16))
    return out


def _pmm(cli, root: Path, cams: Path, out: Path, *extra: str):
    return cli("pmm", "demo", f"data.root={root}", "pmm.num_workers=0", *extra, "--cams", cams, "--out", out)


def _pngs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.rglob("*.png"))}


@pytest.fixture
def cams(demo_root: Path, tmp_path: Path) -> Path:
    return _write_cams(demo_root, tmp_path / "cams", 1.0)


def test_pmm_writes_a_record_and_a_rerun_resumes(cli, demo_root, cams, tmp_path):
    out = tmp_path / "masks"
    assert _pmm(cli, demo_root, cams, out).code == 0
    record = json.loads((out / RECORD_NAME).read_text())
    assert record["command"] == "pmm" and record["inputs"]["cams"]["files"] == 6
    assert record["config"]["pmm.bg_power"] is not None and "pmm.num_workers" not in record["config"]
    first = _pngs(out)
    victim = sorted(out.glob("*.png"))[0]
    victim.unlink()  # an interrupted run: one mask missing
    result = _pmm(cli, demo_root, cams, out)
    assert result.code == 0, result.text
    assert _pngs(out) == first


def test_pmm_with_another_config_value_stops_naming_it(cli, demo_root, cams, tmp_path):
    out = tmp_path / "masks"
    assert _pmm(cli, demo_root, cams, out, "pmm.bg_power=11").code == 0
    before = _pngs(out)
    result = _pmm(cli, demo_root, cams, out, "pmm.bg_power=3")
    assert_user_error(result, str(out), "pmm.bg_power=3", "it was 11", "--recompute")
    assert _pngs(out) == before


def test_pmm_recompute_replaces_every_mask(cli, demo_root, cams, tmp_path):
    out = tmp_path / "masks"
    fresh = tmp_path / "fresh"
    assert _pmm(cli, demo_root, cams, out, "pmm.bg_power=11").code == 0
    assert _pmm(cli, demo_root, cams, fresh, "pmm.bg_power=0.5").code == 0
    result = _pmm(cli, demo_root, cams, out, "pmm.bg_power=0.5", "--recompute")
    assert result.code == 0, result.text
    assert _pngs(out) == _pngs(fresh)  # nothing of the bg_power=11 run is left
    assert json.loads((out / RECORD_NAME).read_text())["config"]["pmm.bg_power"] == 0.5


def test_pmm_on_changed_cams_stops(cli, demo_root, cams, tmp_path):
    out = tmp_path / "masks"
    assert _pmm(cli, demo_root, cams, out).code == 0
    _write_cams(demo_root, tmp_path / "cams2", 0.5)
    for path in (tmp_path / "cams2").iterdir():
        path.replace(cams / path.name)  # the same folder, other CAMs
    assert_user_error(_pmm(cli, demo_root, cams, out), "another cams", "--recompute")


def test_files_without_a_record_are_not_taken_for_outputs(cli, demo_root, cams, tmp_path):
    out = tmp_path / "masks"
    out.mkdir()
    (out / "2007_000032.png").write_bytes(b"someone else's")
    result = _pmm(cli, demo_root, cams, out, "--recompute")
    assert_user_error(result, str(out), f"no {RECORD_NAME} describes")
    assert sorted(p.name for p in out.iterdir()) == ["2007_000032.png"]


def test_record_of_a_failed_command_is_taken_away(cli, demo_root, tmp_path):
    out = tmp_path / "masks"
    result = _pmm(cli, demo_root, tmp_path / "no_cams", out)
    assert result.code == 2
    assert not out.exists()


@pytest.fixture
def checkpoints(cli, demo_root: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A Seg-1 checkpoint of 1 iteration, and a copy whose classifier prefers class 1 (other predictions)."""
    out = tmp_path / "seg"
    args = ["train", "demo", f"data.root={demo_root}", *SEG, "data.fully_supervised=true", "train.iters=1"]
    result = cli(*args, "train.batch_size=2", "--out", out, "--quiet", "--device", "cpu")
    assert result.code == 0, result.text
    state = torch.load(out / "last.pt", map_location="cpu", weights_only=False)
    weights = state["model"]
    key = [k for k, v in weights.items() if k.endswith("bias") and tuple(v.shape) == (6,)][-1]
    weights[key] = weights[key] + torch.tensor([0.0, 100.0, 0.0, 0.0, 0.0, 0.0])
    other = tmp_path / "other.pt"
    torch.save(state, other)
    return out / "last.pt", other


def _predict(cli, root: Path, ckpt: Path, out: Path, *extra: str):
    args = ["predict", "demo", f"data.root={root}", *SEG, "--split", "val", "--plain", "--checkpoint", ckpt]
    return cli(*args, "--out", out, "--quiet", "--device", "cpu", *extra)


def test_predict_with_another_checkpoint_stops_and_recompute_replaces(cli, demo_root, checkpoints, tmp_path):
    a, b = checkpoints
    out, fresh = tmp_path / "pred", tmp_path / "fresh"
    assert _predict(cli, demo_root, a, out).code == 0
    assert _predict(cli, demo_root, b, fresh).code == 0
    before = _pngs(out)
    assert before and before != _pngs(fresh)
    line = assert_user_error(_predict(cli, demo_root, b, out), "another checkpoint", "--recompute")
    assert str(b.resolve()) in line
    assert _pngs(out) == before
    assert _predict(cli, demo_root, b, out, "--recompute").code == 0
    assert _pngs(out) == _pngs(fresh)


def test_predict_same_checkpoint_copied_elsewhere_resumes(cli, demo_root, checkpoints, tmp_path):
    """The checkpoint is identified by its content: a copy is the same input (path only reported)."""
    a, _ = checkpoints
    out = tmp_path / "pred"
    assert _predict(cli, demo_root, a, out).code == 0
    record = json.loads((out / RECORD_NAME).read_text())
    assert len(record["inputs"]["checkpoint"]["sha256"]) == 64
    copy = tmp_path / "elsewhere.pt"
    copy.write_bytes(a.read_bytes())
    victim = sorted(out.rglob("*.png"))[0]
    victim.unlink()
    assert _predict(cli, demo_root, copy, out).code == 0
    assert victim.exists()


def test_predict_with_another_inference_setting_stops(cli, demo_root, checkpoints, tmp_path):
    a, _ = checkpoints
    out = tmp_path / "pred"
    assert _predict(cli, demo_root, a, out).code == 0
    assert_user_error(_predict(cli, demo_root, a, out, "infer.crf=true"), "infer.crf=true", "it was false")
