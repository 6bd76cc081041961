"""URN's uncertainty weighting cannot switch itself off: `urn train --phase seg2` through the real CLI.

Seg-2 with ``seg2.weighting: hard|soft`` needs per-pixel weights. Without ``data.uncertainty`` and
without weights in the pseudo-masks it must refuse to start (it would otherwise train as plain
cross-entropy, the ablation URN improves on); with the reference's 3-channel ``[label, w, w]`` PNGs
as ``data.pseudo_masks`` their weight channel must be the weights.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from tests.tiny import tiny_segmentor

from urn.cli import main
from urn.data.layout import DatasetLayout
from urn.engine.checkpoint import load_checkpoint
from urn.io import read_mask

TINY = [
    *tiny_segmentor(),
    "seg2.batch_size=2",
    "seg2.iters=2",
    "seg2.ckpt_every=2",
    "seg2.val_every=0",
    "seg2.lr=0.01",
]


def _train(root: Path, out: Path, *extra: str) -> tuple[int, str]:
    """``urn train demo ... --phase seg2`` in-process; returns (exit code, stderr)."""
    import contextlib
    import io

    err = io.StringIO()
    code = 0
    with contextlib.redirect_stderr(err):
        try:
            main(["train", "demo", f"data.root={root}", *TINY, *extra, "--phase", "seg2", "--out", str(out), "--quiet"])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, err.getvalue()


def _reference_pngs(root: Path, folder: Path) -> tuple[Path, Path, Path]:
    """The same labels and weights three ways: reference 3-channel PNGs (cv2 [label, w, w]); grey
    masks + an uncertainty folder of U = 1 - w / 255; the weight bytes put half of each image at 0."""
    layout = DatasetLayout.open(root)
    ref, grey, unc = folder / "ref", folder / "grey", folder / "unc"
    for d in (ref, grey, unc):
        d.mkdir(parents=True)
    for image_id in layout.ids("train"):
        label = read_mask(layout.gt_path(image_id)).copy()
        label[label == 255] = 0
        w = np.full(label.shape, 255, np.uint8)
        w[:, : label.shape[1] // 2] = 0  # the left half: "uncertain", down-weighted to 0.05 by hard
        assert cv2.imwrite(str(ref / f"{image_id}.png"), np.dstack([label, w, w]))
        assert cv2.imwrite(str(grey / f"{image_id}.png"), label)
        np.save(unc / f"{image_id}.npy", (1.0 - w / 255.0).astype(np.float16))
    return ref, grey, unc


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(out / "last.pt")["model"]


@pytest.mark.parametrize("weighting", ["hard", "soft"])
def test_seg2_weighting_without_uncertainty_refuses_to_start(demo_copy: Path, tmp_path: Path, weighting: str) -> None:
    out = tmp_path / "seg2"
    code, err = _train(
        demo_copy, out, f"data.pseudo_masks={demo_copy / 'SegmentationClass'}", f"seg2.weighting={weighting}"
    )
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("error: ") and f"seg2.weighting={weighting}" in lines[0]
    assert "data.uncertainty" in lines[0] and "Traceback" not in err
    assert not (out / "last.pt").exists()


def test_reference_pngs_as_pseudo_masks_train_on_their_weight_channel(demo_copy: Path, tmp_path: Path) -> None:
    ref, grey, unc = _reference_pngs(demo_copy, tmp_path / "masks")
    assert _train(demo_copy, tmp_path / "ref", f"data.pseudo_masks={ref}", "seg2.weighting=hard")[0] == 0
    code, _ = _train(demo_copy, tmp_path / "npy", f"data.pseudo_masks={grey}", f"data.uncertainty={unc}")
    assert code == 0
    code, _ = _train(demo_copy, tmp_path / "plain", f"data.pseudo_masks={grey}", "seg2.weighting=none")
    assert code == 0
    from_png, from_npy, plain = _weights(tmp_path / "ref"), _weights(tmp_path / "npy"), _weights(tmp_path / "plain")
    # the PNGs' weights are the weights: the same run as with the equivalent uncertainty folder ...
    for k in from_png:
        assert torch.allclose(from_png[k].float(), from_npy[k].float(), atol=1e-6), k
    # ... and not the unweighted run that throwing the channel away would give
    assert any(not torch.allclose(from_png[k].float(), plain[k].float()) for k in from_png)
