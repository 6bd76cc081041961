"""The CLI end to end on a dataset whose ground truth is gone: no CAM stage may read it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from urn.cam.cli import cam_app, pmm
from urn.io import read_mask


@pytest.fixture
def app() -> typer.Typer:
    root = typer.Typer()
    root.add_typer(cam_app, name="cam")
    root.command("pmm")(pmm)
    return root


def test_train_infer_pmm_without_ground_truth(app: typer.Typer, demo_copy: Path, tmp_path: Path) -> None:
    shutil.move(demo_copy / "SegmentationClass", tmp_path / "gt_moved_away")
    runner = CliRunner()
    overrides = [
        f"data.root={demo_copy}",
        "cam.backbone.name=resnet18",
        "cam.backbone.weights=null",
        "cam.backbone.output_stride=16",
        "cam.iters=2",
        "cam.batch_size=2",
        "cam.crop_size=48",
        "cam.resize_long=[48,64]",
        "cam.num_workers=0",
        "cam.scales=[1.0]",
        "cam.flip=false",
    ]
    run = tmp_path / "run"
    res = runner.invoke(app, ["cam", "train", "demo", *overrides, "--out", str(run)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        app,
        [
            "cam",
            "infer",
            "demo",
            *overrides,
            "--checkpoint",
            str(run / "last.pt"),
            "--split",
            "train",
            "--out",
            str(run / "cams"),
            "--heat-out",
            str(run / "heat"),
        ],
    )
    assert res.exit_code == 0, res.output
    ids = (demo_copy / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    assert sorted(p.stem for p in (run / "cams").glob("*.npz")) == sorted(ids)
    with np.load(run / "heat" / f"{ids[0]}.npz", allow_pickle=False) as z:
        assert z["probs"].shape[0] == len(z["classes"]) + 1
    for method in ("pmm", "threshold", "threshold_crf"):
        res = runner.invoke(
            app,
            [
                "pmm",
                "demo",
                *overrides,
                "--cams",
                str(run / "cams"),
                "--split",
                "train",
                "--out",
                str(run / method),
                "--method",
                method,
            ],
        )
        assert res.exit_code == 0, res.output
        masks = [read_mask(run / method / f"{i}.png") for i in ids]
        assert all(m.shape == (48, 64) and m.max() <= 5 for m in masks)
    # heat-guided multi-crop training runs from those heat maps
    res = runner.invoke(
        app,
        [
            "cam",
            "train",
            "demo",
            *overrides,
            f"cam.heat_dir={run / 'heat'}",
            "cam.crop_scales=[1.0,1.5]",
            "cam.crop_stride=32",
            "--out",
            str(tmp_path / "mc"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert not (demo_copy / "SegmentationClass").exists()
