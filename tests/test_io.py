"""Atomic writes, palette PNGs and checked reads."""

import numpy as np
import pytest
from PIL import Image

from urn.errors import DataError, UrnError
from urn.io import (
    TMP_SUFFIX,
    atomic_open,
    atomic_save_npy,
    read_image,
    read_mask,
    remove_stale_temps,
    remove_stale_temps_of,
    save_palette_png,
    voc_palette,
)


def test_voc_palette_matches_the_devkit():
    pal = voc_palette()
    assert pal.shape == (256, 3)
    assert pal[0].tolist() == [0, 0, 0]
    assert pal[1].tolist() == [128, 0, 0]  # aeroplane
    assert pal[15].tolist() == [192, 128, 128]  # person
    assert pal[255].tolist() == [224, 224, 192]  # ignore / void


def test_palette_png_round_trip(tmp_path):
    mask = np.array([[0, 1, 2], [20, 255, 7]], np.uint8)
    save_palette_png(tmp_path / "m.png", mask)
    with Image.open(tmp_path / "m.png") as im:
        assert im.mode == "P"
    assert np.array_equal(read_mask(tmp_path / "m.png"), mask)
    # the same indices stored as 8-bit grey read the same
    Image.fromarray(mask, mode="L").save(tmp_path / "g.png")
    assert np.array_equal(read_mask(tmp_path / "g.png"), mask)


def test_failed_write_leaves_neither_temp_nor_partial_file(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError), atomic_open(target) as fh:
        fh.write(b"half")
        raise RuntimeError("killed mid-write")
    assert not target.exists()
    assert not list(tmp_path.glob(f"*{TMP_SUFFIX}"))


def test_stale_temps_are_swept(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / f".a.png.x{TMP_SUFFIX}").write_bytes(b"x")
    assert remove_stale_temps(tmp_path) == 1
    assert not list(tmp_path.rglob(f"*{TMP_SUFFIX}"))


def test_remove_stale_temps_of_named_files_only(tmp_path):
    mine = tmp_path / f".a.png.x1{TMP_SUFFIX}"
    other_rank = tmp_path / f".b.png.x2{TMP_SUFFIX}"
    similar = tmp_path / f".a.png2.x3{TMP_SUFFIX}"
    for f in (mine, other_rank, similar):
        f.write_bytes(b"x")
    assert remove_stale_temps_of(tmp_path, ["a.png"]) == 1
    assert not mine.exists() and other_rank.exists() and similar.exists()


def test_unwritable_destination_is_a_one_line_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UrnError, match="cannot write here") as err:
        atomic_save_npy(blocker / "a.npy", np.zeros(2))
    assert str(err.value).endswith(f"({blocker} is a file, not a folder)")


def test_disk_full_is_reported_and_leaves_nothing(tmp_path, monkeypatch):
    import os

    real_fsync = os.fsync

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(UrnError, match="No space left on device"):
        atomic_save_npy(tmp_path / "a.npy", np.zeros(10))
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert list(tmp_path.iterdir()) == []


def test_read_image_errors_name_the_file(tmp_path):
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "ok.jpg", quality=90)
    assert read_image(tmp_path / "ok.jpg").shape == (20, 20, 3)
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "zero.jpg").write_bytes(b"")
    (tmp_path / "dir.jpg").mkdir()
    (tmp_path / "text.jpg").write_text("not an image")
    for name, problem in [
        ("cut.jpg", "unreadable image"),
        ("zero.jpg", "empty file"),
        ("dir.jpg", "is not a file"),
        ("text.jpg", "unreadable image"),
        ("missing.jpg", "file not found"),
    ]:
        with pytest.raises(DataError) as err:
            read_image(tmp_path / name)
        assert str(err.value).startswith(str(tmp_path / name)) and problem in str(err.value)


def test_read_mask_checks_labels(tmp_path):
    Image.fromarray(np.array([[0, 21]], np.uint8)).save(tmp_path / "m.png")
    with pytest.raises(DataError, match=r"label values \[21\] outside the 21 classes"):
        read_mask(tmp_path / "m.png", num_classes=21)
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(DataError, match="single-channel"):
        read_mask(tmp_path / "rgb.png")
