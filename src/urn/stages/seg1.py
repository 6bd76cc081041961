"""Stage ``seg1``: the segmentation network on the pseudo-masks (PUS loss), into ``RUN/seg1``."""

from __future__ import annotations

from pathlib import Path

from urn.config import Config
from urn.stages.configs import stage_configs


def run(cfg: Config, run_dir: Path, *, device: str | None = None, quiet: bool = False) -> Path:
    """Train Seg-1; returns ``RUN/seg1/last.pt``."""
    from urn.stages.segmentation import run_train

    return run_train(
        stage_configs(cfg, run_dir)["seg1"], run_dir / "seg1", phase="seg1", resume=True, device=device, quiet=quiet
    )
