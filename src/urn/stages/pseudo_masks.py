"""Stage ``pseudo_masks``: PMM's pseudo-masks from the CAMs (CVS + per-class CRF + PPMG),
``RUN/pseudo_masks/masks/<id>.png``."""

from __future__ import annotations

from pathlib import Path

from urn.config import Config
from urn.stages.configs import stage_configs


def run(cfg: Config, run_dir: Path, *, device: str | None = None, quiet: bool = False) -> Path:
    """Write the pseudo-masks; returns their folder."""
    from urn.cam.make_masks import run as make_masks

    pmm = stage_configs(cfg, run_dir)["pseudo_masks"]
    return make_masks(pmm, run_dir / "cams", pmm.data.train_split, run_dir / "pseudo_masks" / "masks", quiet=quiet)
