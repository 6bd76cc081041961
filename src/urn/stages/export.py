"""Stage ``export``: Seg-2 on ``data.test_split`` in the VOC server layout + ``results.tar.gz``
(``RUN/export``); nothing to do when the dataset has no such split."""

from __future__ import annotations

from pathlib import Path

from urn.config import Config
from urn.stages.configs import stage_configs


def run(cfg: Config, run_dir: Path, *, device: str | None = None, quiet: bool = False) -> Path:
    """Write the test predictions and the tarball; returns ``RUN/export``."""
    from urn.data.layout import DatasetLayout
    from urn.engine import distributed
    from urn.errors import DataError
    from urn.stages.segmentation import run_predict

    seg2 = stage_configs(cfg, run_dir)["export"]
    folder = run_dir / "export"
    split = seg2.data.test_split
    if not split:
        return folder
    layout = DatasetLayout.open(seg2.data.root, seg2.data.layout, seg2.data.classes_file)
    try:
        layout.split_path(split)
    except DataError:  # an optional split: a dataset without it has nothing to export
        if distributed.setup(device).is_main and not quiet:
            print(f"[urn run] export: no split {split!r} in {layout.root}; nothing to export", flush=True)
        return folder
    run_predict(seg2, run_dir / "seg2" / "last.pt", folder, split=split, voc_server=True, device=device, quiet=quiet)
    return folder
