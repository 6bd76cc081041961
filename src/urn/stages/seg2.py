"""Stage ``seg2``: the network retrained on the cyclic masks with the uncertainty-weighted loss, into
``RUN/seg2``."""

from __future__ import annotations

from pathlib import Path

from urn.config import Config
from urn.stages.configs import stage_configs


def run(cfg: Config, run_dir: Path, *, device: str | None = None, quiet: bool = False) -> Path:
    """Train Seg-2; returns ``RUN/seg2/last.pt``."""
    from urn.stages.segmentation import run_train

    return run_train(
        stage_configs(cfg, run_dir)["seg2"], run_dir / "seg2", phase="seg2", resume=True, device=device, quiet=quiet
    )
