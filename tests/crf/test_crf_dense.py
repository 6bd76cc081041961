"""dense_crf / dense_crf_many: behaviour, backend agreement, input checks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from urn.crf import PMM_CRF, URN_CRF, CRFSolver, dense_crf, dense_crf_many, resolve_backend
from urn.errors import UrnError

H, W = 40, 60
FAST = dataclasses.replace(URN_CRF, iters=5)


def _scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A two-region image (left dark red, right light blue, mild noise) and its 'true' label map."""
    rng = np.random.default_rng(seed)
    img = np.zeros((H, W, 3), np.float64)
    img[:, : W // 2] = (150, 40, 30)
    img[:, W // 2 :] = (60, 140, 220)
    img += rng.normal(0, 4, img.shape)
    labels = np.zeros((H, W), np.int64)
    labels[:, W // 2 :] = 1
    return np.clip(img, 0, 255).astype(np.uint8), labels


def _random_probs(k: int, seed: int, sharp: float = 2.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = rng.random((k, H, W)) ** sharp
    return (p / p.sum(0)).astype(np.float32)


def test_confident_unary_keeps_its_argmax() -> None:
    img, labels = _scene()
    probs = np.where(labels == np.arange(3)[:, None, None], 0.98, 0.01).astype(np.float32)
    for backend in ("batched", "pydensecrf"):
        q = dense_crf(img, probs, FAST, backend=backend)
        assert q.shape == (3, H, W) and q.dtype == np.float32
        assert np.array_equal(q.argmax(0), labels)
        np.testing.assert_allclose(q.sum(0), 1.0, atol=1e-5)


def test_isolated_noisy_pixel_is_smoothed() -> None:
    img, labels = _scene()
    probs = np.where(labels == np.arange(2)[:, None, None], 0.7, 0.3).astype(np.float32)
    probs[:, 20, 10] = (0.4, 0.6)  # one pixel inside the left region prefers the right's label
    assert probs.argmax(0)[20, 10] == 1
    for backend in ("batched", "pydensecrf"):
        q = dense_crf(img, probs, FAST, backend=backend)
        assert q.argmax(0)[20, 10] == 0
        assert np.array_equal(q.argmax(0), labels)


def test_uniform_marginals_stay_uniform_on_a_flat_image() -> None:
    img = np.full((H, W, 3), 128, np.uint8)
    probs = np.full((4, H, W), 0.25, np.float32)
    for backend in ("batched", "pydensecrf"):
        np.testing.assert_allclose(dense_crf(img, probs, FAST, backend=backend), 0.25, atol=1e-6)


@pytest.mark.parametrize("params", [URN_CRF, PMM_CRF], ids=["urn", "pmm"])
def test_batched_matches_pydensecrf_on_random_problems(params) -> None:
    img, _ = _scene(1)
    img = np.clip(img.astype(int) + np.random.default_rng(5).integers(-20, 20, img.shape), 0, 255)
    img = img.astype(np.uint8)
    problems = [_random_probs(k, seed) for seed, k in enumerate((2, 3, 5, 3))]
    ref = dense_crf_many(img, problems, params, backend="pydensecrf")
    ours = dense_crf_many(img, problems, params, backend="batched")
    for r, o in zip(ref, ours, strict=True):
        assert (r.argmax(0) == o.argmax(0)).mean() >= 0.99
        np.testing.assert_allclose(o, r, atol=1e-4)


def test_many_equals_separate_calls_and_complement_is_exact_algebra() -> None:
    img, _ = _scene(2)
    problems = [_random_probs(k, 10 + i) for i, k in enumerate((3, 2, 3, 1, 4))]
    together = dense_crf_many(img, problems, FAST, backend="batched")
    assert [t.shape[0] for t in together] == [3, 2, 3, 1, 4]
    for p, t in zip(problems, together, strict=True):
        np.testing.assert_allclose(t, dense_crf(img, p, FAST, backend="batched"), atol=1e-5)
    plain = CRFSolver(img, FAST, complement=False, max_channels=3).run(problems)  # chunked passes too
    for a, b in zip(plain, together, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_contiguous_message_path_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    """The path used off-CPU (messages in their own buffer, then copied) gives the same numbers."""
    import urn.crf.batched as batched

    img, _ = _scene(3)
    problems = [_random_probs(3, 20), _random_probs(3, 21)]
    expected = dense_crf_many(img, problems, FAST)
    monkeypatch.setattr(batched, "_strided_out_ok", lambda device: False)
    for e, got in zip(expected, dense_crf_many(img, problems, FAST), strict=True):
        np.testing.assert_array_equal(got, e)


def test_single_label_and_zero_iterations() -> None:
    img, _ = _scene()
    ones = dense_crf(img, np.full((1, H, W), 0.3, np.float32), FAST)
    np.testing.assert_array_equal(ones, 1.0)
    probs = _random_probs(3, 0)
    probs[0, 0, 0], probs[1, 0, 0] = 0.0, 1.0  # clipped at the floor before the log
    q0 = dense_crf(img, probs, dataclasses.replace(URN_CRF, iters=0))
    clipped = np.clip(probs, 1e-5, 1)
    np.testing.assert_allclose(q0, clipped / clipped.sum(0), rtol=1e-5, atol=1e-7)


def test_float16_input_and_empty_batch() -> None:
    img, _ = _scene()
    probs = _random_probs(3, 4)
    q16 = dense_crf(img, probs.astype(np.float16), FAST)
    assert q16.dtype == np.float32
    np.testing.assert_allclose(q16, dense_crf(img, probs.astype(np.float16).astype(np.float32), FAST))
    assert dense_crf_many(img, [], FAST) == []


def test_bad_inputs_are_value_errors() -> None:
    img, _ = _scene()
    probs = _random_probs(2, 0)
    bad = probs.copy()
    bad[0, 3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        dense_crf(img, bad)
    with pytest.raises(ValueError, match="match the image"):
        dense_crf(img, probs[:, :-1])
    with pytest.raises(ValueError, match="uint8"):
        dense_crf(img.astype(np.float32), probs)
    with pytest.raises(ValueError, match="backend"):
        dense_crf(img, probs, backend="gpu-magic")
    assert resolve_backend("auto") == "batched"


def test_missing_pydensecrf_is_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "pydensecrf", None)  # makes the import fail
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    with pytest.raises(UrnError, match="pydensecrf2"):
        resolve_backend("pydensecrf")
