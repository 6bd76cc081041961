"""Report pieces that need no run: the label-free checks tables and the gallery's page-fitting layout."""

from __future__ import annotations

import re

import numpy as np

from urn.report import GALLERY_COLUMNS, STYLE, coverage_tables, gallery_table


def test_label_free_tables_list_each_stage_and_class() -> None:
    coverage = {
        "pseudo_masks": {
            "tagged_images": 4,
            "missing_tag_rate": 1 / 3,
            "empty_share": 0.25,
            "foreground_share": 0.5,
            "per_class": {"cat": {"tags": 2, "foreground_share": 0.125}, "dog": {"tags": 3, "foreground_share": 0.2}},
        },
        "cyclic_masks": {
            "tagged_images": 4,
            "missing_tag_rate": 0.75,
            "empty_share": 0.5,
            "foreground_share": 0.1,
            "per_class": {"dog": {"tags": 3, "foreground_share": None}},
        },
    }
    page = "".join(coverage_tables(coverage))
    assert "<table id='coverage'>" in page and "<table id='coverage-per-class'>" in page
    assert "<td>PMM pseudo-masks</td><td>4</td><td>33.3</td><td>25.0</td><td>50.0</td>" in page
    assert "<td>cyclic masks</td><td>4</td><td>75.0</td><td>50.0</td><td>10.0</td>" in page
    assert "<td>cat</td><td>2</td><td>12.5</td><td>–</td>" in page  # cat not in the cyclic check
    assert "<td>dog</td><td>3</td><td>20.0</td><td>–</td>" in page  # no share: a dash
    assert coverage_tables({}) == [] and coverage_tables({"pseudo_masks": None, "cyclic_masks": None}) == []


def test_gallery_images_of_any_size_share_six_fixed_columns() -> None:
    rng = np.random.default_rng(0)
    rows = [
        [(f"{w}px {c}", rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for c in GALLERY_COLUMNS]
        for h, w in ((150, 200), (375, 500))
    ]
    table = gallery_table(rows)
    assert table.startswith("<table class='gallery'>")
    assert table.count("<tr>") == 3 and table.count("<td><img ") == 12
    assert not re.search(r"<img [^>]*width=", table)  # no fixed pixel width on the images
    # fixed layout over the page's width, every image scaled to its cell, the page capped at 1000 px
    assert ".gallery{table-layout:fixed;width:100%}" in STYLE
    assert ".gallery img{display:block;width:100%;height:auto}" in STYLE
    assert "max-width:1000px" in STYLE and "img{image-rendering:pixelated;max-width:100%;height:auto}" in STYLE
