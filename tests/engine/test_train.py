"""Segmentation training: runs, resumes exactly, stops cleanly, refuses NaN, runs under torchrun."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tests.tiny import tiny_segmentor

from urn.config import load_config
from urn.engine.checkpoint import load_checkpoint
from urn.errors import TrainingError, UrnError
from urn.stages.segmentation import run_train

TINY = [
    *tiny_segmentor(),
    "train.batch_size=2",
    "train.iters=6",
    "train.ckpt_every=2",
    "train.log_every=1",
    "train.val_every=0",
    "train.lr=0.01",
]


def tiny_config(root: Path, *extra: str):
    return load_config("demo", [f"data.root={root}", "data.fully_supervised=true", *TINY, *extra])


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_sigterm_saves_and_resume_is_exact(demo_root, tmp_path, monkeypatch):
    full = run_train(tiny_config(demo_root), tmp_path / "full", quiet=True)
    import urn.engine.train as train_module

    real_poly = train_module.poly_lr

    def poly_then_term(base, it, total, power, min_lr):
        if it == 3:  # a SIGTERM arrives during iteration 4
            os.kill(os.getpid(), signal.SIGTERM)
        return real_poly(base, it, total, power, min_lr)

    monkeypatch.setattr(train_module, "poly_lr", poly_then_term)
    with pytest.raises(UrnError, match="stopped by signal .* at iteration 4; checkpoint saved"):
        run_train(tiny_config(demo_root), tmp_path / "cut", quiet=True)
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["iteration"] == 4
    monkeypatch.setattr(train_module, "poly_lr", real_poly)
    resumed = run_train(tiny_config(demo_root), tmp_path / "cut", resume=True, quiet=True)
    _assert_same(_weights(full), _weights(resumed))
    iters = [line for line in (tmp_path / "cut" / "log.jsonl").read_text().splitlines() if '"loss"' in line]
    assert len(iters) == 6  # the log reads like one clean run


def test_sigkill_and_resume_gives_identical_weights(demo_root, tmp_path, kill_when):
    """Kill the real process at whatever point it has reached after its first checkpoint."""
    full = run_train(tiny_config(demo_root), tmp_path / "full", quiet=True)
    out = tmp_path / "killed"
    args = [
        sys.executable,
        "-m",
        "urn",
        "train",
        "demo",
        f"data.root={demo_root}",
        "data.fully_supervised=true",
        *TINY,
        "--out",
        str(out),
        "--quiet",
    ]
    kill_when(args, lambda: (out / "last.pt").exists())
    subprocess.run([*args, "--resume"], check=True, stdout=subprocess.DEVNULL)
    _assert_same(_weights(full), _weights(out / "last.pt"))
    assert not list(out.glob("*.urn-tmp"))


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(demo_root, tmp_path, monkeypatch):
    import urn.losses as losses

    real = losses.SegmentationLoss.terms
    calls = {"n": 0}

    def nan_on_fourth(self, outputs, target, weight=None):
        calls["n"] += 1
        loss, parts = real(self, outputs, target, weight)
        return (loss * float("nan") if calls["n"] == 4 else loss), parts

    monkeypatch.setattr(losses.SegmentationLoss, "terms", nan_on_fourth)
    with pytest.raises(TrainingError, match="loss became nan at iteration 4"):
        run_train(tiny_config(demo_root), tmp_path / "nan", quiet=True)
    assert load_checkpoint(tmp_path / "nan" / "last.pt")["iteration"] == 2


def test_bad_sample_stops_training_unless_skipping_is_allowed(demo_copy, tmp_path):
    first = (demo_copy / "ImageSets/Segmentation/train.txt").read_text().split()[0]
    (demo_copy / "JPEGImages" / f"{first}.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(UrnError, match=f"{first}.jpg: unreadable image"):
        run_train(tiny_config(demo_copy), tmp_path / "strict", quiet=True)
    last = run_train(tiny_config(demo_copy, "data.skip_bad_samples=5"), tmp_path / "lenient", quiet=True)
    assert load_checkpoint(last)["iteration"] == 6
    log = (tmp_path / "lenient" / "log.jsonl").read_text()
    assert "skipped_sample" in log and f"{first}.jpg" in log
    with pytest.raises(UrnError, match="more than data.skip_bad_samples=1"):
        run_train(tiny_config(demo_copy, "data.skip_bad_samples=1", "train.iters=12"), tmp_path / "l2", quiet=True)


def test_pseudo_mask_training_never_reads_ground_truth(demo_copy, tmp_path):
    pseudo = tmp_path / "pseudo"
    (demo_copy / "SegmentationClass").rename(pseudo)  # the GT folder is gone; its files serve as targets
    cfg = load_config("demo", [f"data.root={demo_copy}", f"data.pseudo_masks={pseudo}", *TINY, "train.iters=2"])
    assert load_checkpoint(run_train(cfg, tmp_path / "run", quiet=True))["iteration"] == 2


def test_two_process_gloo_torchrun(demo_root, tmp_path, torchrun):
    out = tmp_path / "ddp"
    result = torchrun(
        2,
        29533,
        "train",
        "demo",
        f"data.root={demo_root}",
        "data.fully_supervised=true",
        *TINY,
        "train.iters=3",
        "train.batch_size=4",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert load_checkpoint(out / "last.pt")["iteration"] == 3


def test_seg2_interrupted_and_resumed_equals_uninterrupted(demo_root, tmp_path, monkeypatch):
    """Seg-2 (uncertainty-weighted, head dropout) through the shared loop: a run stopped after its
    iteration-2 checkpoint resumes to the uninterrupted run's exact weights, and every checkpoint holds
    each rank's full RNG state (torch CPU and CUDA, NumPy, Python)."""
    from tests.engine.test_train_weighting import _reference_pngs

    import urn.engine.loop as loop_module

    _, grey, unc = _reference_pngs(demo_root, tmp_path / "masks")
    seg2 = [
        "--phase",
        "seg2",
        f"data.pseudo_masks={grey}",
        f"data.uncertainty={unc}",
        "seg2.batch_size=2",
        "seg2.iters=4",
        "seg2.ckpt_every=2",
        "seg2.val_every=0",
        "seg2.lr=0.01",
    ]
    cfg = load_config("demo", [f"data.root={demo_root}", *tiny_segmentor(), *[s for s in seg2 if "=" in s]])
    assert cfg.model.dropout > 0 and cfg.seg2.weighting == "hard"
    full = run_train(cfg, tmp_path / "full", phase="seg2", quiet=True)

    real = loop_module.save_checkpoint

    class KilledError(Exception):
        pass

    def save_then_die(path, state):
        real(path, state)
        raise KilledError

    monkeypatch.setattr(loop_module, "save_checkpoint", save_then_die)
    with pytest.raises(KilledError):
        run_train(cfg, tmp_path / "cut", phase="seg2", quiet=True)
    monkeypatch.setattr(loop_module, "save_checkpoint", real)
    stored = load_checkpoint(tmp_path / "cut" / "last.pt")
    assert stored["iteration"] == 2
    assert len(stored["rng"]) == 1 and set(stored["rng"][0]) == {"torch", "cuda", "numpy", "python"}
    resumed = run_train(cfg, tmp_path / "cut", phase="seg2", quiet=True)
    _assert_same(_weights(full), _weights(resumed))


