"""Rerunning a training into a folder that holds a run, through the real CLI (issue 17, item 2).

One policy for `urn train` and `urn cam train`: a checkpoint trained with the same config is continued
(with or without --resume), one trained with another config is refused with one line naming what
differs (never a load_state_dict traceback, nothing in the folder touched), and --restart starts over.
A kill is stood in for by an exception raised right after a checkpoint was written.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tests.reliability.conftest import assert_no_temp_files, assert_user_error
from tests.tiny import tiny_classifier, tiny_segmentor

from urn.engine.checkpoint import load_checkpoint

SEG = [
    "data.fully_supervised=true",
    *tiny_segmentor("mobilenetv3_small_050", 8),
    "train.batch_size=2",
    "train.iters=4",
    "train.ckpt_every=2",
    "train.log_every=1",
    "train.val_every=0",
    "train.lr=0.01",
]
CAM = [
    *tiny_classifier(),
    "cam.log_every=1",
    "cam.iters=4",
    "cam.ckpt_every=2",
    "cam.eval_val=false",
    "cam.lr=0.01",
]


class KilledError(Exception):
    """Stands in for a kill right after a checkpoint was written."""


@pytest.fixture(autouse=True)
def _no_progress_bars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("URN_NO_PROGRESS", "1")


def _seg(cli, root: Path, out: Path, *extra: str):
    return cli("train", "demo", f"data.root={root}", *SEG, *extra, "--phase", "seg1", "--out", out, "--quiet")


def _cam(cli, root: Path, out: Path, *extra: str):
    return cli("cam", "train", "demo", f"data.root={root}", *CAM, *extra, "--out", out)


def _die_after_checkpoint(monkeypatch: pytest.MonkeyPatch, module, at: int) -> None:
    """Make ``module.save_checkpoint`` write the checkpoint of iteration ``at``, then "kill" the process."""
    real = module.save_checkpoint

    def save_then_die(path: Path, state: dict) -> None:
        real(path, state)
        if state["iteration"] == at:
            raise KilledError

    monkeypatch.setattr(module, "save_checkpoint", save_then_die)


def _iters(log: Path) -> list[int]:
    return [json.loads(line)["iter"] for line in log.read_text().splitlines() if '"loss"' in line]


def _same_weights(a: Path, b: Path) -> None:
    wa, wb = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def killed_seg_run(cli, demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `urn train` run (4 iterations) killed right after its checkpoint of iteration 2."""
    import urn.engine.loop as loop_module  # the loop every training shares writes the checkpoint

    out = tmp_path / "run"
    with monkeypatch.context() as m:
        _die_after_checkpoint(m, loop_module, at=2)
        with pytest.raises(KilledError):
            _seg(cli, demo_root, out)
    assert load_checkpoint(out / "last.pt")["iteration"] == 2
    return out


# ---------------------------------------------------------------------------------- urn train
def test_rerunning_the_killed_train_command_continues_it(cli, demo_root, tmp_path, killed_seg_run):
    result = _seg(cli, demo_root, killed_seg_run)  # the same command, no --resume
    assert result.code == 0, result.text
    assert load_checkpoint(killed_seg_run / "last.pt")["iteration"] == 4
    assert _iters(killed_seg_run / "log.jsonl") == [1, 2, 3, 4]  # continued, not started again and appended
    assert _seg(cli, demo_root, tmp_path / "full").code == 0
    _same_weights(tmp_path / "full" / "last.pt", killed_seg_run / "last.pt")
    assert_no_temp_files(killed_seg_run)


def test_resume_with_another_learning_rate_is_refused(cli, demo_root, killed_seg_run):
    before = _snapshot(killed_seg_run)
    result = _seg(cli, demo_root, killed_seg_run, "train.lr=0.05", "--resume")
    assert_user_error(
        result, f"{killed_seg_run / 'last.pt'} was trained with train.lr=0.01, the command asks 0.05; use a new --out"
    )
    assert "--restart" in result.err
    assert _snapshot(killed_seg_run) == before  # config.yaml, log and checkpoint untouched


def test_rerun_with_another_model_and_schedule_lists_every_difference(cli, demo_root, killed_seg_run):
    before = _snapshot(killed_seg_run)
    result = _seg(cli, demo_root, killed_seg_run, "model.head_channels=16", "train.iters=8")  # no --resume
    line = assert_user_error(result, "last.pt was trained with", "model.head_channels=8", "train.iters=4")
    assert "the command asks model.head_channels=16, train.iters=8" in line
    assert "load_state_dict" not in result.text and "size mismatch" not in result.text
    assert _snapshot(killed_seg_run) == before


def test_resume_with_another_class_list_is_refused(cli, demo_root, killed_seg_run, tmp_path):
    classes = tmp_path / "classes.txt"
    classes.write_text("background\ndisc\nbox\ntriangle\nring\ncross\nstar\n")  # one class more
    before = _snapshot(killed_seg_run)
    result = _seg(cli, demo_root, killed_seg_run, f"data.classes_file={classes}", "--resume")
    line = assert_user_error(result, "last.pt was trained with", "classes=")
    assert '"star"' in line and "data.classes_file=null" in line
    assert _snapshot(killed_seg_run) == before


def test_restart_wipes_the_run_and_trains_from_the_start(cli, demo_root, killed_seg_run, tmp_path):
    (killed_seg_run / "best.pt").write_bytes(b"a stale best checkpoint")
    result = _seg(cli, demo_root, killed_seg_run, "train.lr=0.05", "--restart")
    assert result.code == 0, result.text
    ckpt = load_checkpoint(killed_seg_run / "last.pt")
    assert ckpt["iteration"] == 4 and ckpt["identity"]["train.lr"] == 0.05
    assert _iters(killed_seg_run / "log.jsonl") == [1, 2, 3, 4]
    assert not (killed_seg_run / "best.pt").exists()
    assert _seg(cli, demo_root, tmp_path / "fresh", "train.lr=0.05").code == 0
    _same_weights(tmp_path / "fresh" / "last.pt", killed_seg_run / "last.pt")


