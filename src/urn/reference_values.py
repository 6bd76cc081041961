"""The reference's numbers that more than one module needs, each written once (URN_ALGORITHM.md).

A leaf module (no imports): :mod:`urn.config` takes its defaults from here, and so do the pure modules
(:mod:`urn.crf.params`, :mod:`urn.uncertainty_core`) without importing the config.
"""

from __future__ import annotations

#: Response-scaling exponents (spec 3.2): VOC's and COCO's sets.
VOC_EXPONENTS: tuple[float, ...] = (0.15, 0.2, 0.25, 4.0, 5.0, 6.0)
COCO_EXPONENTS: tuple[float, ...] = (0.4, 0.5, 0.6, 2.0, 3.0, 4.0)

#: URN's main CRF and the response-scaling CRFs (spec 3.1): Gaussian 1/3, bilateral 67/3/4, 10 iterations.
URN_CRF: dict[str, float] = {
    "gaussian_sxy": 1.0,
    "gaussian_compat": 3.0,
    "bilateral_sxy": 67.0,
    "bilateral_srgb": 3.0,
    "bilateral_compat": 4.0,
    "iters": 10,
    "prob_floor": 1e-5,
}

#: PMM's per-class two-label CRF in PPMG (spec 1.6): Gaussian 3/10, bilateral 80/13/10, 10 iterations.
PMM_CRF: dict[str, float] = {
    "gaussian_sxy": 3.0,
    "gaussian_compat": 10.0,
    "bilateral_sxy": 80.0,
    "bilateral_srgb": 13.0,
    "bilateral_compat": 10.0,
    "iters": 10,
}
