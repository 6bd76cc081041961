"""Progress bars for long work: rate and ETA on a terminal, quiet in logs and tests."""

from __future__ import annotations

import os
import sys
from typing import Any

from tqdm.auto import tqdm


def progress_bar(*, total: int, desc: str, initial: int = 0, unit: str = "it", disable: bool = False) -> Any:
    """A tqdm bar showing count, rate (``unit``/s) and ETA.

    Disabled when ``disable`` is true or ``URN_NO_PROGRESS=1``; on a non-terminal stderr it
    refreshes at most every 10 s so log files stay readable.
    """
    disable = disable or os.environ.get("URN_NO_PROGRESS") == "1"
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit=unit,
        dynamic_ncols=True,
        disable=disable,
        mininterval=0.5 if sys.stderr.isatty() else 10.0,
        smoothing=0.1,
    )


def iter_progress(items: list[str], progress: bool, desc: str) -> Any:
    """``items``, through a bar on stderr when ``progress`` is set and stderr is a terminal."""
    if not progress:
        return items
    from tqdm import tqdm as plain_tqdm

    return plain_tqdm(items, desc=desc, unit="img", leave=False, disable=None)  # disable=None: off when not a tty