def test_resume_and_restart_together_are_refused(cli, demo_root, killed_seg_run):
    before = _snapshot(killed_seg_run)
    assert_user_error(_seg(cli, demo_root, killed_seg_run, "--resume", "--restart"), "--resume", "--restart")
    assert _snapshot(killed_seg_run) == before


def test_unreadable_checkpoint_in_out_is_refused_and_kept(cli, demo_root, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "last.pt").write_bytes(b"an earlier run's weights, cut short")
    result = _seg(cli, demo_root, out)
    assert_user_error(result, str(out / "last.pt"), "unreadable checkpoint", "cannot resume it", "--restart")
    assert (out / "last.pt").read_bytes() == b"an earlier run's weights, cut short"
    assert sorted(p.name for p in out.iterdir()) == ["last.pt"]


def test_cam_checkpoint_in_a_segmentation_folder_is_refused(cli, demo_root, tmp_path):
    out = tmp_path / "run"
    assert _cam(cli, demo_root, out, "cam.iters=2").code == 0
    result = _seg(cli, demo_root, out, "--resume")
    assert_user_error(result, str(out / "last.pt"), "not a `urn train` checkpoint", "--restart")


def test_checkpoint_of_an_earlier_urn_without_identity_is_refused_and_kept(cli, demo_root, tmp_path):
    """Pre-release checkpoints held no identity (nor, for the classifier, a kind): refused, not guessed."""
    out = tmp_path / "run"
    out.mkdir()
    torch.save({"model": {}, "iteration": 3, "config": {}}, out / "last.pt")
    before = (out / "last.pt").read_bytes()
    for run in (_seg, _cam):
        result = run(cli, demo_root, out)
        assert_user_error(result, str(out / "last.pt"), "an earlier urn, without its identity", "--restart")
    assert (out / "last.pt").read_bytes() == before


def test_log_of_a_run_killed_before_its_first_checkpoint_is_not_appended_to(cli, demo_root, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "log.jsonl").write_text('{"iter": 1, "lr": 0.01, "loss": 9.9}\n')  # no checkpoint yet
    assert _seg(cli, demo_root, out).code == 0
    assert _iters(out / "log.jsonl") == [1, 2, 3, 4]
    assert "9.9" not in (out / "log.jsonl").read_text()


def test_rerun_of_a_finished_run_changes_nothing(cli, demo_root, tmp_path):
    out = tmp_path / "run"
    assert _seg(cli, demo_root, out).code == 0
    before = _snapshot(out)
    result = _seg(cli, demo_root, out, "train.log_every=2", "data.num_workers=1")  # these do not count
    assert result.code == 0, result.text
    assert {k: v for k, v in _snapshot(out).items() if k != "config.yaml"} == {
        k: v for k, v in before.items() if k != "config.yaml"
    }


# ------------------------------------------------------------------------------ urn cam train
@pytest.fixture
def killed_cam_run(cli, demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `urn cam train` run (4 iterations) killed right after its checkpoint of iteration 2."""
    import urn.engine.loop as loop_module

    out = tmp_path / "cam"
    with monkeypatch.context() as m:
        _die_after_checkpoint(m, loop_module, at=2)
        with pytest.raises(KilledError):
            _cam(cli, demo_root, out)
    assert load_checkpoint(out / "last.pt")["iteration"] == 2
    return out


def test_rerunning_the_killed_cam_train_command_continues_it(cli, demo_root, tmp_path, killed_cam_run):
    result = _cam(cli, demo_root, killed_cam_run)  # the same command, no --resume
    assert result.code == 0, result.text
    assert load_checkpoint(killed_cam_run / "last.pt")["iteration"] == 4
    assert _iters(killed_cam_run / "log.jsonl") == [1, 2, 3, 4]
    assert _cam(cli, demo_root, tmp_path / "full").code == 0
    _same_weights(tmp_path / "full" / "last.pt", killed_cam_run / "last.pt")


def test_cam_resume_with_another_learning_rate_is_refused(cli, demo_root, killed_cam_run):
    before = _snapshot(killed_cam_run)
    result = _cam(cli, demo_root, killed_cam_run, "cam.lr=0.05", "--resume")
    assert_user_error(
        result,
        f"{killed_cam_run / 'last.pt'} was trained with cam.lr=0.01, the command asks 0.05; use a new --out",
        "--restart",
    )
    assert _snapshot(killed_cam_run) == before


def test_cam_rerun_with_another_backbone_is_refused_without_a_traceback(cli, demo_root, killed_cam_run):
    before = _snapshot(killed_cam_run)
    result = _cam(cli, demo_root, killed_cam_run, "cam.backbone.name=resnet18")
    assert_user_error(result, "last.pt was trained with cam.backbone.name=mobilenetv3_small_050")
    assert _snapshot(killed_cam_run) == before


def test_cam_restart_trains_from_the_start(cli, demo_root, killed_cam_run):
    result = _cam(cli, demo_root, killed_cam_run, "cam.lr=0.05", "--restart")
    assert result.code == 0, result.text
    ckpt = load_checkpoint(killed_cam_run / "last.pt")
    assert ckpt["iteration"] == 4 and ckpt["identity"]["cam.lr"] == 0.05
    assert _iters(killed_cam_run / "log.jsonl") == [1, 2, 3, 4]
