"""PMM pseudo-masks from CAMs: CVS, per-class CRF and PPMG merging, plus the threshold baselines.

Pure functions on arrays; :mod:`urn.cam.make_masks` runs them over a folder of CAM files. The CRF is
passed in as a function (``crf(image, problems) -> posteriors``), so the merging logic can be tested
with a hand-written "CRF" and the real one can share work across the per-class problems.

Spec (URN_ALGORITHM.md 1.5, 1.6), for each tagged class k with normalised CAM ``A_k`` in [0, 1]:

1. CVS: ``CV_k = lambda * std(S_k) / mean(S_k + 1e-8)`` over ``S_k = {A_k > t}`` (population std,
   0 when empty); ``Â_k = (A_k * [A_k >= t]) ** (1 - CV_k)``.
2. Two-label CRF on ``[(1 - Â_k) ** alpha, Â_k]``; ``fg_k = Q_k > 0.5``.
3. ``I_k = A_k / (1 + sum(A_k * fg_k))`` on the *un-smoothed* CAM.
4. ``label = argmax_j S_j`` with ``S_0 = prod_k (1 - fg_k)`` and ``S_{k+1} = fg_k * I_k``; ties go to the
   lowest index (``np.argmax``), so a claimed pixel whose CAM is 0 everywhere falls back to background.

Arithmetic is float32/float64 where the reference mixes float16 (it computes CVS on the float16 CAM
values it loaded); the difference is below the float16 resolution of the stored CAMs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from urn.crf import CRFParams
from urn.io import IGNORE_INDEX

# crf(image (H, W, 3) uint8, problems [(L_i, H, W) probabilities]) -> [(L_i, H, W) posteriors]
CRFManyFn = Callable[[np.ndarray, Sequence[np.ndarray]], list[np.ndarray]]


@dataclass(frozen=True)
class MaskResult:
    """A pseudo-mask and the per-pixel confidence of its label.

    Attributes:
        mask: ``(H, W)`` uint8 contiguous class indices (0 = background; 255 only where ignored).
        confidence: ``(H, W)`` float32 in [0, 1]: posterior (or normalised score) of the chosen label.
    """

    mask: np.ndarray
    confidence: np.ndarray


# ------------------------------------------------------------------------------------------------ CVS
def coefficient_of_variation(cam: np.ndarray, thresh: float = 0.05, scale: float = 0.3) -> float:
    """``CV = scale * std(S) / mean(S + 1e-8)`` over ``S = {cam > thresh}``; 0 when ``S`` is empty.

    Args:
        cam: ``(H, W)`` normalised CAM of one class, values in [0, 1].
        thresh: activation threshold ``t`` (the reference's ``cam_thresh``).
        scale: ``lambda`` (the reference's ``cv_scale``).
    """
    active = np.asarray(cam, dtype=np.float64)[np.asarray(cam) > thresh]
    if active.size == 0:
        return 0.0
    return float(active.std() / (active + 1e-8).mean() * scale)


def cv_smooth(cam: np.ndarray, cv: float, thresh: float = 0.05) -> np.ndarray:
    """``Â = (cam * [cam >= thresh]) ** (1 - cv)``: raises low responses, so the region grows.

    Args:
        cam: ``(H, W)`` normalised CAM, values in [0, 1].
        cv: the class's coefficient of variation (:func:`coefficient_of_variation`).
        thresh: values below it are zeroed first.

    Returns:
        ``(H, W)`` float32 smoothed CAM in [0, 1].
    """
    a = np.asarray(cam, dtype=np.float32).copy()
    a[a < thresh] = 0.0
    return np.power(a, np.float32(1.0 - cv)).astype(np.float32)


# ------------------------------------------------------------------------------------ label-free alpha
def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of ``values`` in [0, 1]: the cut maximising the between-class variance.

    Args:
        values: any shape, float values in [0, 1].
        bins: histogram bins over [0, 1].

    Returns:
        The threshold (the upper edge of the last bin of the low class); 0.5 when ``values`` is empty
        or constant.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        return 0.5
    hist, edges = np.histogram(v, bins=bins, range=(0.0, 1.0))
    p = hist / hist.sum()
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(p)  # weight of the low class for a cut after bin i
    mu = np.cumsum(p * centres)
    w1 = 1.0 - w0
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mu[-1] * w0 - mu) ** 2 / (w0 * w1)
    between[~np.isfinite(between)] = -1.0
    if between.max() <= 0:
        return 0.5
    return float(edges[int(np.argmax(between)) + 1])


def bg_power_for_threshold(tau: float) -> float:
    """The ``alpha`` whose background score crosses the smoothed CAM at ``tau``: ``(1 - tau) ** alpha = tau``.

    Without the CRF's pairwise terms a pixel is then foreground exactly where ``Â > tau``. The
    reference's alpha = 11 is the crossing at tau ~ 0.155.
    """
    tau = float(np.clip(tau, 0.01, 0.99))
    return float(np.log(tau) / np.log(1.0 - tau))


def smoothed_foreground_values(cams: np.ndarray, cam_thresh: float = 0.05, cv_scale: float = 0.3) -> np.ndarray:
    """The CVS-smoothed CAM values ``Â_k`` above ``cam_thresh`` of one image's tagged classes, flattened.

    These are what alpha acts on; their Otsu threshold splits them into the object and the
    diffuse-activation modes without looking at any mask.
    """
    out = []
    for cam in np.asarray(cams, dtype=np.float32):
        smooth = cv_smooth(cam, coefficient_of_variation(cam, cam_thresh, cv_scale), cam_thresh)
        out.append(smooth[smooth > cam_thresh])
    return np.concatenate(out) if out else np.zeros(0, np.float32)


# ----------------------------------------------------------------------------------------------- PPMG
def ppmg_merge(cams: np.ndarray, fg: np.ndarray) -> np.ndarray:
    """Proportional pseudo-mask merging of per-class foregrounds.

    Args:
        cams: ``(K, H, W)`` un-smoothed normalised CAMs of the tagged classes, in file order.
        fg: ``(K, H, W)`` bool per-class foregrounds (CRF posterior > 0.5).

    Returns:
        ``(H, W)`` int64 slot indices: 0 = background, ``k + 1`` = ``k``-th class of ``cams``.
    """
    cams = np.asarray(cams, dtype=np.float32)
    fgf = np.asarray(fg).astype(np.float32)
    h, w = cams.shape[1:]
    # the class's CAM mass inside its own foreground is the "proportion"; +1 avoids division by 0
    mass = (cams * fgf).sum(axis=(1, 2), keepdims=True)
    importance = cams / (1.0 + mass)
    background = np.prod(1.0 - fgf, axis=0, keepdims=True) if len(cams) else np.ones((1, h, w), np.float32)
    scores = np.concatenate([background, fgf * importance], axis=0)
    return np.argmax(scores, axis=0)  # first maximum wins: ties go to the lowest slot


def pmm_mask(
    image: np.ndarray,
    cams: np.ndarray,
    classes: Sequence[int],
    crf: CRFManyFn,
    *,
    cam_thresh: float = 0.05,
    cv_scale: float = 0.3,
    bg_power: float = 11.0,
) -> MaskResult:
    """The PMM pseudo-mask of one image: CVS, a two-label CRF per class, PPMG merging.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        cams: ``(K, H, W)`` normalised CAMs of the tagged classes (float16 or float32).
        classes: the ``K`` contiguous class indices (1..C-1) of ``cams``, in merge order.
        crf: runs a list of ``(2, H, W)`` problems, e.g. ``PMM_CRF`` (gaussian compat 10).
        cam_thresh: CVS threshold ``t``.
        cv_scale: CVS ``lambda``.
        bg_power: ``alpha`` of the background score ``(1 - Â) ** alpha`` (11 in the reference).

    Returns:
        The mask (contiguous indices) and, per pixel, the CRF posterior of the chosen label (for a
        background pixel: the smallest ``1 - Q_k`` over the classes, i.e. how surely no class claims it).
    """
    h, w = image.shape[:2]
    if len(classes) == 0:
        return MaskResult(np.zeros((h, w), np.uint8), np.ones((h, w), np.float32))
    problems = []
    for cam in cams:
        smooth = cv_smooth(cam, coefficient_of_variation(cam, cam_thresh, cv_scale), cam_thresh)
        problems.append(np.stack([np.power(1.0 - smooth, bg_power, dtype=np.float32), smooth]))
    q_fg = np.stack([q[1] for q in crf(image, problems)]).astype(np.float32)  # (K, H, W)
    slots = ppmg_merge(cams, q_fg > 0.5)
    # confidence of slot s: Q of that class, or for background the least sure "not this class"
    conf_stack = np.concatenate([(1.0 - q_fg).min(axis=0, keepdims=True), q_fg], axis=0)
    confidence = np.take_along_axis(conf_stack, slots[None], axis=0)[0]
    return MaskResult(_slots_to_labels(slots, classes), confidence.astype(np.float32))


# ------------------------------------------------------------------------------------------ baselines
def threshold_scores(cams: np.ndarray, threshold: float) -> np.ndarray:
    """``(K + 1, H, W)`` scores: a constant background channel ``threshold`` above the CAMs."""
    cams = np.asarray(cams, dtype=np.float32)
    h, w = cams.shape[1:]
    return np.concatenate([np.full((1, h, w), threshold, np.float32), cams], axis=0)


def threshold_mask(cams: np.ndarray, classes: Sequence[int], threshold: float = 0.15) -> MaskResult:
    """The plain CAM baseline: argmax over ``[threshold, A_1..A_K]`` (ties to background).

    Args:
        cams: ``(K, H, W)`` normalised CAMs; ``(0, H, W)`` gives an all-background mask.
        classes: contiguous class indices of ``cams``.
        threshold: background score (the reference's evaluation sweeps 0.05..0.19).

    Returns:
        The mask and the winning score divided by the sum of the ``K + 1`` scores.
    """
    scores = threshold_scores(cams, threshold)
    slots = np.argmax(scores, axis=0)
    total = np.maximum(scores.sum(axis=0), 1e-8)
    confidence = np.take_along_axis(scores, slots[None], axis=0)[0] / total
    return MaskResult(_slots_to_labels(slots, classes), confidence.astype(np.float32))


def threshold_crf_mask(
    image: np.ndarray, cams: np.ndarray, classes: Sequence[int], crf: CRFManyFn, threshold: float = 0.15
) -> MaskResult:
    """The threshold baseline refined by one ``(K + 1)``-label CRF on the same scores.

    The unary is ``-log(score)`` of the un-normalised scores, so without pairwise terms its argmax
    is exactly :func:`threshold_mask`; the CRF only adds the image-driven smoothing.
    """
    h, w = image.shape[:2]
    if len(classes) == 0:
        return MaskResult(np.zeros((h, w), np.uint8), np.ones((h, w), np.float32))
    q = crf(image, [threshold_scores(cams, threshold)])[0].astype(np.float32)
    slots = np.argmax(q, axis=0)
    confidence = np.take_along_axis(q, slots[None], axis=0)[0]
    return MaskResult(_slots_to_labels(slots, classes), confidence)


def ignore_low_confidence(result: MaskResult, min_confidence: float | None) -> np.ndarray:
    """The mask with pixels whose confidence is below ``min_confidence`` set to 255 (None: unchanged)."""
    if min_confidence is None:
        return result.mask
    mask = result.mask.copy()
    mask[result.confidence < min_confidence] = IGNORE_INDEX
    return mask


def _slots_to_labels(slots: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    lut = np.array([0, *classes], dtype=np.uint8)
    return lut[slots]


# ------------------------------------------------------------------------------------------------ CRF
def make_crf(params: CRFParams, backend: str = "pydensecrf") -> CRFManyFn:
    """A :data:`CRFManyFn` over :func:`urn.crf.dense_crf_many` (one lattice per image for all problems).

    Args:
        params: e.g. :data:`urn.crf.PMM_CRF` (PPMG) or :data:`urn.crf.PMM_STAGE2_CRF` (heat maps).
        backend: ``"auto"``, ``"pydensecrf"`` (the reference's per-problem loop) or ``"batched"``.
    """
    from urn.crf import dense_crf_many

    def crf(image: np.ndarray, problems: Sequence[np.ndarray]) -> list[np.ndarray]:
        # images from urn.io.read_image are read-only views; torch wants writable memory
        return dense_crf_many(np.require(image, np.uint8, ["C", "W"]), problems, params, backend=backend)

    return crf
