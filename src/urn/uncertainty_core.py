"""URN's uncertainty by response scaling, as pure math on arrays (spec sections 3.1-3.3).

Given an image and the averaged test-time softmax P (C x H x W):

1. The main CRF over all C labels gives the **cyclic pseudo-mask** Y = argmax Q.
2. L = sorted classes present in Y; P_L = P[L] (pre-CRF, not renormalised), K = |L|.
3. For each c in 0..K-1 and each exponent n: P' = P_L with row c raised to n (its unary is scaled by n),
   the same CRF with K labels, and B_{c,n} = [argmax P' = c].
4. U_c = population variance of B_{c,n} over the exponents; U = max_c U_c;
   normalised per image: U~ = (U - min U) / (max U - min U + 1e-6).
5. Loss-weight byte w = uint8((1 - U~) * 255) (truncation); the reference writes [Y, w, w] with
   ``cv2.imwrite``.

All 1 + 6K CRF problems go through one :class:`~urn.crf.CRFSolver` (so the batched backend builds the
image's lattices once). The main problem has to be solved first, on its own, because the response-scaling
problems depend on it: L is read off its argmax. The 6K scaled problems then run in one batch, given as
unary energies so that the rows they share are computed once. No files are read or written here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from urn.crf import URN_CRF, CRFParams, CRFSolver
from urn.crf.reference import unary_energy
from urn.crf.solver import check_image, check_probs
from urn.reference_values import COCO_EXPONENTS, VOC_EXPONENTS  # noqa: F401 (re-exported)

_NORM_EPS = 1e-6


@dataclass(frozen=True)
class UncertaintyResult:
    """Outputs of :func:`response_scaling` for one image.

    Attributes:
        cyclic_mask: (H, W) uint8 class ids, the argmax of the main CRF (after the optional tag
            restriction).
        uncertainty: (H, W) float32 normalised uncertainty U~ in [0, 1).
        raw: (H, W) float32 uncertainty U before normalisation (values m(1-m), m = j/len(exponents)).
        present: the class ids L present in ``cyclic_mask``, sorted.
    """

    cyclic_mask: np.ndarray
    uncertainty: np.ndarray
    raw: np.ndarray
    present: tuple[int, ...]


def scaled_problems(probs_l: np.ndarray, exponents: Sequence[float]) -> list[np.ndarray]:
    """The response-scaling CRF inputs: for each class row c and exponent n, P_L with row c ** n.

    Args:
        probs_l: (K, H, W) float32 probabilities of the present classes.
        exponents: the exponents n.

    Returns:
        K * len(exponents) arrays of shape (K, H, W), class-major (c, then n).
    """
    out = []
    for c in range(probs_l.shape[0]):
        for n in exponents:
            p = probs_l.copy()
            p[c] = np.power(probs_l[c], np.float32(n))
            out.append(p)
    return out


def scaled_energies(probs_l: np.ndarray, exponents: Sequence[float], prob_floor: float) -> list[np.ndarray]:
    """The unary energies of :func:`scaled_problems`, taking each logarithm once.

    Only row c of a scaled problem differs from ``-log(clip(P_L))``, so the other rows are shared;
    every value equals what ``unary_energy(scaled_problems(...)[i])`` gives.

    Args:
        probs_l: (K, H, W) float32 probabilities of the present classes.
        exponents: the exponents n.
        prob_floor: the CRF's probability floor.

    Returns:
        K * len(exponents) float32 arrays of shape (K, H*W), class-major (c, then n).
    """
    base = unary_energy(probs_l, prob_floor)
    out = []
    for c in range(probs_l.shape[0]):
        for n in exponents:
            u = base.copy()
            u[c] = unary_energy(np.power(probs_l[c : c + 1], np.float32(n)), prob_floor)[0]
            out.append(u)
    return out


def uncertainty_from_argmaxes(argmaxes: np.ndarray, num_exponents: int) -> np.ndarray:
    """U = max_c Var_n [argmax_{c,n} == c], the population variance over exponents.

    Args:
        argmaxes: (K * E, H, W) integer argmax maps of the scaled problems, class-major.
        num_exponents: E.

    Returns:
        (H, W) float64 U.
    """
    k = argmaxes.shape[0] // num_exponents
    per_class = argmaxes.reshape(k, num_exponents, *argmaxes.shape[1:])
    hits = per_class == np.arange(k).reshape(k, 1, 1, 1)
    # Var of a 0/1 sample = m(1 - m) with m the fraction of ones (ddof 0), as np.var gives.
    return np.var(hits, axis=1, dtype=np.float64).max(axis=0)


def normalise_uncertainty(raw: np.ndarray) -> np.ndarray:
    """Per-image min-max normalisation ``(U - min) / (max - min + 1e-6)``, (H, W) float32."""
    raw = np.asarray(raw, dtype=np.float64)
    lo, hi = float(raw.min()), float(raw.max())
    return ((raw - lo) / (hi - lo + _NORM_EPS)).astype(np.float32)


def response_scaling(
    image: np.ndarray,
    probs: np.ndarray,
    *,
    exponents: Sequence[float] = VOC_EXPONENTS,
    params: CRFParams = URN_CRF,
    backend: str = "auto",
    allowed_classes: Iterable[int] | None = None,
    device: str | torch.device | None = None,
) -> UncertaintyResult:
    """Cyclic pseudo-mask and URN uncertainty of one image (spec 3.1-3.2).

    Args:
        image: (H, W, 3) uint8 RGB image (the reference reads it with PIL for the CRF).
        probs: (C, H, W) float averaged softmax over all C classes (float32; float16/64 accepted).
        exponents: response-scaling exponents (VOC default; see :data:`COCO_EXPONENTS`).
        params: CRF parameters shared by the main and the scaled CRFs.
        backend: CRF backend, "auto", "pydensecrf" or "batched".
        allowed_classes: restrict to image tags (off by default, as in the reference): predicted
            classes outside this set (background 0 is always allowed) become background 0 in the
            cyclic mask before L is determined.
        device: torch device for the batched backend (default CPU).

    Returns:
        The :class:`UncertaintyResult`.

    Raises:
        ValueError: bad shapes, NaN/inf probabilities, or no exponents.
    """
    image = check_image(image)
    probs = check_probs(probs, image.shape[:2], what="probabilities")
    if len(exponents) == 0:
        raise ValueError("response scaling needs at least one exponent")
    if probs.shape[0] > 256:
        raise ValueError(f"at most 256 classes fit a uint8 mask, got {probs.shape[0]}")

    solver = CRFSolver(image, params, backend=backend, device=device)
    q = solver.run([probs])[0]
    mask = q.argmax(0).astype(np.uint8)
    if allowed_classes is not None:
        allowed = np.array(sorted({0, *(int(c) for c in allowed_classes)}))
        mask[~np.isin(mask, allowed)] = 0
    present = tuple(int(c) for c in np.unique(mask))

    # One class: every scaled CRF with one label returns that label, so U = 0.
    raw = np.zeros(mask.shape, dtype=np.float64)
    if len(present) > 1:
        outs = solver.run_energies(scaled_energies(probs[list(present)], exponents, params.prob_floor))
        raw = uncertainty_from_argmaxes(np.stack([o.argmax(0) for o in outs]), len(exponents))
    return UncertaintyResult(
        cyclic_mask=mask,
        uncertainty=normalise_uncertainty(raw),
        raw=raw.astype(np.float32),
        present=present,
    )


def loss_weights_from_uncertainty(u_norm: np.ndarray) -> np.ndarray:
    """The reference's weight byte ``uint8((1 - U~) * 255)`` (truncation).

    Args:
        u_norm: (H, W) float normalised uncertainty in [0, 1].

    Returns:
        (H, W) uint8; 255 = certain.
    """
    w = (1.0 - np.asarray(u_norm, dtype=np.float32)) * np.float32(255.0)
    return np.clip(w, 0, 255).astype(np.uint8)


def reference_png_array(mask: np.ndarray, u_norm: np.ndarray) -> np.ndarray:
    """The (H, W, 3) uint8 array the reference passes to ``cv2.imwrite``: channels [mask, w, w].

    OpenCV treats it as BGR, so on disk R = w, G = w, B = mask (spec 3.3).
    """
    if mask.shape != u_norm.shape:
        raise ValueError(f"mask {mask.shape} and uncertainty {u_norm.shape} differ in shape")
    w = loss_weights_from_uncertainty(u_norm)
    return np.dstack([mask.astype(np.uint8), w, w])
