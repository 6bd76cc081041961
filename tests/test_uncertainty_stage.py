"""`urn uncertainty` as a stage: --probs path, outputs, resume after a kill, 2-rank sharding, bad input."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from urn.config import load_config
from urn.io import TMP_SUFFIX
from urn.stages.uncertainty import run_uncertainty


def _probs_dir(root: Path, out: Path, num_classes: int = 6) -> Path:
    """Probability maps made from the ground truth (smooth, confident, a little noise)."""
    from urn.data.layout import DatasetLayout

    layout = DatasetLayout.open(root)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in layout.ids("train"):
        gt = layout.read_gt(i)
        gt = np.where(gt == 255, 0, gt)
        logits = 4.0 * np.eye(num_classes, dtype=np.float32)[gt].transpose(2, 0, 1)
        logits += rng.normal(0, 1.5, logits.shape).astype(np.float32)
        p = np.exp(logits - logits.max(0))
        np.save(out / f"{i}.npy", (p / p.sum(0)).astype(np.float32))
    return out


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in ("summary.json", "urn-record.json")  # what made it, not data
    }


def _cfg(root: Path, *extra: str):
    return load_config("demo", [f"data.root={root}", "crf.iters=3", *extra])


def test_probs_path_writes_every_output(demo_root, tmp_path):
    probs = _probs_dir(demo_root, tmp_path / "probs")
    out = run_uncertainty(
        _cfg(demo_root, "uncertainty.reference_format=true"), tmp_path / "u", probs_dir=probs, quiet=True
    )
    ids = (demo_root / "ImageSets/Segmentation/train.txt").read_text().split()
    for i in ids:
        u = np.load(out / "uncertainty" / f"{i}.npy")
        assert u.dtype == np.float16 and u.min() >= 0 and u.max() <= 1
        assert (out / "masks" / f"{i}.png").is_file() and (out / "reference" / f"{i}.png").is_file()
    from urn.data.layout import DatasetLayout, read_target

    # the reference file reads back as (label, weight byte) the way the reference's loader does
    label, weight = read_target(out / "reference" / f"{ids[0]}.png", DatasetLayout.open(demo_root))
    from urn.io import read_mask

    assert np.array_equal(label, read_mask(out / "masks" / f"{ids[0]}.png"))
    u0 = np.load(out / "uncertainty" / f"{ids[0]}.npy").astype(np.float32)
    assert weight is not None and np.abs(weight.astype(int) - ((1 - u0) * 255).astype(int)).max() <= 1


def test_resume_after_interruption_gives_identical_outputs(demo_root, tmp_path):
    probs = _probs_dir(demo_root, tmp_path / "probs")
    full = run_uncertainty(_cfg(demo_root), tmp_path / "full", probs_dir=probs, quiet=True)
    part = tmp_path / "part"
    run_uncertainty(_cfg(demo_root), part, probs_dir=probs, limit=2, quiet=True)  # "killed" after 2 images
    (part / "masks" / f".x.png.abc{TMP_SUFFIX}").write_bytes(b"half a file")  # a kill's leftover
    (part / "uncertainty" / "train_0003.npy").write_bytes(b"\x93NUMPY trunc")  # a torn write elsewhere
    run_uncertainty(_cfg(demo_root), part, probs_dir=probs, quiet=True)
    assert _digest(full) == _digest(part)
    assert not list(part.rglob(f"*{TMP_SUFFIX}"))


def test_two_ranks_cover_every_image_once(demo_root, tmp_path, torchrun):
    probs = _probs_dir(demo_root, tmp_path / "probs")
    single = run_uncertainty(_cfg(demo_root), tmp_path / "single", probs_dir=probs, quiet=True)
    out = tmp_path / "ddp"
    result = torchrun(
        2,
        29534,
        "uncertainty",
        "demo",
        f"data.root={demo_root}",
        "crf.iters=3",
        "--probs",
        str(probs),
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert _digest(single) == _digest(out)


@pytest.mark.parametrize(
    ("corrupt", "problem"),
    [
        (lambda p: np.where(np.arange(p.size).reshape(p.shape) == 5, np.nan, p), "NaN"),
        (lambda p: p[:, :-1], "shape"),
        (lambda p: p * 2, "sum to 1"),
    ],
)
def test_bad_probability_maps_are_one_line_errors(demo_root, tmp_path, corrupt, problem):
    from urn.cli import main

    probs = _probs_dir(demo_root, tmp_path / "probs")
    first = sorted(probs.glob("*.npy"))[0]
    np.save(first, corrupt(np.load(first)).astype(np.float32))
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "uncertainty",
                "demo",
                f"data.root={demo_root}",
                "--probs",
                str(probs),
                "--out",
                str(tmp_path / "u"),
                "--quiet",
            ]
        )
    assert exit_info.value.code == 2
    assert not list((tmp_path / "u").rglob(f"*{TMP_SUFFIX}"))


def test_probability_map_errors_name_the_file(demo_root, tmp_path, capsys):
    from urn.cli import main

    probs = _probs_dir(demo_root, tmp_path / "probs")
    first = sorted(probs.glob("*.npy"))[0]
    np.save(first, np.full((6, 2, 2), np.nan, np.float32))
    with pytest.raises(SystemExit):
        main(["uncertainty", "demo", f"data.root={demo_root}", "--probs", str(probs), "--out", str(tmp_path / "u")])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]  # after the closed progress bar
    assert last.startswith("error: ") and first.name in last and "shape (6, 2, 2)" in last


def test_sigkill_mid_run_and_rerun_gives_identical_outputs(demo_root, tmp_path, kill_when):
    probs = _probs_dir(demo_root, tmp_path / "probs")
    full = run_uncertainty(_cfg(demo_root), tmp_path / "full", probs_dir=probs, quiet=True)
    out = tmp_path / "killed"
    args = [
        sys.executable,
        "-m",
        "urn",
        "uncertainty",
        "demo",
        f"data.root={demo_root}",
        "crf.iters=3",
        "--probs",
        str(probs),
        "--out",
        str(out),
        "--quiet",
    ]
    kill_when(args, lambda: bool(list((out / "masks").glob("*.png"))), timeout=120)
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert _digest(full) == _digest(out)
    assert not list(out.rglob(f"*{TMP_SUFFIX}"))
