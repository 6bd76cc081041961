"""Stage ``heat_maps``: the stage-1 classifier's CAMs and CRF heat maps of the training split
(``RUN/heat_maps/cams``, ``RUN/heat_maps/heat``), which guide the ``cam_train`` tiles."""

from __future__ import annotations

from pathlib import Path

from urn.config import Config
from urn.stages.configs import stage_configs


def run(cfg: Config, run_dir: Path, *, device: str | None = None, quiet: bool = False) -> Path:
    """Write the heat maps; returns their folder."""
    from urn.cam.infer import run as infer_cams
    from urn.cam.train import classifier_checkpoint

    heat = stage_configs(cfg, run_dir)["heat_maps"]
    folder = run_dir / "heat_maps"
    checkpoint = classifier_checkpoint(run_dir / "heat_train")
    split = heat.data.train_split
    infer_cams(heat, checkpoint, split, folder / "cams", heat_out=folder / "heat", device=device, quiet=quiet)
    return folder / "heat"
