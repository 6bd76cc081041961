"""Inference options that must do what they say: ``infer.batch_views`` and ``crf.enabled``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tests.tiny import tiny_segmentor

from urn.config import InferConfig, load_config
from urn.errors import UrnError
from urn.models import build_segmentor

TINY = [
    *tiny_segmentor(),
    "infer.base_size=[64, 48]",
    "infer.scales=[1.0]",
    "infer.flip=false",
    "crf.iters=2",
]


class Recorder(torch.nn.Module):
    """Wraps a model and records the batch size of every forward."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.batches.append(int(x.shape[0]))
        return self.model(x)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_segmentor(load_config("demo", TINY).model, 6).eval()


@pytest.mark.parametrize("mode", ["slide", "whole"])
def test_batch_views_batches_the_views_and_keeps_the_result(model: torch.nn.Module, mode: str) -> None:
    from urn.engine.inference import predict_probs

    image = np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)
    results, batches = {}, {}
    for bv in (1, 3, 4):
        cfg = InferConfig(
            mode=mode, crop_size=24, stride=16, base_size=(56, 40), scales=(0.75, 1.0, 1.25), flip=True, batch_views=bv
        )
        rec = Recorder(model)
        results[bv] = predict_probs(rec, image, cfg, torch.device("cpu"))
        batches[bv] = rec.batches
    np.testing.assert_allclose(results[1], results[4], rtol=0, atol=1e-5)
    np.testing.assert_allclose(results[3], results[4], rtol=0, atol=1e-5)
    assert sum(batches[1]) == sum(batches[4])  # the same views, ...
    assert set(batches[1]) == {1}  # ... one per forward with batch_views=1 ...
    assert max(batches[3]) == 3 if mode == "slide" else max(batches[3]) == 2  # a scale's flip pair is 2 views
    assert max(batches[4]) == (4 if mode == "slide" else 2) and max(batches[4]) <= 4  # ... up to 4 with 4
    assert len(batches[4]) < len(batches[1])


def test_unset_batch_views_batches_small_views_only_on_cpu(model: torch.nn.Module) -> None:
    from urn.engine.inference import CPU_BATCH_PIXELS, GPU_BATCH_VIEWS, auto_batch_views, predict_probs

    image = np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)
    rec = Recorder(model)
    cfg = InferConfig(mode="whole", base_size=(56, 40), scales=(1.0,), flip=True)
    assert cfg.batch_views is None  # the default
    predict_probs(rec, image, cfg, torch.device("cpu"))
    assert rec.batches == [2]  # a small flip pair shares one forward
    # Views over the CPU budget go one at a time; on a GPU up to GPU_BATCH_VIEWS share a forward.
    assert auto_batch_views(CPU_BATCH_PIXELS // 2, torch.device("cpu")) == 2
    assert auto_batch_views(CPU_BATCH_PIXELS // 2 + 1, torch.device("cpu")) == 1
    assert auto_batch_views(512 * 512, torch.device("cpu")) == 1
    assert auto_batch_views(16, torch.device("cpu")) == GPU_BATCH_VIEWS  # never more than on a GPU
    assert auto_batch_views(512 * 512, torch.device("cuda")) == GPU_BATCH_VIEWS
    # The budget decides in slide mode by the window size: 512x512 windows run one at a time on CPU.
    rec = Recorder(model)
    big = np.random.default_rng(1).integers(0, 255, (600, 700, 3), dtype=np.uint8)
    cfg = InferConfig(mode="slide", crop_size=512, stride=400, base_size=(700, 600), scales=(1.0,), flip=True)
    predict_probs(rec, big, cfg, torch.device("cpu"))
    assert rec.batches == [1] * 8  # 4 windows x 2 orientations


def test_batch_views_below_one_is_an_error(model: torch.nn.Module) -> None:
    from urn.engine.inference import predict_probs

    with pytest.raises(UrnError, match="infer.batch_views must be at least 1, got 0"):
        predict_probs(model, np.zeros((8, 8, 3), np.uint8), InferConfig(batch_views=0), torch.device("cpu"))


def _checkpoint(model: torch.nn.Module, path: Path) -> Path:
    torch.save({"model": model.state_dict()}, path)
    return path


def _count_crf(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    import urn.crf

    calls: list[int] = []
    real = urn.crf.dense_crf

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(urn.crf, "dense_crf", counting)
    return calls


def test_crf_enabled_false_turns_the_crf_off_in_eval_and_predict(
    model: torch.nn.Module, demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from urn.stages.segmentation import run_eval, run_predict

    ckpt = _checkpoint(model, tmp_path / "m.pt")
    calls = _count_crf(monkeypatch)
    on = load_config("demo", [f"data.root={demo_root}", *TINY, "infer.crf=true"])
    _, result = run_eval(on, ckpt, quiet=True, device="cpu")
    assert result["crf"] is True and len(calls) == 3  # the 3 val images

    calls.clear()
    off = load_config("demo", [f"data.root={demo_root}", *TINY, "infer.crf=true", "crf.enabled=false"])
    _, result = run_eval(off, ckpt, quiet=True, device="cpu")
    assert result["crf"] is False and calls == []
    run_predict(off, ckpt, tmp_path / "pred", split="val", voc_server=False, quiet=True, device="cpu")
    assert calls == [] and len(list((tmp_path / "pred" / "predictions").glob("*.png"))) == 3


def test_crf_enabled_false_is_an_error_for_the_uncertainty_stage(demo_root: Path, tmp_path: Path, capsys) -> None:
    from urn.cli import main
    from urn.stages.pipeline import run_pipeline
    from urn.stages.uncertainty import run_uncertainty

    cfg = load_config("demo", [f"data.root={demo_root}", *TINY, "crf.enabled=false"])
    with pytest.raises(UrnError, match=r"crf.enabled=false.*uncertainty stage cannot run without it"):
        run_uncertainty(cfg, tmp_path / "u", probs_dir=tmp_path, quiet=True)
    assert not (tmp_path / "u").exists()

    with pytest.raises(SystemExit) as exit_info:  # the CLI: one line, exit code 2
        main(["uncertainty", "demo", f"data.root={demo_root}", "crf.enabled=false", "--probs", str(tmp_path)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert exit_info.value.code == 2 and len(err) == 1 and "crf.enabled=true" in err[0]

    # the whole chain refuses before its first stage rather than after hours of Seg-1
    with pytest.raises(UrnError, match="crf.enabled=false"):
        run_pipeline(cfg, tmp_path / "run", quiet=True, device="cpu")
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_eval_and_predict_never_read_the_backbones_imagenet_weights(
    model: torch.nn.Module, demo_root: Path, tmp_path: Path
) -> None:
    """The checkpoint replaces every weight, so the ImageNet file is not opened (here it does not exist)."""
    from urn.stages.segmentation import run_eval, run_predict

    ckpt = _checkpoint(model, tmp_path / "m.pt")
    absent = tmp_path / "imagenet.pth"
    cfg = load_config("demo", [f"data.root={demo_root}", *TINY, f"model.backbone.weights={absent}"])
    _, result = run_eval(cfg, ckpt, quiet=True, device="cpu")
    assert 0.0 <= result["miou"] <= 100.0
    run_predict(cfg, ckpt, tmp_path / "pred", split="val", voc_server=False, quiet=True, device="cpu")
    assert len(list((tmp_path / "pred" / "predictions").glob("*.png"))) == 3
