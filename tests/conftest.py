"""Shared fixtures: a tiny demo dataset (built once per session) and a writable copy of it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only-by-convention demo dataset: 6 train + 3 val images of 64x48, VOC layout."""
    from urn.data.demo import make_demo

    root = tmp_path_factory.mktemp("demo") / "demo"
    make_demo(root, n_train=6, n_val=3, seed=0, size=(64, 48))
    return root


@pytest.fixture
def demo_copy(demo_root: Path, tmp_path: Path) -> Path:
    """A private copy of :func:`demo_root` that a test may modify or break."""
    dst = tmp_path / "demo"
    shutil.copytree(demo_root, dst)
    return dst
