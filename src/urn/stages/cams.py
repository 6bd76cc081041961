"""Stage ``cams``: multi-scale CAMs of the training split's tagged classes, ``RUN/cams/<id>.npz``."""

from __future__ import annotations

from pathlib import Path

from urn.config import Config
from urn.stages.configs import stage_configs


def run(cfg: Config, run_dir: Path, *, device: str | None = None, quiet: bool = False) -> Path:
    """Write the CAMs; returns their folder."""
    from urn.cam.infer import run as infer_cams
    from urn.cam.train import classifier_checkpoint

    cams = stage_configs(cfg, run_dir)["cams"]
    checkpoint = classifier_checkpoint(run_dir / "cam_train")
    return infer_cams(cams, checkpoint, cams.data.train_split, run_dir / "cams", device=device, quiet=quiet)
