"""Bad input through the real CLI: non-zero exit, a one-line message naming the file and the
problem, no traceback, nothing half-written. Each test is one case of the reliability table."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tests.reliability.conftest import assert_no_temp_files, assert_user_error

SPLIT = "ImageSets/Segmentation/train.txt"


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
    assert_user_error(result, "blocker", "cannot write")


def test_score_masks_with_missing_predictions(cli, demo_root, tmp_path):
    (tmp_path / "pred").mkdir()
    assert_user_error(
        cli("score-masks", tmp_path / "pred", demo_root / "SegmentationClass"), "pred", "predictions missing"
    )


def test_demo_data_into_unwritable_place(cli, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    result = cli("data", "demo", blocker / "demo", "--n-train", "2", "--n-val", "1")
    assert_user_error(result, "blocker")
    assert_no_temp_files(tmp_path)
