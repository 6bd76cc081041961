"""Stage ``heat_train``: PMM's stage-1 classifier (``cam.heat_stage``; VOC: WRN-38) into ``RUN/heat_train``."""

from __future__ import annotations

from pathlib import Path

from urn.config import Config
from urn.stages.configs import stage_configs


def run(cfg: Config, run_dir: Path, *, device: str | None = None, quiet: bool = False) -> Path:
    """Train the stage-1 classifier of the run's dataset; returns its checkpoint."""
    from urn.cam.train import run as train_cam

    return train_cam(
        stage_configs(cfg, run_dir)["heat_train"], run_dir / "heat_train", resume=True, device=device, quiet=quiet
    )
