"""The config of every stage of a run: later stages read earlier stages' folders (``urn run``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from urn.config import Config, load_config


def heat_stage_config(cfg: Config) -> Config | None:
    """The stage-1 classifier's config (``cam.heat_stage``) on the run's dataset, or ``None``."""
    if not cfg.cam.heat_stage or cfg.data.pseudo_masks is not None:
        return None
    heat = load_config(cfg.cam.heat_stage)
    # the run's dataset, whatever the stage-1 preset was written for
    return dataclasses.replace(heat, data=cfg.data, cam=dataclasses.replace(heat.cam, heat_stage=None, heat_dir=None))


def stage_configs(cfg: Config, run_dir: Path) -> dict[str, Config]:
    """The resolved config of every stage: later stages read earlier stages' folders."""
    heat = heat_stage_config(cfg)
    cam = cfg
    if heat is not None:  # the classifier trains on tiles guided by the stage-1 heat maps
        cam = dataclasses.replace(cfg, cam=dataclasses.replace(cfg.cam, heat_dir=str(run_dir / "heat_maps" / "heat")))
    masks = cfg.data.pseudo_masks or str(run_dir / "pseudo_masks" / "masks")
    seg1 = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, pseudo_masks=masks, uncertainty=None))
    seg2_data = dataclasses.replace(
        cfg.data,
        pseudo_masks=str(run_dir / "uncertainty" / "masks"),
        uncertainty=str(run_dir / "uncertainty" / "uncertainty"),
    )
    seg2 = dataclasses.replace(cfg, data=seg2_data)
    return {
        "heat_train": heat or cfg,
        "heat_maps": heat or cfg,
        "cam_train": cam,
        "cams": cam,
        "pseudo_masks": cfg,
        "seg1": seg1,
        "uncertainty": seg1,
        "seg2": seg2,
        "evaluate": seg2,
        "export": seg2,
        "report": seg2,
    }
