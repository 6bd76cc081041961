"""`urn run` reruns (issue 17 item 1): a complete stage is reused only when made with the config keys it
reads; a changed key stops the run with one line naming it and the flag, ``--recompute`` redoes that
stage and the later ones only, and a stage folder deleted by hand takes the later stages with it."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest
from tests.reliability.conftest import assert_user_error
from tests.test_pipeline import TINY

from urn.stages.pipeline import STAGES


def _run_args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["run", "demo", f"data.root={root}", *TINY, *extra, "--out", str(out), "--quiet"]


@pytest.fixture(scope="module")
def finished(demo_root, tmp_path_factory) -> Path:
    """One complete tiny `urn run`, copied by each test that changes it."""
    from urn.cli import main

    run = tmp_path_factory.mktemp("records") / "run"
    with contextlib.redirect_stdout(io.StringIO()), pytest.raises(SystemExit) as exited:
        main(_run_args(demo_root, run))
    assert exited.value.code in (0, None)
    return run


@pytest.fixture
def run(finished, tmp_path) -> Path:
    copy = tmp_path / "run"  # another folder than the one the records name: a moved run still matches them
    shutil.copytree(finished, copy)
    (copy / ".urn.lock").unlink(missing_ok=True)
    return copy


def _stamps(run: Path) -> dict[str, int | None]:
    """``DONE.json``'s mtime per stage (None when absent), and metrics.json's."""
    paths = {s: run / s / "DONE.json" for s in STAGES} | {"metrics.json": run / "metrics.json"}
    return {k: p.stat().st_mtime_ns if p.is_file() else None for k, p in paths.items()}


def _done_config(run: Path, stage: str) -> dict:
    return json.loads((run / stage / "DONE.json").read_text())["config"]


def test_identical_rerun_is_a_no_op(cli, demo_root, run):
    before = _stamps(run)
    miou = json.loads((run / "metrics.json").read_text())["miou"]
    # logging, checkpoint and worker settings are not what a stage's output depends on
    result = cli(*_run_args(demo_root, run, "train.log_every=7", "seg2.ckpt_every=2", "pmm.num_workers=1"))
    assert result.code == 0, result.text
    assert _stamps(run) == before
    assert json.loads(result.out[: result.out.index("}") + 1]) == miou


def test_changed_key_is_refused_with_one_line(cli, demo_root, run):
    before = _stamps(run)
    old = _done_config(run, "pseudo_masks")["pmm"]["bg_power"]
    result = cli(*_run_args(demo_root, run, "pmm.bg_power=11"))
    assert_user_error(
        result,
        f"{run / 'pseudo_masks'} was made with pmm.bg_power={old}, the command asks 11; rerun with --recompute to "
        "redo pseudo_masks and the stages after it (seg1, uncertainty, seg2, evaluate, export, report), "
        "or use a new --out",
    )
    assert _stamps(run) == before
    # a key only Seg-2 reads names seg2, the first stage it changes
    result = cli(*_run_args(demo_root, run, "seg2.lr=0.03"))
    assert_user_error(
        result, f"{run / 'seg2'} was made with seg2.lr=", "the command asks 0.03", "(evaluate, export, report)"
    )
    assert _stamps(run) == before


def test_interrupted_stage_made_otherwise_is_refused(cli, demo_root, run):
    """A stage stopped halfway keeps its STARTED.json record: resuming it with other values would mix them."""
    for stage in STAGES[STAGES.index("uncertainty") :]:
        shutil.rmtree(run / stage)
    (run / "metrics.json").unlink()
    (run / "seg1" / "DONE.json").unlink()
    assert (run / "seg1" / "STARTED.json").is_file()
    result = cli(*_run_args(demo_root, run, "train.lr=0.03"))
    assert_user_error(result, f"{run / 'seg1'} was made with train.lr=", "the command asks 0.03", "--recompute")


@pytest.mark.slow
def test_recompute_redoes_the_changed_stage_and_later_ones_only(cli, demo_root, run):
    before = _stamps(run)
    result = cli(*_run_args(demo_root, run, "pmm.bg_power=11", "--recompute"))
    assert result.code == 0, result.text
    after = _stamps(run)
    for stage in ("cam_train", "cams"):
        assert after[stage] == before[stage], stage
    for key in ("pseudo_masks", "seg1", "uncertainty", "seg2", "evaluate", "report", "metrics.json"):
        assert after[key] is not None and after[key] != before[key], key
    assert _done_config(run, "pseudo_masks")["pmm"]["bg_power"] == 11
    assert json.loads((run / "metrics.json").read_text())["config"]["pmm"]["bg_power"] == 11
    # and the same command again is now a no-op
    assert cli(*_run_args(demo_root, run, "pmm.bg_power=11")).code == 0
    assert _stamps(run) == after


def test_deleted_upstream_folder_invalidates_the_later_stages(cli, demo_root, run):
    before = _stamps(run)
    shutil.rmtree(run / "pseudo_masks")  # as one would to redo it
    result = cli(*_run_args(demo_root, run, "--until", "pseudo_masks"))
    assert result.code == 0, result.text
    after = _stamps(run)
    assert after["cam_train"] == before["cam_train"] and after["cams"] == before["cams"]
    assert after["pseudo_masks"] is not None
    # the later stages were made from the old masks: gone, not kept beside the new masks
    for stage in STAGES[STAGES.index("seg1") :]:
        assert not (run / stage).exists(), stage
    assert not (run / "metrics.json").exists() and not (run / "report.html").exists()


def test_a_relative_data_root_matches_from_another_folder(cli, demo_root, run, monkeypatch):
    """Records keep the folder their relative paths were relative to: the same dataset, given as
    ``data.root=demo`` from its parent and by its absolute path from elsewhere, is the same input."""
    for stage in STAGES:
        done = run / stage / "DONE.json"
        if done.is_file():
            record = json.loads(done.read_text())
            record["config"]["data"]["root"] = demo_root.name
            record["cwd"] = str(demo_root.parent)
            done.write_text(json.dumps(record))
    before = _stamps(run)
    monkeypatch.chdir(run.parent)  # not the folder "demo" is relative to
    result = cli(*_run_args(demo_root, run))
    assert result.code == 0, result.text
    assert _stamps(run) == before


def test_recompute_never_deletes_a_stage_before_from(cli, demo_root, run):
    """``--from`` takes the earlier stages as they are: one made otherwise stops the run, even with
    ``--recompute``, and nothing is deleted."""
    before = _stamps(run)
    result = cli(*_run_args(demo_root, run, "pmm.bg_power=11", "--from", "uncertainty", "--recompute"))
    assert_user_error(
        result,
        f"{run / 'pseudo_masks'} was made with pmm.bg_power=",
        "the command asks 11; --from uncertainty uses it as it is: rerun without --from to redo it",
    )
    assert _stamps(run) == before
