"""Dense-CRF parameters and the named presets of the URN and PMM references."""

from __future__ import annotations

from dataclasses import dataclass

from urn.config import CRFConfig


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

    gaussian_sxy: float = 1.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 67.0
    bilateral_srgb: float = 3.0
    bilateral_compat: float = 4.0
    iters: int = 10
    prob_floor: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("gaussian_sxy", "bilateral_sxy", "bilateral_srgb", "prob_floor"):
            if not getattr(self, name) > 0:
                raise ValueError(f"CRFParams.{name} must be > 0, got {getattr(self, name)}")
        if self.iters < 0:
            raise ValueError(f"CRFParams.iters must be >= 0, got {self.iters}")
        if not 0 < self.prob_floor <= 1:
            raise ValueError(f"CRFParams.prob_floor must be in (0, 1], got {self.prob_floor}")

    @classmethod
    def from_config(cls, cfg: CRFConfig) -> CRFParams:
        """The parameters of a :class:`~urn.config.CRFConfig` section (``enabled``/``backend`` aside)."""
        return cls(
            gaussian_sxy=cfg.gaussian_sxy,
            gaussian_compat=cfg.gaussian_compat,
            bilateral_sxy=cfg.bilateral_sxy,
            bilateral_srgb=cfg.bilateral_srgb,
            bilateral_compat=cfg.bilateral_compat,
            iters=cfg.iters,
            prob_floor=cfg.prob_floor,
        )


#: URN's main CRF and the response-scaling CRFs (spec 3.1): Gaussian 1/3, bilateral 67/3/4, 10 iterations.
URN_CRF = CRFParams()

#: PMM's per-class two-label CRF in PPMG (spec 1.6): Gaussian 3/10, bilateral 80/13/10, 10 iterations.
PMM_CRF = CRFParams(
    gaussian_sxy=3.0,
    gaussian_compat=10.0,
    bilateral_sxy=80.0,
    bilateral_srgb=13.0,
    bilateral_compat=10.0,
    iters=10,
)

#: PMM's stage-2 (K+1)-label CRF: Gaussian 3/3, bilateral 80/13/10, 10 iterations.
PMM_STAGE2_CRF = CRFParams(
    gaussian_sxy=3.0,
    gaussian_compat=3.0,
    bilateral_sxy=80.0,
    bilateral_srgb=13.0,
    bilateral_compat=10.0,
    iters=10,
)
