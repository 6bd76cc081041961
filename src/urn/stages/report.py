"""Stage ``report``: ``RUN/report.html`` from the run's files (:mod:`urn.report` renders; no model runs)."""

from __future__ import annotations

from pathlib import Path

from urn.config import Config
from urn.stages.configs import stage_configs


def run(cfg: Config, run_dir: Path, *, device: str | None = None, quiet: bool = False) -> Path:
    """Refresh ``metrics.json``'s stage times and write the report; returns ``RUN/report.html``."""
    from urn.engine import distributed
    from urn.io import atomic_write_json
    from urn.report import write_report
    from urn.stages.run_folder import read_metrics, stage_seconds

    path = run_dir / "report.html"
    if distributed.setup(device).is_main:
        metrics = read_metrics(run_dir)
        metrics["seconds"] = stage_seconds(run_dir)
        atomic_write_json(run_dir / "metrics.json", metrics)
        write_report(stage_configs(cfg, run_dir)["report"], run_dir)
    return path
