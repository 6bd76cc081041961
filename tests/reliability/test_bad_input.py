"""Bad input through the real CLI: non-zero exit, a one-line message naming the file and the
problem, no traceback, nothing half-written. Each test is one case of the reliability table."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tests.reliability.conftest import assert_no_temp_files, assert_user_error
from tests.tiny import tiny_segmentor

SPLIT = "ImageSets/Segmentation/train.txt"


@pytest.fixture(autouse=True)
def _no_progress_bars(monkeypatch: pytest.MonkeyPatch) -> None:
    """`urn cam train` and `urn pmm` have no --quiet: without bars, stderr holds only the error line."""
    monkeypatch.setenv("URN_NO_PROGRESS", "1")


def _first_id(root: Path) -> str:
    return (root / SPLIT).read_text().split()[0]


def _check(cli, root: Path, *extra: str):
    return cli("data", "check", root, "--split", "train", *extra)


def _problems(result) -> list[str]:
    assert result.code == 1, result.text
    assert "Traceback" not in result.text
    return [line for line in result.out.splitlines() if line.strip()]


# ------------------------------------------------------------------------------- images and masks
def test_truncated_jpeg(cli, demo_copy):
    path = demo_copy / "JPEGImages" / f"{_first_id(demo_copy)}.jpg"
    path.write_bytes(path.read_bytes()[:300])
    lines = _problems(_check(cli, demo_copy))
    assert any(str(path) in line and "unreadable image" in line for line in lines), lines


def test_corrupt_png_mask(cli, demo_copy):
    path = demo_copy / "SegmentationClass" / f"{_first_id(demo_copy)}.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    lines = _problems(_check(cli, demo_copy))
    assert any(str(path) in line and "unreadable" in line for line in lines), lines


def test_zero_byte_image(cli, demo_copy):
    path = demo_copy / "JPEGImages" / f"{_first_id(demo_copy)}.jpg"
    path.write_bytes(b"")
    lines = _problems(_check(cli, demo_copy))
    assert any(str(path) in line and "empty file" in line for line in lines), lines


def test_image_that_is_a_directory(cli, demo_copy):
    path = demo_copy / "JPEGImages" / f"{_first_id(demo_copy)}.jpg"
    path.unlink()
    path.mkdir()
    lines = _problems(_check(cli, demo_copy))
    assert any(str(path) in line and "not a file" in line for line in lines), lines


def test_missing_image(cli, demo_copy):
    path = demo_copy / "JPEGImages" / f"{_first_id(demo_copy)}.jpg"
    path.unlink()
    lines = _problems(_check(cli, demo_copy))
    assert any(_first_id(demo_copy) in line and ("not found" in line or "no image" in line) for line in lines), lines


def test_mask_of_the_wrong_size(cli, demo_copy):
    path = demo_copy / "SegmentationClass" / f"{_first_id(demo_copy)}.png"
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(path)
    lines = _problems(_check(cli, demo_copy))
    assert any(str(path) in line and "size" in line for line in lines), lines


def test_mask_label_out_of_range(cli, demo_copy):
    path = demo_copy / "SegmentationClass" / f"{_first_id(demo_copy)}.png"
    mask = np.asarray(Image.open(path)).copy()
    mask[0, 0] = 77
    Image.fromarray(mask).save(path)
    lines = _problems(_check(cli, demo_copy))
    assert any(str(path) in line and "77" in line for line in lines), lines


def test_grey_and_palette_masks_both_just_work(cli, demo_copy):
    path = demo_copy / "SegmentationClass" / f"{_first_id(demo_copy)}.png"
    grey = np.asarray(Image.open(path)).copy()
    Image.fromarray(grey, mode="L").save(path)  # 8-bit grey where a palette was
    assert _check(cli, demo_copy).code == 0


def test_contradicting_image_labels(cli, demo_copy):
    labels = json.loads((demo_copy / "cls_labels.json").read_text())
    first = _first_id(demo_copy)
    labels[first] = [c for c in range(1, 6) if c not in labels[first]][:1]
    (demo_copy / "cls_labels.json").write_text(json.dumps(labels))
    lines = _problems(_check(cli, demo_copy))
    assert any(first in line and "label" in line for line in lines), lines


def test_image_label_outside_the_class_list(cli, demo_copy):
    labels = json.loads((demo_copy / "cls_labels.json").read_text())
    labels[_first_id(demo_copy)] = [42]
    (demo_copy / "cls_labels.json").write_text(json.dumps(labels))
    result = _check(cli, demo_copy)
    assert result.code != 0 and "Traceback" not in result.text
    assert "cls_labels.json" in result.text and "42" in result.text


def test_cls_labels_npy_with_wrong_vector_length(cli, demo_copy):
    labels = json.loads((demo_copy / "cls_labels.json").read_text())
    (demo_copy / "cls_labels.json").unlink()
    np.save(demo_copy / "cls_labels.npy", {k: np.zeros(7, np.float32) for k in labels}, allow_pickle=True)
    result = _check(cli, demo_copy)
    assert result.code != 0 and "Traceback" not in result.text
    assert "cls_labels.npy" in result.text and "7" in result.text


# ----------------------------------------------------------------------------------- split files
def test_split_with_blank_lines_and_crlf_is_accepted(cli, demo_copy):
    ids = (demo_copy / SPLIT).read_text().split()
    (demo_copy / SPLIT).write_bytes(("\r\n".join(ids) + "\r\n\r\n  \r\n").encode())
    assert _check(cli, demo_copy).code == 0


def test_split_with_duplicates(cli, demo_copy):
    ids = (demo_copy / SPLIT).read_text().split()
    (demo_copy / SPLIT).write_text("\n".join(ids + ids[:1]) + "\n")
    result = _check(cli, demo_copy)
    assert result.code != 0 and "Traceback" not in result.text
    assert "train.txt" in result.text and "duplicate" in result.text


def test_split_with_unknown_id(cli, demo_copy):
    with open(demo_copy / SPLIT, "a") as fh:
        fh.write("no_such_image\n")
    lines = _problems(_check(cli, demo_copy))
    assert any("no_such_image" in line for line in lines), lines


def test_split_id_escaping_the_root_is_rejected(cli, demo_copy):
    with open(demo_copy / SPLIT, "a") as fh:
        fh.write("../../etc/passwd\n")
    result = _check(cli, demo_copy)
    assert result.code != 0 and "Traceback" not in result.text
    assert "train.txt" in result.text and "../../etc/passwd" in result.text


def test_empty_split(cli, demo_copy):
    (demo_copy / SPLIT).write_text("\n\n")
    result = _check(cli, demo_copy)
    assert result.code != 0 and "Traceback" not in result.text
    assert "train.txt" in result.text and "empty" in result.text


def test_missing_split_file(cli, demo_copy):
    result = cli("data", "check", demo_copy, "--split", "nosuch")
    assert result.code != 0 and "Traceback" not in result.text
    assert "nosuch" in result.text


# -------------------------------------------------------------------------------------- configs
def test_config_with_unknown_key(cli, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  iterations: 5\n")
    line = assert_user_error(cli("show-config", cfg), "c.yaml", "unknown key 'train.iterations'", "allowed:")
    assert "iters" in line
    assert "batch_size" in line


def test_config_with_wrong_type(cli):
    assert_user_error(cli("show-config", "demo", "train.lr=fast"), "'train.lr' must be float", "'fast'")


def test_config_with_bad_choice_lists_allowed_values(cli):
    assert_user_error(cli("show-config", "demo", "seg2.weighting=medium"), "'seg2.weighting'", "'hard'", "'soft'")


def test_unknown_preset(cli):
    assert_user_error(cli("show-config", "nope"), "nope", "presets:")


# ---------------------------------------------------------------------------------- checkpoints
def test_missing_checkpoint(cli, demo_copy, tmp_path):
    assert_user_error(
        cli("eval", "demo", f"data.root={demo_copy}", "--checkpoint", tmp_path / "none.pt", "--quiet"),
        "none.pt",
        "checkpoint not found",
    )


def test_mismatched_checkpoint(cli, demo_copy, tmp_path):
    torch.save({"model": {"foo.weight": torch.zeros(2)}}, tmp_path / "other.pt")
    assert_user_error(
        cli(
            "eval",
            "demo",
            f"data.root={demo_copy}",
            "model.backbone.weights=null",
            "--checkpoint",
            tmp_path / "other.pt",
            "--quiet",
        ),
        "other.pt",
        "does not match the model",
    )


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/urn_reliability_pwned",))


def test_malicious_pickle_checkpoint_is_refused(cli, demo_copy, tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": _Evil()}, path)
    assert_user_error(
        cli("eval", "demo", f"data.root={demo_copy}", "model.backbone.weights=null", "--checkpoint", path, "--quiet"),
        "evil.pt",
        "refused to load",
    )
    assert not Path("/tmp/urn_reliability_pwned").exists()


def test_malicious_pickle_labels_npy_is_refused(cli, demo_copy):
    (demo_copy / "cls_labels.json").unlink()
    with open(demo_copy / "cls_labels.npy", "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "|O", "fortran_order": False, "shape": ()})
        pickle.dump(_Evil(), fh)
    result = _check(cli, demo_copy)
    assert result.code != 0 and "Traceback" not in result.text and "cls_labels.npy" in result.text
    assert not Path("/tmp/urn_reliability_pwned").exists()


# ------------------------------------------------------------------------------------- outputs
def test_output_directory_not_writable(cli, demo_root, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    result = cli(
        "score-masks",
        demo_root / "SegmentationClass",
        demo_root / "SegmentationClass",
        "--json",
        blocker / "scores.json",
        "--classes",
        demo_root / "classes.txt",
    )
    assert_user_error(result, "cannot write here", f"({blocker} is a file, not a folder)")


def test_score_masks_with_missing_predictions(cli, demo_root, tmp_path):
    (tmp_path / "pred").mkdir()
    assert_user_error(
        cli("score-masks", tmp_path / "pred", demo_root / "SegmentationClass"), "pred", "predictions missing"
    )


def test_score_masks_with_a_bad_id_list(cli, demo_root, tmp_path):
    """``--ids`` is read by the same split parser as the dataset's split files (one message per problem)."""
    first = (demo_root / "ImageSets/Segmentation/train.txt").read_text().split()[0]
    ids = tmp_path / "ids.txt"
    ids.write_text(f"{first}\n{first}\n")
    gt = demo_root / "SegmentationClass"
    result = cli("score-masks", gt, gt, "--ids", ids, "--classes", demo_root / "classes.txt")
    assert_user_error(result, str(ids), f"line 2: duplicate id '{first}'")


