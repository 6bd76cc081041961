"""CRFParams presets and config conversion."""

from __future__ import annotations

import dataclasses

import pytest

from urn.config import Config, config_from_dict, config_to_dict, load_config
from urn.crf import PMM_CRF, PMM_STAGE2_CRF, URN_CRF, CRFParams
from urn.engine.resume import pick_keys
from urn.errors import ConfigError


def test_presets_match_the_references() -> None:
    assert CRFParams(1, 3, 67, 3, 4, 10, 1e-5) == URN_CRF
    assert (PMM_CRF.gaussian_sxy, PMM_CRF.gaussian_compat) == (3, 10)
    assert (PMM_CRF.bilateral_sxy, PMM_CRF.bilateral_srgb, PMM_CRF.bilateral_compat) == (80, 13, 10)
    assert (PMM_STAGE2_CRF.gaussian_sxy, PMM_STAGE2_CRF.gaussian_compat) == (3, 3)
    assert (PMM_STAGE2_CRF.bilateral_sxy, PMM_STAGE2_CRF.bilateral_srgb) == (80, 13)
    assert PMM_STAGE2_CRF.bilateral_compat == 10 and PMM_CRF.iters == PMM_STAGE2_CRF.iters == 10


def test_the_config_holds_crf_params_sections() -> None:
    cfg = Config()
    # URN's CRF section is a CRFParams (plus enabled/backend), handed to the CRF as it is
    assert isinstance(cfg.crf, CRFParams) and isinstance(cfg.pmm.crf, CRFParams)
    fields = [f.name for f in dataclasses.fields(CRFParams)]
    assert [getattr(cfg.crf, name) for name in fields] == [getattr(URN_CRF, name) for name in fields]
    assert cfg.pmm.crf == PMM_CRF
    # each config has its own section: loading one does not change another's, nor the preset constant
    loaded = load_config(None, ["pmm.crf.iters=3", "crf.bilateral_srgb=13"])
    assert (loaded.pmm.crf.iters, loaded.crf.bilateral_srgb) == (3, 13.0)
    assert Config().pmm.crf.iters == PMM_CRF.iters == 10 and Config().crf.bilateral_srgb == 3.0


def test_old_pmm_crf_keys_still_load() -> None:
    """``pmm.crf_<name>`` (before the section) sets ``pmm.crf.<name>`` from a file, an override or a
    stored config, and is checked like it."""
    cfg = load_config(None, ["pmm.crf_iters=4"])
    assert cfg.pmm.crf.iters == 4
    stored = config_to_dict(Config())
    stored["pmm"].pop("crf")
    stored["pmm"]["crf_gaussian_sxy"] = 5.0
    assert config_from_dict(stored).pmm.crf == dataclasses.replace(PMM_CRF, gaussian_sxy=5.0)
    # and a stage record stored with them compares key by key with today's config (urn run's DONE.json)
    assert pick_keys(stored, ["pmm.crf"]) == {"pmm.crf.gaussian_sxy": 5.0}
    with pytest.raises(ConfigError, match="'pmm.crf.bilateral_sxy' must be a finite number > 0, got 0"):
        load_config(None, ["pmm.crf_bilateral_sxy=0"])
    with pytest.raises(ConfigError, match="'pmm.crf.iters' must be int"):
        load_config(None, ["pmm.crf_iters=x"])


def test_params_are_frozen_and_checked() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        URN_CRF.iters = 5  # type: ignore[misc]
    with pytest.raises(ValueError, match="bilateral_srgb"):
        CRFParams(bilateral_srgb=0)
    with pytest.raises(ValueError, match="iters"):
        CRFParams(iters=-1)
