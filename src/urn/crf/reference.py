"""The pydensecrf2 backend: one ``DenseCRF2D`` per problem, exactly as the URN/PMM references call it."""

from __future__ import annotations

from types import ModuleType

import numpy as np

from urn.crf.params import CRFParams
from urn.errors import UrnError


def import_pydensecrf() -> ModuleType:
    """``pydensecrf.densecrf``, imported on first use.

    Raises:
        UrnError: pydensecrf2 is not installed.
    """
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise UrnError(
            "the 'pydensecrf' CRF backend needs the pydensecrf2 package (pip install pydensecrf2); "
            f"import failed: {exc}. Use crf.backend=batched instead."
        ) from None
    return dcrf


def unary_energy(probs: np.ndarray, prob_floor: float) -> np.ndarray:
    """``-log(clip(P, floor, 1))`` as pydensecrf's ``unary_from_softmax`` computes it.

    Args:
        probs: (K, H, W) float32 probabilities.
        prob_floor: lower clip.

    Returns:
        (K, H*W) float32, C-contiguous.
    """
    k = probs.shape[0]
    p = np.asarray(probs, dtype=np.float32).reshape(k, -1)
    return np.ascontiguousarray(-np.log(np.clip(p, prob_floor, 1.0)), dtype=np.float32)


def dense_crf_energy(image: np.ndarray, unary: np.ndarray, params: CRFParams) -> np.ndarray:
    """One pydensecrf2 call from unary energies.

    Args:
        image: (H, W, 3) uint8 RGB.
        unary: (K, H*W) float32 energies ``-log p``.
        params: CRF parameters (``prob_floor`` unused here).

    Returns:
        (K, H, W) float32 marginals.
    """
    dcrf = import_pydensecrf()
    h, w = image.shape[:2]
    k = unary.shape[0]
    crf = dcrf.DenseCRF2D(w, h, k)
    crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    crf.addPairwiseGaussian(sxy=params.gaussian_sxy, compat=params.gaussian_compat)
    crf.addPairwiseBilateral(
        sxy=params.bilateral_sxy,
        srgb=params.bilateral_srgb,
        # The binding wants a writable buffer; decoded images (np.asarray of a PIL image) are read-only.
        rgbim=np.array(image, dtype=np.uint8, order="C", copy=True),
        compat=params.bilateral_compat,
    )
    q = crf.inference(params.iters)
    return np.asarray(q, dtype=np.float32).reshape(k, h, w)