def test_demo_data_into_unwritable_place(cli, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    result = cli("data", "demo", blocker / "demo", "--n-train", "2", "--n-val", "1")
    assert_user_error(result, "cannot write here", f"({blocker} is a file, not a folder)")
    assert_no_temp_files(tmp_path)


# ------------------------------------------------------------------- CAM files given to `urn pmm`
@pytest.fixture
def cams(demo_copy: Path, tmp_path: Path) -> Path:
    """Valid CAM files (random maps of each image's tagged classes) for the train split of ``demo_copy``."""
    from urn.cam.infer import save_cams

    labels = json.loads((demo_copy / "cls_labels.json").read_text())
    rng = np.random.default_rng(0)
    for image_id in (demo_copy / SPLIT).read_text().split():
        h, w = np.asarray(Image.open(demo_copy / "JPEGImages" / f"{image_id}.jpg")).shape[:2]
        save_cams(tmp_path / "cams" / f"{image_id}.npz", labels[image_id], rng.random((len(labels[image_id]), h, w)))
    return tmp_path / "cams"


def _pmm(cli, root: Path, cams: Path, out: Path):
    return cli("pmm", "demo", f"data.root={root}", "--cams", cams, "--split", "train", "--out", out)


def _rewrite_cams(path: Path, **changes: np.ndarray) -> None:
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays.update(changes)
    np.savez(path, **arrays)


def _assert_no_mask_for(out: Path, cam_file: Path) -> None:
    assert not (out / f"{cam_file.stem}.png").exists()
    assert_no_temp_files(out)


def test_cam_file_with_class_index_300(cli, demo_copy, cams, tmp_path):
    bad = cams / f"{_first_id(demo_copy)}.npz"
    with np.load(bad) as z:
        _rewrite_cams(bad, classes=np.full_like(z["classes"], 300))
    assert_user_error(_pmm(cli, demo_copy, cams, tmp_path / "out"), str(bad), "CAM class indices [300]", "1..5")
    _assert_no_mask_for(tmp_path / "out", bad)


def test_cam_file_with_negative_class_index(cli, demo_copy, cams, tmp_path):
    bad = cams / f"{_first_id(demo_copy)}.npz"
    with np.load(bad) as z:
        _rewrite_cams(bad, classes=np.full_like(z["classes"], -1))
    assert_user_error(_pmm(cli, demo_copy, cams, tmp_path / "out"), str(bad), "CAM class indices [-1]")
    _assert_no_mask_for(tmp_path / "out", bad)


def test_truncated_cam_file(cli, demo_copy, cams, tmp_path):
    bad = cams / f"{_first_id(demo_copy)}.npz"
    bad.write_bytes(bad.read_bytes()[:200])
    assert_user_error(_pmm(cli, demo_copy, cams, tmp_path / "out"), str(bad), "unreadable CAM file")
    _assert_no_mask_for(tmp_path / "out", bad)


def test_nan_in_cam_file(cli, demo_copy, cams, tmp_path):
    bad = cams / f"{_first_id(demo_copy)}.npz"
    with np.load(bad) as z:
        _rewrite_cams(bad, cams=np.full_like(z["cams"], np.nan))
    assert_user_error(_pmm(cli, demo_copy, cams, tmp_path / "out"), str(bad), "NaN")
    _assert_no_mask_for(tmp_path / "out", bad)


def test_cam_file_of_the_wrong_size(cli, demo_copy, cams, tmp_path):
    bad = cams / f"{_first_id(demo_copy)}.npz"
    with np.load(bad) as z:
        _rewrite_cams(bad, cams=z["cams"][:, :10, :12])
    assert_user_error(_pmm(cli, demo_copy, cams, tmp_path / "out"), str(bad), "CAM size (10, 12) != image size")
    _assert_no_mask_for(tmp_path / "out", bad)


def test_missing_cam_file(cli, demo_copy, cams, tmp_path):
    bad = cams / f"{_first_id(demo_copy)}.npz"
    bad.unlink()
    assert_user_error(_pmm(cli, demo_copy, cams, tmp_path / "out"), str(bad), "CAM file not found")
    _assert_no_mask_for(tmp_path / "out", bad)


def test_disk_full_while_writing_pseudo_masks(cli, demo_copy, cams, tmp_path, monkeypatch):
    import errno
    import os

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    first = tmp_path / "out" / "urn-record.json"  # the first file a per-image command writes
    result = _pmm(cli, demo_copy, cams, tmp_path / "out")
    assert_user_error(result, str(first), "write failed (No space left on device)")
    # neither the mask nor its temporary file (the folder itself, made by this run, is removed too)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


# -------------------------------------------------------- probability maps given to `urn uncertainty`
@pytest.fixture
def probs(demo_copy: Path, tmp_path: Path) -> Path:
    """Uniform (6, H, W) probability maps for the train split of ``demo_copy``."""
    for image_id in (demo_copy / SPLIT).read_text().split():
        h, w = np.asarray(Image.open(demo_copy / "JPEGImages" / f"{image_id}.jpg")).shape[:2]
        (tmp_path / "probs").mkdir(exist_ok=True)
        np.save(tmp_path / "probs" / f"{image_id}.npy", np.full((6, h, w), 1 / 6, np.float32))
    return tmp_path / "probs"


def _uncertainty(cli, root: Path, probs: Path, out: Path):
    return cli("uncertainty", "demo", f"data.root={root}", "--probs", probs, "--out", out, "--quiet")


def _assert_no_uncertainty_for(out: Path, npy: Path) -> None:
    assert not (out / "masks" / f"{npy.stem}.png").exists()
    assert not (out / "uncertainty" / npy.name).exists()
    assert_no_temp_files(out)


def test_nan_in_input_probabilities(cli, demo_copy, probs, tmp_path):
    bad = probs / f"{_first_id(demo_copy)}.npy"
    p = np.load(bad)
    p[:, 3, 4] = np.nan
    np.save(bad, p)
    assert_user_error(_uncertainty(cli, demo_copy, probs, tmp_path / "u"), str(bad), "contains NaN or inf")
    _assert_no_uncertainty_for(tmp_path / "u", bad)


def test_negative_value_in_input_probabilities(cli, demo_copy, probs, tmp_path):
    bad = probs / f"{_first_id(demo_copy)}.npy"
    p = np.load(bad)
    p[0, 0, 0], p[1, 0, 0] = -0.5, p[1, 0, 0] + 0.5  # still sums to 1
    np.save(bad, p)
    assert_user_error(_uncertainty(cli, demo_copy, probs, tmp_path / "u"), str(bad), "negative values")
    _assert_no_uncertainty_for(tmp_path / "u", bad)


def test_input_probabilities_of_the_wrong_size(cli, demo_copy, probs, tmp_path):
    bad = probs / f"{_first_id(demo_copy)}.npy"
    np.save(bad, np.full((6, 10, 12), 1 / 6, np.float32))
    assert_user_error(_uncertainty(cli, demo_copy, probs, tmp_path / "u"), str(bad), "shape (6, 10, 12), expected (6,")
    _assert_no_uncertainty_for(tmp_path / "u", bad)


def test_corrupt_npy_probability_map(cli, demo_copy, probs, tmp_path):
    bad = probs / f"{_first_id(demo_copy)}.npy"
    bad.write_bytes(bad.read_bytes()[:100])
    assert_user_error(_uncertainty(cli, demo_copy, probs, tmp_path / "u"), str(bad), "unreadable .npy")
    _assert_no_uncertainty_for(tmp_path / "u", bad)


# ----------------------------------------------------------- pseudo-masks and weight maps for training
TINY_SEG = [
    *tiny_segmentor("mobilenetv3_small_050", 8),
    "seg2.batch_size=2",
    "seg2.iters=2",
    "train.batch_size=2",
    "train.iters=2",
]


def _train(cli, root: Path, out: Path, *extra: str, phase: str = "seg2"):
    return cli("train", "demo", f"data.root={root}", *TINY_SEG, *extra, "--phase", phase, "--out", out, "--quiet")


def _weights(root: Path, folder: Path, value: np.ndarray | float, size: tuple[int, int] | None = None) -> Path:
    """One uncertainty .npy per train image (every one the same, so whichever is read first is bad)."""
    folder.mkdir()
    for image_id in (root / SPLIT).read_text().split():
        h, w = size or np.asarray(Image.open(root / "JPEGImages" / f"{image_id}.jpg")).shape[:2]
        np.save(folder / f"{image_id}.npy", np.full((h, w), value, np.float32))
    return folder


def _assert_no_checkpoint(out: Path) -> None:
    assert not (out / "last.pt").exists()
    assert_no_temp_files(out)


def test_weight_map_of_the_wrong_size(cli, demo_copy, tmp_path):
    unc = _weights(demo_copy, tmp_path / "unc", 0.0, size=(10, 12))
    extra = (f"data.pseudo_masks={demo_copy / 'SegmentationClass'}", f"data.uncertainty={unc}")
    line = assert_user_error(_train(cli, demo_copy, tmp_path / "seg2", *extra), str(unc), ".npy", "weight size 12x10")
    assert "!= image size 64x48" in line
    _assert_no_checkpoint(tmp_path / "seg2")


def test_weight_map_with_negative_values(cli, demo_copy, tmp_path):
    unc = _weights(demo_copy, tmp_path / "unc", -0.5)
    extra = (f"data.pseudo_masks={demo_copy / 'SegmentationClass'}", f"data.uncertainty={unc}")
    assert_user_error(_train(cli, demo_copy, tmp_path / "seg2", *extra), str(unc), ".npy", "outside [0, 1]")
    _assert_no_checkpoint(tmp_path / "seg2")


def test_pseudo_mask_with_label_300(cli, demo_copy, tmp_path):
    masks = tmp_path / "masks"
    masks.mkdir()
    for path in (demo_copy / "SegmentationClass").glob("*.png"):
        mask = np.asarray(Image.open(path)).astype(np.uint16)
        mask[0, 0] = 300
        Image.fromarray(mask).save(masks / path.name)  # a 16-bit PNG: 300 fits
    result = _train(cli, demo_copy, tmp_path / "seg1", f"data.pseudo_masks={masks}", phase="seg1")
    assert_user_error(result, str(masks), ".png", "label values 0..300 outside 0..255")
    _assert_no_checkpoint(tmp_path / "seg1")


def test_malicious_pickle_backbone_weights_are_refused(cli, demo_copy, tmp_path):
    evil = tmp_path / "backbone.pth"
    torch.save({"state_dict": _Evil()}, evil)
    extra = (f"model.backbone.weights={evil}", "data.fully_supervised=true")
    result = _train(cli, demo_copy, tmp_path / "seg1", *extra, phase="seg1")
    assert_user_error(result, str(evil), "refused to load", "posix.system")
    assert not Path("/tmp/urn_reliability_pwned").exists()
    _assert_no_checkpoint(tmp_path / "seg1")


# ------------------------------------------------------------------------------------ checkpoints
def test_truncated_checkpoint(cli, demo_copy, tmp_path):
    from urn.config import load_config
    from urn.models import build_segmentor

    model = build_segmentor(load_config("demo", TINY_SEG).model, 6)
    path = tmp_path / "last.pt"
    torch.save({"model": model.state_dict()}, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # a copy cut short
    result = cli(
        "predict", "demo", f"data.root={demo_copy}", *TINY_SEG, "--checkpoint", path, "--split", "val",
        "--out", tmp_path / "pred", "--quiet",
    )  # fmt: skip
    line = assert_user_error(result, str(path), "unreadable checkpoint")
    assert len(line.split("unreadable checkpoint")[1]) < 120, line  # the reason, not torch's paragraph of advice
    assert not (tmp_path / "pred").exists()


def test_segmentation_checkpoint_given_to_cam_inference(cli, demo_copy, tmp_path):
    torch.save({"model": {"head.weight": torch.zeros(6, 8)}, "iteration": 2}, tmp_path / "seg.pt")
    result = cli(
        "cam", "infer", "demo", f"data.root={demo_copy}", "--checkpoint", tmp_path / "seg.pt", "--out", tmp_path / "c"
    )
    assert_user_error(result, "seg.pt", "not a `urn cam train` checkpoint")
    assert not (tmp_path / "c").exists()


def test_existing_classifier_run_that_cannot_be_resumed_is_not_overwritten(cli, demo_copy, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "last.pt").write_bytes(b"an earlier run's weights")
    result = cli("cam", "train", "demo", f"data.root={demo_copy}", "--out", tmp_path / "run")
    assert_user_error(result, "last.pt", "unreadable checkpoint", "cannot resume it", "--restart")
    assert (tmp_path / "run" / "last.pt").read_bytes() == b"an earlier run's weights"


# ----------------------------------------------------------------------------- configs and labels
def test_config_that_is_not_valid_yaml(cli, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  iters: [5\n  lr: 0.1\n")
    assert_user_error(cli("show-config", cfg), str(cfg), "invalid YAML")


def test_config_file_not_found(cli, tmp_path):
    assert_user_error(cli("show-config", tmp_path / "nowhere.yaml"), "nowhere.yaml", "config file not found")


def test_override_without_a_value(cli):
    assert_user_error(cli("show-config", "demo", "train.iters"), "'train.iters'", "section.key=value")


def test_pipeline_stage_that_does_not_exist(cli, demo_root, tmp_path):
    result = cli("run", "demo", f"data.root={demo_root}", "--from", "segx", "--out", tmp_path / "run", "--quiet")
    assert_user_error(result, "'--from'", "'segx'", "cam_train", "seg2", "urn run --help")
    assert not (tmp_path / "run").exists()  # refused before anything is written


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (("train", "demo", "--phase", "seg3"), ("'--phase'", "'seg3'", "'seg1', 'seg2'", "urn train --help")),
        (("train", "demo", "--bogus"), ("No such option: --bogus", "urn train --help")),
        (("train",), ("Missing argument 'config'", "urn train --help")),
        (("cam", "infer", "demo"), ("Missing option", "urn cam infer --help")),
        (("data", "demo", "--n-train", "0", "x"), ("'--n-train'", "urn data demo --help")),
    ],
    ids=["bad-choice", "unknown-option", "missing-argument", "missing-option", "out-of-range"],
)
def test_usage_errors_are_one_line(cli, args, fragments):
    """click's usage errors read like every other user error: one ``error:`` line, exit code 2."""
    assert_user_error(cli(*args), *fragments)


def test_image_labels_that_are_not_valid_json(cli, demo_copy, tmp_path):
    (demo_copy / "cls_labels.json").write_text('{"train_0000": [1, 2]')
    result = cli("cam", "train", "demo", f"data.root={demo_copy}", "--out", tmp_path / "run")
    assert_user_error(result, str(demo_copy / "cls_labels.json"), "invalid JSON")
    assert not (tmp_path / "run" / "last.pt").exists()


# ------------------------------------------------------------------ bad input met by worker processes
def test_unreadable_image_met_by_a_loader_worker_in_classifier_training(cli, demo_copy, tmp_path):
    bad = demo_copy / "JPEGImages" / f"{_first_id(demo_copy)}.jpg"
    bad.write_bytes(bad.read_bytes()[:300])
    tiny = ("cam.backbone.name=mobilenetv3_small_050", "cam.backbone.weights=null", "cam.crop_size=48", "cam.iters=4")
    tiny += ("cam.batch_size=6",)  # the whole split: the first batch holds the bad image
    args = ("cam", "train", "demo", f"data.root={demo_copy}", *tiny, "cam.num_workers=1", "--out", tmp_path / "run")
    result = cli(*args)
    assert_user_error(result, str(bad), "unreadable image")
    assert not (tmp_path / "run" / "last.pt").exists()
    assert_no_temp_files(tmp_path / "run")


def test_truncated_cam_file_met_by_a_pmm_worker_process(demo_copy, cams, tmp_path):
    """Once a hang: the worker's DataError could not be unpickled in the parent and the pool waited forever."""
    import subprocess
    import sys

    from tests.reliability.conftest import CliResult

    bad = cams / f"{_first_id(demo_copy)}.npz"
    bad.write_bytes(bad.read_bytes()[:200])
    args = ["pmm", "demo", f"data.root={demo_copy}", "--cams", str(cams), "--out", str(tmp_path / "out")]
    proc = subprocess.run(
        [sys.executable, "-m", "urn", *args, "--workers", "1"], capture_output=True, text=True, timeout=180
    )
    assert_user_error(CliResult(proc.returncode, proc.stdout, proc.stderr), str(bad), "unreadable CAM file")
    _assert_no_mask_for(tmp_path / "out", bad)
