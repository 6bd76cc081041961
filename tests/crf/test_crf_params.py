"""CRFParams presets and config conversion."""

from __future__ import annotations

import dataclasses

import pytest

from urn.config import CRFConfig
from urn.crf import PMM_CRF, PMM_STAGE2_CRF, URN_CRF, CRFParams


def test_presets_match_the_references() -> None:
    assert CRFParams(1, 3, 67, 3, 4, 10, 1e-5) == URN_CRF
    assert (PMM_CRF.gaussian_sxy, PMM_CRF.gaussian_compat) == (3, 10)
    assert (PMM_CRF.bilateral_sxy, PMM_CRF.bilateral_srgb, PMM_CRF.bilateral_compat) == (80, 13, 10)
    assert (PMM_STAGE2_CRF.gaussian_sxy, PMM_STAGE2_CRF.gaussian_compat) == (3, 3)
    assert (PMM_STAGE2_CRF.bilateral_sxy, PMM_STAGE2_CRF.bilateral_srgb) == (80, 13)
    assert PMM_STAGE2_CRF.bilateral_compat == 10 and PMM_CRF.iters == PMM_STAGE2_CRF.iters == 10


def test_from_config_defaults_is_urn() -> None:
    assert CRFParams.from_config(CRFConfig()) == URN_CRF
    cfg = CRFConfig(iters=3, bilateral_srgb=13.0)
    assert CRFParams.from_config(cfg) == dataclasses.replace(URN_CRF, iters=3, bilateral_srgb=13.0)


def test_params_are_frozen_and_checked() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        URN_CRF.iters = 5  # type: ignore[misc]
    with pytest.raises(ValueError, match="bilateral_srgb"):
        CRFParams(bilateral_srgb=0)
    with pytest.raises(ValueError, match="iters"):
        CRFParams(iters=-1)
