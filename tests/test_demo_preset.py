"""Every value in which the `demo` preset departs from `voc12_r2n` is justified in docs/demo.md."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from urn.config import config_to_dict, load_config

DOC = Path(__file__).resolve().parents[1] / "docs" / "demo.md"
SOURCES = {"size", "data", "peer", "rule"}


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def _documented() -> dict[str, tuple[str, str]]:
    """key -> (source, why) from the table rows ``| `key` | value | source | why |``."""
    rows = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\|\s*`([\w.]+)`\s*\|[^|]*\|\s*(\w+)\s*\|(.*)\|\s*$", line)
        if m:
            rows[m.group(1)] = (m.group(2), m.group(3).strip())
    return rows


def departures() -> dict[str, tuple[Any, Any]]:
    demo = _flat(config_to_dict(load_config("demo")))
    voc = _flat(config_to_dict(load_config("voc12_r2n")))
    return {k: (v, voc.get(k)) for k, v in demo.items() if v != voc.get(k)}


def test_every_departure_is_justified() -> None:
    documented = _documented()
    missing = {k: v for k, v in departures().items() if k not in documented}
    assert not missing, f"demo departs from voc12_r2n without a row in {DOC.name}: {missing}"


def test_every_row_names_a_real_departure_with_a_source_and_a_reason() -> None:
    documented, real = _documented(), departures()
    assert documented, "no table rows parsed"
    stale = sorted(set(documented) - set(real))
    assert not stale, f"{DOC.name} justifies keys that no longer differ: {stale}"
    for key, (source, why) in documented.items():
        assert source in SOURCES, f"{key}: source {source!r} not one of {sorted(SOURCES)}"
        assert len(why) >= 5, f"{key}: no reason given"
