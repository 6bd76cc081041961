"""Classifier training: exact resume, NaN stop, artifacts, classification scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from urn.cam import train
from urn.errors import TrainingError, UrnError


class KilledError(Exception):
    """Stands in for a kill right after a checkpoint was written."""


def test_resume_equals_uninterrupted(
    demo_root: Path, tmp_path: Path, make_tiny_config, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SEAM losses, head dropout (RNG) and real momentum (optimizer state) all have to resume exactly
    extra = [
        "cam.network=seam",
        "cam.iters=4",
        "cam.ckpt_every=2",
        "cam.head_dropout=0.5",
        "cam.momentum_quirk=false",
        "cam.eval_val=false",
    ]
    cfg = make_tiny_config(demo_root, *extra)
    full = train.run(cfg, tmp_path / "full")

    from urn.engine import loop as engine_loop  # the loop every training shares writes the checkpoint

    real_save = engine_loop.save_checkpoint

    def save_then_die(path: Path, state: dict) -> None:
        real_save(path, state)
        raise KilledError

    monkeypatch.setattr(engine_loop, "save_checkpoint", save_then_die)
    with pytest.raises(KilledError):
        train.run(cfg, tmp_path / "resumed")
    monkeypatch.setattr(engine_loop, "save_checkpoint", real_save)
    assert torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)["iteration"] == 2
    changed = make_tiny_config(demo_root, *extra, "cam.lr=0.02")
    with pytest.raises(UrnError, match="was trained with cam.lr=0.01, the command asks 0.02"):
        train.run(changed, tmp_path / "resumed", resume=True)
    resumed = train.run(cfg, tmp_path / "resumed")  # the same config: resumed without being asked to

    a = torch.load(full, weights_only=True)
    b = torch.load(resumed, weights_only=True)
    assert a["iteration"] == b["iteration"] == 4
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    log = [json.loads(x) for x in (tmp_path / "resumed" / "log.jsonl").read_text().splitlines()]
    assert [e["iter"] for e in log] == [1, 2, 3, 4]
    assert {"loss", "cls", "er", "ecr", "lr"} <= set(log[0])


def test_nan_loss_stops_and_keeps_checkpoint(
    demo_root: Path, tmp_path: Path, make_tiny_config, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = make_tiny_config(demo_root, "cam.iters=4", "cam.ckpt_every=2")
    real = torch.nn.functional.multilabel_soft_margin_loss
    calls = {"n": 0}

    def nan_on_third(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(train.F, "multilabel_soft_margin_loss", nan_on_third)
    with pytest.raises(TrainingError, match=r"loss became nan at iteration 3.*last.pt, iteration 2"):
        train.run(cfg, tmp_path / "run")
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["iteration"] == 2


def test_artifacts(tiny_run: dict) -> None:
    out = Path(tiny_run["checkpoint"]).parent
    state = torch.load(tiny_run["checkpoint"], weights_only=True)
    assert {"model", "optimizer", "iteration", "rng", "config", "num_classes", "class_names"} <= set(state)
    assert state["num_classes"] == 6 and state["config"]["cam"]["iters"] == 2
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"mAP", "f1_micro", "f1_macro", "n_images"} <= set(metrics["val"])
    assert (out / "config.yaml").is_file() and (out / "log.jsonl").is_file()


def test_classification_scores_hand_computed() -> None:
    scores = np.array([[2.0, -1.0], [1.0, 0.5], [-1.0, -2.0]])
    targets = np.array([[1, 0], [0, 1], [1, 0]])
    s = train.classification_scores(scores, targets)
    # class 0: ranking (+, -, +) -> AP = (1/1 + 2/3) / 2; class 1: ranking (+, -, -) -> AP = 1
    assert s["mAP"] == pytest.approx(100 * ((1 + 2 / 3) / 2 + 1) / 2)
    # predictions (logit > 0): (1,0), (1,1), (0,0) vs targets: tp 2, pred 3, true 3 -> F1 = 4 / 6
    assert s["f1_micro"] == pytest.approx(100 * 4 / 6)
    assert s["n_images"] == 3


def test_classifier_checkpoint_reads_an_earlier_runs_file_name(tmp_path: Path) -> None:
    """A `urn cam train` folder written before the loop was shared holds `checkpoint.pth`: the CAM stages
    still find it; a folder with `last.pt` uses that."""
    assert train.classifier_checkpoint(tmp_path) == tmp_path / "last.pt"  # nothing there yet: the new name
    (tmp_path / "checkpoint.pth").write_bytes(b"x")
    assert train.classifier_checkpoint(tmp_path) == tmp_path / "checkpoint.pth"
    (tmp_path / "last.pt").write_bytes(b"y")
    assert train.classifier_checkpoint(tmp_path) == tmp_path / "last.pt"
