"""CVS, PPMG and the threshold baselines on tiny hand-computed arrays."""

from __future__ import annotations

import numpy as np
import pytest

from urn.cam.pmm import (
    MaskResult,
    coefficient_of_variation,
    cv_smooth,
    ignore_low_confidence,
    make_crf,
    pmm_mask,
    ppmg_merge,
    threshold_crf_mask,
    threshold_mask,
)
from urn.crf import PMM_CRF


def identity_crf(image: np.ndarray, problems: list[np.ndarray]) -> list[np.ndarray]:
    """A "CRF" without pairwise terms: the normalised input scores."""
    return [p / p.sum(axis=0, keepdims=True) for p in problems]


def test_cv_hand_computed() -> None:
    cam = np.array([[0.0, 0.04], [0.5, 1.0]], np.float32)
    # S = {0.5, 1.0}: mean 0.75, population std 0.25 -> CV = 0.3 * 0.25 / 0.75 = 0.1
    assert coefficient_of_variation(cam, 0.05, 0.3) == pytest.approx(0.1, abs=1e-7)
    smooth = cv_smooth(cam, 0.1, 0.05)
    np.testing.assert_allclose(smooth, [[0.0, 0.0], [0.5**0.9, 1.0]], rtol=1e-6)


def test_cv_empty_and_threshold_edges() -> None:
    assert coefficient_of_variation(np.full((2, 2), 0.05, np.float32), 0.05, 0.3) == 0.0  # S uses "> t"
    # CVS keeps values equal to t ("< t" is zeroed) and raises them: t ** (1 - cv) > t
    out = cv_smooth(np.array([[0.05, 0.01]], np.float32), 0.5, 0.05)
    np.testing.assert_allclose(out, [[0.05**0.5, 0.0]], rtol=1e-6)


def test_ppmg_merge_hand_computed() -> None:
    a1 = np.array([[0.8, 0.6, 0.0, 0.2]], np.float32)
    a2 = np.array([[0.0, 0.9, 0.0, 0.3]], np.float32)
    fg1 = np.array([[1, 1, 1, 0]], bool)
    fg2 = np.array([[0, 1, 0, 0]], bool)
    # I1 = A1 / (1 + 1.4) = [.333, .25, 0, -]; I2 = A2 / (1 + 0.9) = [-, .474, -, -]
    # px0 -> class 1; px1 contested -> class 2 (.474 > .25); px2 claimed with CAM 0 -> background;
    # px3 unclaimed -> background
    slots = ppmg_merge(np.stack([a1, a2]), np.stack([fg1, fg2]))
    np.testing.assert_array_equal(slots, [[1, 2, 0, 0]])


def test_ppmg_proportion_beats_raw_cam_and_ties_go_low() -> None:
    # class 1 is large (mass 3.6): its contested pixel scores 0.6 / 4.6 = 0.13; class 2 is small
    # (mass 0.5): 0.5 / 1.5 = 0.33, so the smaller class wins despite its lower CAM
    a1 = np.array([[1.0, 1.0, 1.0, 0.6]], np.float32)
    a2 = np.array([[0.0, 0.0, 0.0, 0.5]], np.float32)
    fg1 = np.ones((1, 4), bool)
    fg2 = np.array([[0, 0, 0, 1]], bool)
    np.testing.assert_array_equal(ppmg_merge(np.stack([a1, a2]), np.stack([fg1, fg2])), [[1, 1, 1, 2]])
    # identical classes tie everywhere: the first (lowest slot) wins
    same = np.stack([a2, a2])
    np.testing.assert_array_equal(ppmg_merge(same, np.stack([fg2, fg2])), [[0, 0, 0, 1]])


def test_pmm_mask_with_identity_crf() -> None:
    cams = np.array([[[0.0, 0.3, 0.9]]], np.float32)
    seen: list[np.ndarray] = []

    def crf(image: np.ndarray, problems: list[np.ndarray]) -> list[np.ndarray]:
        seen.extend(problems)
        return identity_crf(image, problems)

    res = pmm_mask(np.zeros((1, 3, 3), np.uint8), cams, [4], crf, cam_thresh=0.05, cv_scale=0.3, bg_power=11)
    # S = {0.3, 0.9}: CV = 0.3 * 0.3 / 0.6 = 0.15; Â = [0, .3^.85, .9^.85]; B = (1 - Â)^11
    a_hat = np.array([0.0, 0.3**0.85, 0.9**0.85])
    np.testing.assert_allclose(seen[0][1, 0], a_hat, rtol=1e-5)
    np.testing.assert_allclose(seen[0][0, 0], (1 - a_hat) ** 11, rtol=1e-4)
    np.testing.assert_array_equal(res.mask, [[0, 4, 4]])
    assert res.mask.dtype == np.uint8
    assert np.all((res.confidence >= 0.5) & (res.confidence <= 1.0))


def test_pmm_mask_no_classes_is_background() -> None:
    res = pmm_mask(np.zeros((2, 3, 3), np.uint8), np.zeros((0, 2, 3), np.float32), [], identity_crf)
    np.testing.assert_array_equal(res.mask, np.zeros((2, 3)))


def test_threshold_baselines() -> None:
    cams = np.array([[[0.1, 0.5, 0.15]], [[0.2, 0.4, 0.0]]], np.float32)
    res = threshold_mask(cams, [2, 5], threshold=0.15)
    # scores [.15 | .1 .5 .15 | .2 .4 0]: px0 -> class 5; px1 -> class 2; px2 ties bg/class 2 -> bg
    np.testing.assert_array_equal(res.mask, [[5, 2, 0]])
    np.testing.assert_allclose(res.confidence, [[0.2 / 0.45, 0.5 / 1.05, 0.15 / 0.3]], rtol=1e-6)
    # without pairwise terms the CRF variant is the plain threshold argmax
    crf_res = threshold_crf_mask(np.zeros((1, 3, 3), np.uint8), cams, [2, 5], identity_crf, 0.15)
    np.testing.assert_array_equal(crf_res.mask, res.mask)


def test_low_confidence_ignore() -> None:
    res = MaskResult(np.array([[1, 2]], np.uint8), np.array([[0.9, 0.4]], np.float32))
    np.testing.assert_array_equal(ignore_low_confidence(res, None), [[1, 2]])
    np.testing.assert_array_equal(ignore_low_confidence(res, 0.5), [[1, 255]])


def test_real_crf_smooths_towards_confident_region() -> None:
    rng = np.random.default_rng(0)
    image = np.zeros((24, 24, 3), np.uint8)
    image[:, 12:] = 200
    fg = np.clip(rng.normal(0.3, 0.1, (24, 24)), 0.01, 0.99).astype(np.float32)
    fg[:, 12:] = 0.9
    crf = make_crf(PMM_CRF)
    q = crf(image, [np.stack([1 - fg, fg])])[0]
    assert q.shape == (2, 24, 24)
    np.testing.assert_allclose(q.sum(0), 1.0, atol=1e-4)
    assert (q[1, :, 12:] > 0.5).all() and (q[1, :, :10] < 0.5).all()