def test_scalars_also_go_to_tensorboard_when_it_is_installed(demo_root, tmp_path, monkeypatch):
    """Every numeric field of a log line becomes a TensorBoard scalar at its iteration (rank 0)."""
    import urn.engine.loop as loop_module

    written: list[tuple[str, float, int]] = []
    opened: list[tuple[Path, int]] = []

    class FakeWriter:
        def add_scalar(self, tag, value, step):
            written.append((tag, value, step))

        def close(self):
            written.append(("closed", 0.0, 0))

    def fake_writer(folder, purge_step=0):
        opened.append((folder, purge_step))
        return FakeWriter()

    monkeypatch.setattr(loop_module, "tensorboard_writer", fake_writer)
    run_train(tiny_config(demo_root), tmp_path / "tb", quiet=True)
    assert opened == [(tmp_path / "tb" / "tb", 0)]
    assert [step for tag, _, step in written if tag == "loss"] == [1, 2, 3, 4, 5, 6]
    assert {"lr", "loss_out", "sec_per_iter"} <= {tag for tag, _, _ in written}
    assert written[-1][0] == "closed"
    # without the package the loop writes log.jsonl only
    monkeypatch.setattr(loop_module, "tensorboard_writer", lambda folder, purge_step=0: None)
    run_train(tiny_config(demo_root), tmp_path / "plain", quiet=True)
    assert (tmp_path / "plain" / "log.jsonl").is_file() and not (tmp_path / "plain" / "tb").exists()
