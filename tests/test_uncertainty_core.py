"""Response scaling (spec 3.1-3.3) on tiny, hand-checkable probability maps."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from urn.crf import URN_CRF
from urn.uncertainty_core import (
    VOC_EXPONENTS,
    loss_weights_from_uncertainty,
    normalise_uncertainty,
    reference_png_array,
    response_scaling,
    scaled_energies,
    scaled_problems,
)

H, W = 8, 10
# With 0 mean-field iterations the CRF returns the clipped, renormalised input, so every argmax below
# can be checked by hand: raising a probability p to n < 1 raises it, to n > 1 lowers it.
NO_SMOOTHING = dataclasses.replace(URN_CRF, iters=0)
BACKENDS = ["batched", "pydensecrf"]
ALLOWED_VALUES = np.array([0, 5, 8, 9]) / 36


def _image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _two_class_map(pairs: list[tuple[float, float]], num_classes: int = 4, cls: int = 2) -> np.ndarray:
    """Background 0 and class ``cls`` with the given (p0, p_cls) per column block; others ~0."""
    probs = np.full((num_classes, H, W), 1e-4, np.float32)
    cols = np.array_split(np.arange(W), len(pairs))
    for (p0, p1), c in zip(pairs, cols, strict=True):
        probs[0][:, c], probs[cls][:, c] = p0, p1
    return probs


@pytest.mark.parametrize("backend", BACKENDS)
def test_hand_computed_variances(backend: str) -> None:
    # Exponents (0.15, 0.2, 0.25, 4, 5, 6). For (p0, p1):
    #   (0.9, 0.1): nothing flips                        -> U = 0
    #   (0.6, 0.4): either row flips for n > 1 only       -> m = 3/6 -> 9/36
    #   (0.75, 0.25): row 0 flips at n = 5, 6; row 1 wins at n = 0.15, 0.2 -> m = 4/6, 2/6 -> 8/36
    #   (0.78, 0.22): row 0 never flips; row 1 wins at n = 0.15 only        -> m = 1/6 -> 5/36
    pairs = [(0.9, 0.1), (0.6, 0.4), (0.75, 0.25), (0.78, 0.22), (0.1, 0.9)]
    res = response_scaling(_image(), _two_class_map(pairs), params=NO_SMOOTHING, backend=backend)
    assert res.present == (0, 2)
    cols = np.array_split(np.arange(W), len(pairs))
    expected = [0, 9 / 36, 8 / 36, 5 / 36, 0]
    for c, e in zip(cols, expected, strict=True):
        np.testing.assert_allclose(res.raw[:, c], e, atol=1e-7)
    assert res.raw.dtype == res.uncertainty.dtype == np.float32
    assert res.cyclic_mask.dtype == np.uint8
    assert np.array_equal(np.unique(res.cyclic_mask[:, cols[-1]]), [2])
    # max U = 9/36, min 0: the only possible weight bytes are {255, 113, 28, 0}.
    w = loss_weights_from_uncertainty(res.uncertainty)
    assert set(np.unique(w)) == {255, 0, 28, 113}
    assert w[0, cols[1][0]] == 0 and w[0, cols[2][0]] == 28 and w[0, cols[3][0]] == 113


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_class_means_no_uncertainty(backend: str) -> None:
    probs = _two_class_map([(0.2, 0.8)])
    res = response_scaling(_image(), probs, params=dataclasses.replace(URN_CRF, iters=2), backend=backend)
    assert res.present == (2,)
    assert not res.raw.any() and not res.uncertainty.any()
    assert (loss_weights_from_uncertainty(res.uncertainty) == 255).all()


def test_class_absent_from_crf_output_is_excluded() -> None:
    probs = _two_class_map([(0.7, 0.2), (0.2, 0.7)])
    probs[3] = 0.25  # never the argmax, yet far above the floor
    res = response_scaling(_image(), probs, params=NO_SMOOTHING)
    assert res.present == (0, 2)


def test_restrict_to_tags_turns_untagged_classes_into_background() -> None:
    probs = _two_class_map([(0.7, 0.2), (0.2, 0.7)])
    probs[3][:, :2] = 0.9  # class 3 wins in two columns
    free = response_scaling(_image(), probs, params=NO_SMOOTHING)
    assert free.present == (0, 2, 3)
    tagged = response_scaling(_image(), probs, params=NO_SMOOTHING, allowed_classes={2})
    assert tagged.present == (0, 2)
    assert (tagged.cyclic_mask[:, :2] == 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_real_crf_variances_take_only_the_allowed_values(backend: str) -> None:
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:24, 0:32]
    img = np.stack([(xx * 8) % 256, (yy * 10) % 256, np.full_like(xx, 90)], -1).astype(np.uint8)
    logits = rng.normal(0, 1, (5, 24, 32))
    logits[1] += 2.0 * (xx > 12)
    logits[3] += 2.0 * (yy > 14)
    probs = np.exp(logits) / np.exp(logits).sum(0)
    res = response_scaling(img, probs.astype(np.float32), params=dataclasses.replace(URN_CRF, iters=3), backend=backend)
    assert len(res.present) >= 2
    assert np.isin(np.round(res.raw * 36).astype(int), [0, 5, 8, 9]).all()
    np.testing.assert_allclose(
        res.raw, ALLOWED_VALUES[np.searchsorted(ALLOWED_VALUES * 36, np.round(res.raw * 36))], atol=1e-7
    )
    assert res.uncertainty.min() >= 0 and res.uncertainty.max() < 1


def test_backends_agree_on_response_scaling() -> None:
    rng = np.random.default_rng(7)
    img = rng.integers(0, 256, (20, 28, 3), dtype=np.uint8)
    p = rng.random((4, 20, 28)) ** 3
    p = (p / p.sum(0)).astype(np.float32)
    params = dataclasses.replace(URN_CRF, iters=4)
    a = response_scaling(img, p, params=params, backend="pydensecrf")
    b = response_scaling(img, p, params=params, backend="batched")
    assert a.present == b.present
    assert (a.cyclic_mask == b.cyclic_mask).mean() >= 0.99
    assert (np.abs(a.raw - b.raw) < 1e-6).mean() >= 0.99


def test_scaled_problems_layout() -> None:
    p = np.random.default_rng(0).random((2, 3, 4)).astype(np.float32)
    probs = scaled_problems(p, VOC_EXPONENTS)
    assert len(probs) == 12
    np.testing.assert_allclose(probs[3][0], p[0] ** 4.0, rtol=1e-6)  # class 0, n = 4
    np.testing.assert_array_equal(probs[3][1], p[1])
    np.testing.assert_allclose(probs[6][1], p[1] ** 0.15, rtol=1e-6)  # class 1, n = 0.15
    assert all(q.dtype == np.float32 for q in probs)
    from urn.crf.reference import unary_energy

    energies = scaled_energies(p, VOC_EXPONENTS, 1e-5)
    for e, q in zip(energies, probs, strict=True):
        np.testing.assert_array_equal(e, unary_energy(q, 1e-5))


def test_normalisation_and_png_layout() -> None:
    raw = np.array([[0, 5 / 36], [8 / 36, 9 / 36]])
    u = normalise_uncertainty(raw)
    np.testing.assert_allclose(u, raw / (9 / 36 + 1e-6), rtol=1e-6)
    mask = np.array([[0, 3], [7, 15]], np.uint8)
    png = reference_png_array(mask, u)
    assert png.shape == (2, 2, 3) and png.dtype == np.uint8
    assert np.array_equal(png[..., 0], mask)
    assert np.array_equal(png[..., 1], png[..., 2])
    assert png[..., 1].tolist() == [[255, 113], [28, 0]]
    assert (loss_weights_from_uncertainty(np.zeros((2, 2))) == 255).all()


def test_invalid_inputs_are_rejected() -> None:
    img = _image()
    probs = _two_class_map([(0.7, 0.3)])
    nan = probs.copy()
    nan[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        response_scaling(img, nan)
    inf = probs.copy()
    inf[1, 2, 2] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        response_scaling(img, inf)
    with pytest.raises(ValueError, match="match the image"):
        response_scaling(img, probs[:, :, :-1])
    with pytest.raises(ValueError, match="exponent"):
        response_scaling(img, probs, exponents=())
