"""Interruption through the real CLI: SIGKILL the ``urn`` process in the middle of a stage, run the same
command again, and get exactly what an uninterrupted run gives (the same weights for training, the same
bytes for files), with no temporary file left behind.

One test per stage of the classification phase and for ``urn predict``; segmentation training, the
uncertainty step and the pipeline have theirs in ``tests/engine/test_train.py``,
``tests/test_uncertainty_stage.py`` and ``tests/test_pipeline.py``. The uninterrupted reference and the
rerun go through :func:`urn.cli.main` in this process, the interrupted run is a real process; all of them
compute on one thread, so float results do not depend on how work was split between threads. The
kill comes at a random point of the first half of the work (after 1 to 8 of the 16 small images, or
at iteration 2 to 6 of 12), named in the assertion messages; the outputs may not depend on it.
"""

from __future__ import annotations

import hashlib
import random
import sys
from pathlib import Path

import pytest
import torch
from tests.reliability.conftest import assert_no_temp_files
from tests.tiny import tiny_classifier

from urn.engine.checkpoint import load_checkpoint
from urn.io import TMP_SUFFIX

pytestmark = pytest.mark.slow  # real processes, killed mid-run
URN = [sys.executable, "-m", "urn"]
_RANDOM = random.SystemRandom()  # the kill point; not the global RNG, which the stages seed
N_TRAIN = 16
CAM = [
    *tiny_classifier(),
    "cam.scales=[1.0,0.5]",
    "cam.log_every=1",
]
SEG = [
    "model.backbone.name=mobilenetv3_small_050",
    "model.backbone.weights=null",
    "model.head_channels=16",
    "model.aux_channels=8",
    "data.base_size=[64, 48]",
    "data.num_workers=0",
    "infer.base_size=[64, 48]",
    "infer.scales=[0.75, 1.0]",
    "infer.flip=true",
    "infer.crf=true",
]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo dataset of 16 train and 2 val images of 64x48."""
    from urn.data.demo import make_demo

    path = tmp_path_factory.mktemp("kill") / "demo"
    make_demo(path, n_train=N_TRAIN, n_val=2, seed=0, size=(64, 48))
    return path


@pytest.fixture
def one_thread(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201 - a generator fixture
    """This process and the ``urn`` processes it starts compute on one thread, without progress bars."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("URN_NO_PROGRESS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def classifier(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CAM classifier checkpoint (2 iterations) for the inference and PMM tests."""
    from urn.cam import train
    from urn.config import load_config

    cfg = load_config("demo", [f"data.root={root}", *CAM, "cam.iters=2", "cam.ckpt_every=2", "cam.eval_val=false"])
    return train.run(cfg, tmp_path_factory.mktemp("classifier"))


def _digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, by relative path."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _count(folder: Path, pattern: str) -> int:
    return len(list(folder.glob(pattern))) if folder.is_dir() else 0


def _iterations_logged(run: Path) -> int:
    """Iterations in ``run/log.jsonl`` once a checkpoint exists (0 before)."""
    if not (run / "last.pt").exists() or not (run / "log.jsonl").exists():
        return 0
    return (run / "log.jsonl").read_text().count("\n")


def _leave_torn_temp(final: Path) -> None:
    """What a kill inside an atomic write leaves: half a file under the temp name beside ``final``."""
    final.parent.mkdir(parents=True, exist_ok=True)
    (final.parent / f".{final.name}.killed{TMP_SUFFIX}").write_bytes(b"\x93NUMPY half a file")


def test_cam_training_killed_and_resumed_gives_identical_weights(root, tmp_path, cli, kill_when, one_thread):
    args = ["cam", "train", "demo", f"data.root={root}", *CAM, "cam.iters=12", "cam.ckpt_every=2", "--resume"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert cli(*args, "--out", full).code == 0

    at = _RANDOM.randint(2, 6)
    kill_when([*URN, *args, "--out", str(killed)], lambda: _iterations_logged(killed) >= at, timeout=180)
    reached = load_checkpoint(killed / "last.pt")["iteration"]
    assert 2 <= reached < 12, f"killed after iteration {at}: last checkpoint at {reached}"
    _leave_torn_temp(killed / "last.pt")
    assert cli(*args, "--out", killed).code == 0, f"killed after iteration {at}"

    a, b = load_checkpoint(full / "last.pt"), load_checkpoint(killed / "last.pt")
    assert b["iteration"] == 12
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), f"{key} (killed after iteration {at})"
    assert (full / "log.jsonl").read_text().count('"iter"') == (killed / "log.jsonl").read_text().count('"iter"') == 12
    assert_no_temp_files(killed)


def _kill_rerun_and_compare(args: list, full: Path, killed: Path, pattern: str, cli, kill_when) -> None:
    """A per-image stage: SIGKILL ``urn *args`` after a random number of its ``pattern`` files, leave a torn
    temp file for one missing image, rerun; the files must equal ``full``'s, with no temp file left."""
    at = _RANDOM.randint(1, N_TRAIN // 2)
    kill_when([*URN, *args, "--out", str(killed)], lambda: _count(killed, pattern) >= at, timeout=180)
    assert at <= _count(killed, pattern) < N_TRAIN, f"killed after {at} images: {_count(killed, pattern)} done"
    missing = sorted(set(_digest(full)) - set(_digest(killed)))[0]
    _leave_torn_temp(killed / missing)
    assert cli(*args, "--out", killed).code == 0, f"killed after {at} images"

    assert _digest(killed) == _digest(full), f"killed after {at} images"
    assert_no_temp_files(killed)


def test_cam_inference_killed_and_rerun_gives_identical_files(root, tmp_path, classifier, cli, kill_when, one_thread):
    args = ["cam", "infer", "demo", f"data.root={root}", *CAM, "--checkpoint", str(classifier), "--split", "train"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert cli(*args, "--out", full).code == 0
    assert _count(full, "*.npz") == N_TRAIN

    _kill_rerun_and_compare(args, full, killed, "*.npz", cli, kill_when)


def test_pmm_killed_and_rerun_gives_identical_masks(root, tmp_path, classifier, cli, kill_when, one_thread):
    from urn.cam import infer
    from urn.config import load_config

    cams = infer.run(load_config("demo", [f"data.root={root}", *CAM]), classifier, "train", tmp_path / "cams")
    args = ["pmm", "demo", f"data.root={root}", *CAM, "--cams", str(cams), "--split", "train", "--workers", "0"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert cli(*args, "--out", full).code == 0
    assert _count(full, "*.png") == N_TRAIN

    _kill_rerun_and_compare(args, full, killed, "*.png", cli, kill_when)


@pytest.fixture
def segmentor(root: Path, tmp_path: Path) -> Path:
    """A (randomly initialised) segmentation checkpoint of the ``SEG`` model."""
    from urn.config import load_config
    from urn.models import build_segmentor

    torch.manual_seed(0)
    model = build_segmentor(load_config("demo", [f"data.root={root}", *SEG]).model, 6)
    path = tmp_path / "seg.pt"
    torch.save({"model": model.state_dict()}, path)
    return path


def test_predict_killed_and_rerun_gives_identical_files(root, tmp_path, segmentor, cli, kill_when, one_thread):
    args = ["predict", "demo", f"data.root={root}", *SEG, "--checkpoint", str(segmentor), "--split", "train"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert cli(*args, "--out", full, "--quiet").code == 0
    pngs = "results/VOC2012/Segmentation/comp6_test_cls"
    assert _count(full / pngs, "*.png") == N_TRAIN and (full / "results.tar.gz").is_file()

    at = _RANDOM.randint(1, N_TRAIN // 2)
    kill_when([*URN, *args, "--out", str(killed), "--quiet"], lambda: _count(killed / pngs, "*.png") >= at, timeout=180)
    done = _count(killed / pngs, "*.png")
    assert at <= done < N_TRAIN, f"killed after {at} images: {done} done"
    missing = sorted(set(_digest(full)) - set(_digest(killed)) - {"results.tar.gz"})[0]
    _leave_torn_temp(killed / missing)
    _leave_torn_temp(killed / "results.tar.gz")  # as if killed while packing the archive
    assert cli(*args, "--out", killed, "--quiet").code == 0, f"killed after {at} images"

    assert _digest(killed) == _digest(full), f"killed after {at} images"  # the PNGs and the server tarball
    assert_no_temp_files(killed)
