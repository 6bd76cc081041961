"""The run folder's markers and summary files, shared by ``urn run`` and the stages that read them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from urn.stages.order import STAGES

DONE = "DONE.json"
STARTED = "STARTED.json"


def read_metrics(run_dir: Path) -> dict[str, Any]:
    """The run's ``metrics.json`` as a dict."""
    return json.loads((Path(run_dir) / "metrics.json").read_text(encoding="utf-8"))


def stage_seconds(run_dir: Path) -> dict[str, float]:
    """Wall time of every completed stage, from the ``DONE.json`` markers."""
    out = {}
    for stage in STAGES:
        marker = Path(run_dir) / stage / DONE
        if marker.is_file():
            out[stage] = round(json.loads(marker.read_text(encoding="utf-8"))["seconds"], 2)
    return out
