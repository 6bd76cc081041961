"""Stage ``cam_train``: the multi-label CAM classifier on image-level labels, into ``RUN/cam_train``."""

from __future__ import annotations

from pathlib import Path

from urn.config import Config
from urn.stages.configs import stage_configs


def run(cfg: Config, run_dir: Path, *, device: str | None = None, quiet: bool = False) -> Path:
    """Train the classifier (on heat-guided tiles with ``cam.heat_stage``); returns its checkpoint."""
    from urn.cam.train import run as train_cam

    return train_cam(
        stage_configs(cfg, run_dir)["cam_train"], run_dir / "cam_train", resume=True, device=device, quiet=quiet
    )
