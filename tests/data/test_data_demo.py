"""The procedural demo dataset: structure, determinism, consistency of masks and labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from urn.data.check import check_dataset
from urn.data.demo import DEMO_CLASSES, make_demo, render_sample
from urn.data.layout import DatasetLayout
from urn.errors import DataError


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_demo_structure(demo_root: Path) -> None:
    ds = DatasetLayout.open(demo_root)
    assert ds.kind == "voc" and ds.classes == DEMO_CLASSES and ds.classes.num_classes == 6
    assert ds.ids("train") == [f"train_{i:04d}" for i in range(6)]
    assert ds.ids("val") == [f"val_{i:04d}" for i in range(3)]
    assert (demo_root / "classes.txt").read_text().splitlines()[0] == "background"
    labels = ds.image_labels()
    assert set(labels) == set(ds.ids("train")) | set(ds.ids("val"))
    for image_id, tags in labels.items():
        gt = ds.read_gt(image_id, check_size=True)
        assert gt.shape == (48, 64)
        assert 1 <= len(tags) <= 3
        assert tags == tuple(int(v) for v in np.unique(gt) if 0 < v < 255)
        assert ds.read_image(image_id).shape == (48, 64, 3)
    assert not list(demo_root.rglob("*.urn-tmp"))
    assert check_dataset(demo_root, "train") == [] and check_dataset(demo_root, "val") == []


def test_demo_is_deterministic(tmp_path: Path) -> None:
    a = make_demo(tmp_path / "a", n_train=3, n_val=1, seed=5, size=(48, 36)).root
    b = make_demo(tmp_path / "b", n_train=3, n_val=1, seed=5, size=(48, 36)).root
    c = make_demo(tmp_path / "c", n_train=3, n_val=1, seed=6, size=(48, 36)).root
    assert _tree(a) == _tree(b)
    assert _tree(a)["JPEGImages/train_0000.jpg"] != _tree(c)["JPEGImages/train_0000.jpg"]
    # re-running into the same folder: the same arguments write nothing, others are refused
    before = _tree(a)
    assert make_demo(a, n_train=3, n_val=1, seed=5, size=(48, 36)).root == a
    with pytest.raises(DataError, match="n_train=3; this command asks n_train=2"):
        make_demo(a, n_train=2, n_val=1, seed=5, size=(48, 36))
    assert _tree(a) == before
    assert set(json.loads((a / "cls_labels.json").read_text())) == {f"train_000{i}" for i in range(3)} | {"val_0000"}


def test_rendered_samples_cover_all_classes_with_overlapping_colours() -> None:
    seen: set[int] = set()
    colour_by_class: dict[int, list[np.ndarray]] = {}
    for i in range(40):
        image, gt = render_sample(np.random.default_rng((0, i)), (80, 60))
        assert image.shape == (60, 80, 3) and image.dtype == np.uint8 and gt.shape == (60, 80)
        assert set(np.unique(gt)) <= {0, 1, 2, 3, 4, 5, 255}
        assert (gt == 255).any()  # the ignore band on object borders
        for k in range(1, 6):
            if (gt == k).any():
                seen.add(k)
                colour_by_class.setdefault(k, []).append(image[gt == k].mean(0))
    assert seen == {1, 2, 3, 4, 5}
    # mean colours of different classes overlap: no class is separable by its mean colour alone
    means = {k: np.mean(v, 0) for k, v in colour_by_class.items()}
    spreads = {k: np.std(v, 0).mean() for k, v in colour_by_class.items()}
    assert all(s > 10 for s in spreads.values())
    assert min(np.abs(means[a] - means[b]).max() for a in means for b in means if a < b) < 60
