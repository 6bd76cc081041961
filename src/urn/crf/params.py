"""Dense-CRF parameters and the named presets of the URN and PMM references."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from urn import reference_values as ref


@dataclass(frozen=True)
class CRFParams:
    """Fully connected CRF with Potts compatibilities (Krähenbühl & Koltun 2011, pydensecrf semantics).

    The energy has a unary ``-log(clip(P, prob_floor, 1))`` and two Gaussian pairwise terms: an
    appearance-free smoothness kernel over positions (``gaussian_*``) and a bilateral kernel over
    positions and RGB colour (``bilateral_*``). ``*_sxy`` and ``bilateral_srgb`` are standard deviations
    (pixels, intensity levels); ``*_compat`` are the Potts weights.

    Attributes:
        gaussian_sxy: spatial standard deviation of the smoothness kernel, pixels.
        gaussian_compat: Potts weight of the smoothness kernel.
        bilateral_sxy: spatial standard deviation of the bilateral kernel, pixels.
        bilateral_srgb: colour standard deviation of the bilateral kernel, intensity levels.
        bilateral_compat: Potts weight of the bilateral kernel.
        iters: mean-field iterations.
        prob_floor: probabilities are clipped to ``[prob_floor, 1]`` before the log.
    """

    gaussian_sxy: float = ref.URN_CRF["gaussian_sxy"]
    gaussian_compat: float = ref.URN_CRF["gaussian_compat"]
    bilateral_sxy: float = ref.URN_CRF["bilateral_sxy"]
    bilateral_srgb: float = ref.URN_CRF["bilateral_srgb"]
    bilateral_compat: float = ref.URN_CRF["bilateral_compat"]
    iters: int = int(ref.URN_CRF["iters"])
    prob_floor: float = ref.URN_CRF["prob_floor"]

    def __post_init__(self) -> None:
        for name in ("gaussian_sxy", "bilateral_sxy", "bilateral_srgb", "prob_floor"):
            if not getattr(self, name) > 0:
                raise ValueError(f"CRFParams.{name} must be > 0, got {getattr(self, name)}")
        if self.iters < 0:
            raise ValueError(f"CRFParams.iters must be >= 0, got {self.iters}")
        if not 0 < self.prob_floor <= 1:
            raise ValueError(f"CRFParams.prob_floor must be in (0, 1], got {self.prob_floor}")


#: URN's main CRF and the response-scaling CRFs (spec 3.1): Gaussian 1/3, bilateral 67/3/4, 10 iterations.
URN_CRF = CRFParams()

#: PMM's per-class two-label CRF in PPMG (spec 1.6): Gaussian 3/10, bilateral 80/13/10, 10 iterations.
PMM_CRF = CRFParams(**ref.PMM_CRF)  # type: ignore[arg-type]

#: PMM's stage-2 (K+1)-label CRF: Gaussian 3/3, bilateral 80/13/10, 10 iterations.
PMM_STAGE2_CRF = dataclasses.replace(PMM_CRF, gaussian_compat=3.0)
