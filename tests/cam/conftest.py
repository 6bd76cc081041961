"""A tiny trained classifier shared by the CAM tests (resnet18, random init, 2 iterations)."""

from __future__ import annotations

from pathlib import Path

import pytest

from urn.config import Config, load_config


def tiny_config(root: Path, *extra: str) -> Config:
    """A config that trains and infers in about a second on 64x48 demo images."""
    return load_config(
        None,
        [
            f"data.root={root}",
            "cam.backbone.name=resnet18",
            "cam.backbone.output_stride=16",
            "cam.iters=2",
            "cam.batch_size=2",
            "cam.crop_size=48",
            "cam.resize_long=[48,64]",
            "cam.num_workers=0",
            "cam.scales=[1.0,0.5]",
            "cam.log_every=1",
            "cam.ckpt_every=1",
            *extra,
        ],
    )


@pytest.fixture(scope="session")
def make_tiny_config():  # noqa: ANN201 - returns tiny_config
    """:func:`tiny_config` as a fixture (test modules cannot import a conftest)."""
    return tiny_config


@pytest.fixture(scope="session")
def tiny_run(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``{"cfg", "checkpoint"}`` of a classifier trained once per session on the demo dataset."""
    from urn.cam import train

    cfg = tiny_config(demo_root)
    out = tmp_path_factory.mktemp("cam_run")
    return {"cfg": cfg, "checkpoint": train.run(cfg, out)}
