"""The procedural scenes dataset: determinism, image sizes, labels that match the masks, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from urn.data import scenes
from urn.data.cli import data_app
from urn.data.demo import ignore_borders
from urn.data.layout import DatasetLayout
from urn.data.scenes import SCENES_CLASSES, make_scenes, render_scene

runner = CliRunner()


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_cli_writes_a_dataset_that_check_accepts(tmp_path: Path) -> None:
    root = tmp_path / "scenes"
    result = runner.invoke(data_app, ["scenes", str(root), "--n-train", "3", "--n-val", "2", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert "3 train + 2 val images (5 classes)" in result.output
    assert (root / "classes.txt").read_text().split() == ["background", "leaf", "star", "bottle", "fish"]
    for split in ("train", "val"):
        result = runner.invoke(data_app, ["check", str(root), "--split", split])
        assert result.exit_code == 0, result.output
        assert "no problems found" in result.output


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    a = make_scenes(tmp_path / "a", n_train=2, n_val=1, seed=7).root
    b = make_scenes(tmp_path / "b", n_train=2, n_val=1, seed=7).root
    c = make_scenes(tmp_path / "c", n_train=2, n_val=1, seed=8).root
    assert _tree(a) == _tree(b)
    assert _tree(a)["JPEGImages/train_0000.jpg"] != _tree(c)["JPEGImages/train_0000.jpg"]
    assert not list(a.rglob("*.urn-tmp"))


def test_sizes_and_labels_match_the_masks(tmp_path: Path) -> None:
    ds = make_scenes(tmp_path / "s", n_train=6, n_val=2, seed=3)
    assert ds.classes == SCENES_CLASSES
    labels = json.loads((ds.root / "cls_labels.json").read_text())
    assert set(labels) == set(ds.ids("train")) | set(ds.ids("val"))
    layout = DatasetLayout.open(ds.root)
    shapes = set()
    for image_id, tags in layout.image_labels().items():
        image, gt = layout.read_image(image_id), layout.read_gt(image_id, check_size=True)
        assert 200 <= max(image.shape[:2]) <= 500 and image.shape[:2] == gt.shape
        assert 1 <= len(tags) <= 3
        assert tags == tuple(int(v) for v in np.unique(gt) if 0 < v < 255)
        shapes.add(image.shape[:2])
    assert len(shapes) >= 4  # sizes vary from image to image


def test_rendered_scenes_vary_and_cover_every_class() -> None:
    seen: set[int] = set()
    aspects: set[float] = set()
    for i in range(24):
        image, gt = render_scene(np.random.default_rng((11, i)))
        h, w = gt.shape
        assert image.shape == (h, w, 3) and image.dtype == np.uint8 and gt.dtype == np.uint8
        assert 200 <= max(h, w) <= 500
        assert set(np.unique(gt)) <= {0, 1, 2, 3, 4, 255}
        assert (gt == 255).any() and ((gt > 0) & (gt < 255)).any()
        seen |= {int(v) for v in np.unique(gt) if 0 < v < 255}
        aspects.add(round(w / h, 1))
        assert image.std() > 10  # not a flat image
    assert seen == {1, 2, 3, 4}
    assert len(aspects) >= 4


def test_ignore_band_lies_inside_object_borders() -> None:
    label = np.zeros((6, 7), np.uint8)
    label[1:5, 0:4] = 2  # touches the left image border
    label[2:4, 4:6] = 3
    gt = ignore_borders(label)
    assert (gt[label == 0] == 0).all()  # background is never ignored
    assert (gt[:, 0][label[:, 0] == 2] != 255).sum() == 2  # the image border is not an object border
    assert gt[2, 3] == 255 and gt[2, 4] == 255 and gt[2, 1] == 2  # both sides of a class-class border


def test_photos_are_optional(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def missing(name: str):
        return lambda: calls.append(name)  # an installation without matplotlib's sample files: None

    monkeypatch.setattr(scenes, "_photo", missing("photo"))
    monkeypatch.setattr(scenes, "_elevation", missing("elevation"))
    for i in range(16):
        image, _ = render_scene(np.random.default_rng((5, i)))
        assert image.std() > 10  # the photo and terrain backgrounds fell back to textures
    assert calls  # these seeds do ask for the sample files...
    calls.clear()
    for i in range(16):
        render_scene(np.random.default_rng((5, i)), photos=False)
    assert not calls  # ...which photos=False never reads


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        make_scenes(tmp_path / "x", n_train=0)
    with pytest.raises(ValueError, match="long_side"):
        make_scenes(tmp_path / "x", long_side=(300, 200))
