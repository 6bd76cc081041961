"""``report.html``: one self-contained page (images embedded) summarising a pipeline run.

Sections: per-stage mIoU, the label-free checks (tags vs masks, :mod:`urn.coverage`), per-class IoU
of Seg-1 and Seg-2, training curves, the uncertainty report (AUROC, error by uncertainty decile, most
uncertain training images), and a gallery of val images: image | pseudo-mask | uncertainty | Seg-1 |
Seg-2 | ground truth. Gallery images are scaled to their column (six equal columns across the page),
whatever their size.

The report only renders: it reads the run's files (``metrics.json``, training logs, the evaluate
stage's predictions, uncertainty report and gallery artefacts from :mod:`urn.stages.gallery`) and the
dataset, and runs no model.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from urn.config import Config
from urn.io import atomic_write_text, colorize, read_image, read_mask

GALLERY_COLUMNS = ("image", "pseudo-mask", "uncertainty", "Seg-1", "Seg-2", "ground truth")
COVERAGE_LABELS = {"pseudo_masks": "PMM pseudo-masks", "cyclic_masks": "cyclic masks"}
# Tables and images never grow past the page; gallery columns share the width equally (fixed
# layout), and each image fills its cell at its own aspect ratio, so 500 px images fit six abreast.
STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em auto;padding:0 1em;max-width:1000px}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}"
    "th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}"
    "img{image-rendering:pixelated;max-width:100%;height:auto}"
    ".gallery{table-layout:fixed;width:100%}.gallery td,.gallery th{padding:2px;overflow:hidden}"
    ".gallery th{font-size:90%}.gallery img{display:block;width:100%;height:auto}"
)


def _png_uri(array_or_path: np.ndarray | Path) -> str:
    if isinstance(array_or_path, Path):
        data = array_or_path.read_bytes()
    else:
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(array_or_path).save(buf, format="PNG")
        data = buf.getvalue()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _img(src: np.ndarray | Path, alt: str) -> str:
    return f'<img src="{_png_uri(src)}" alt="{html.escape(alt)}">'


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.2f}"
    return html.escape(str(v))


def _curves_png(run_dir: Path) -> np.ndarray | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {}
    for phase in ("cam_train", "seg1", "seg2"):
        log = run_dir / phase / "log.jsonl"
        if not log.is_file():
            continue
        pts = []
        for line in log.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "loss" in rec:
                pts.append((rec["iter"], rec["loss"]))
        if pts:
            series[phase] = pts
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(6, 3), dpi=100)
    for phase, pts in series.items():
        x, y = zip(*pts, strict=True)
        ax.plot(x, y, label=phase)
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    from PIL import Image

    return np.asarray(Image.open(buf).convert("RGB"))


def _gallery_rows(cfg: Config, run_dir: Path) -> list[list[tuple[str, np.ndarray]]]:
    """The six columns of each gallery image, read from the evaluate stage's files (grey where absent)."""
    from urn.data.layout import DatasetLayout

    gallery = run_dir / "evaluate" / "gallery"
    index = gallery / "gallery.json"
    if not index.is_file():
        return []
    ids = json.loads(index.read_text(encoding="utf-8"))["ids"]
    layout = DatasetLayout.open(cfg.data.root, cfg.data.layout, cfg.data.classes_file)
    rows = []
    for image_id in ids:
        image = layout.read_image(image_id)
        blank = np.full_like(image, 200)

        def mask_or_blank(path: Path, blank: np.ndarray = blank, raw_ids: bool = False) -> np.ndarray:
            if not path.is_file():
                return blank
            mask = read_mask(path)
            return colorize(layout.classes.to_train(mask) if raw_ids else mask)

        uncertainty = gallery / f"{image_id}_uncertainty.png"
        cols = [
            ("image", image),
            ("pseudo-mask", mask_or_blank(gallery / f"{image_id}_pseudo.png")),
            ("uncertainty", read_image(uncertainty) if uncertainty.is_file() else blank),
        ]
        for phase in ("seg1", "seg2"):
            pred = run_dir / "evaluate" / phase / "predictions" / f"{image_id}.png"
            cols.append((phase.replace("seg", "Seg-"), mask_or_blank(pred, raw_ids=True)))
        try:
            cols.append(("ground truth", colorize(layout.read_gt(image_id))))
        except Exception:
            cols.append(("ground truth", blank))
        rows.append([(f"{image_id}: {name}", arr) for name, arr in cols])
    return rows


def _pct(v: float | None, digits: int = 1) -> str:
    return "–" if v is None else f"{100 * v:.{digits}f}"


def coverage_tables(coverage: dict[str, dict[str, Any] | None]) -> list[str]:
    """The "Label-free checks" section: per mask set and per class, what the masks keep of the tags.

    Args:
        coverage: ``metrics.json["coverage"]``: ``{"pseudo_masks": ..., "cyclic_masks": ...}``, each a
            :meth:`urn.coverage.Coverage.as_dict` or ``None``.

    Returns:
        HTML fragments (empty when no check ran).
    """
    stages = {k: v for k, v in coverage.items() if v}
    if not stages:
        return []
    parts = [
        "<h2>Label-free checks (tags vs masks, train)</h2>",
        "<p>No ground truth: for every image, are its tagged classes in the mask? A high missing-tag rate means "
        "the stage lost the objects.</p>",
        "<table id='coverage'><tr><th>masks</th><th>tagged images</th><th>missing-tag rate (%)</th>"
        "<th>all-background images (%)</th><th>foreground share (%)</th></tr>",
    ]
    for key, cov in stages.items():
        parts.append(
            f"<tr><td>{html.escape(COVERAGE_LABELS.get(key, key))}</td><td>{cov.get('tagged_images', '–')}</td>"
            f"<td>{_pct(cov.get('missing_tag_rate'))}</td><td>{_pct(cov.get('empty_share'))}</td>"
            f"<td>{_pct(cov.get('foreground_share'))}</td></tr>"
        )
    parts.append("</table>")
    names = list(dict.fromkeys(name for cov in stages.values() for name in cov.get("per_class", {})))
    if names:
        parts.append(
            "<table id='coverage-per-class'><tr><th>class</th><th>tagged images</th>"
            + "".join(f"<th>{html.escape(COVERAGE_LABELS.get(k, k))}: foreground share (%)</th>" for k in stages)
            + "</tr>"
        )
        for name in names:
            rows = [cov.get("per_class", {}).get(name) or {} for cov in stages.values()]
            tags = next((r["tags"] for r in rows if "tags" in r), "–")
            parts.append(
                f"<tr><td>{html.escape(name)}</td><td>{tags}</td>"
                + "".join(f"<td>{_pct(r.get('foreground_share'))}</td>" for r in rows)
                + "</tr>"
            )
        parts.append("</table>")
    return parts


def gallery_table(rows: list[list[tuple[str, np.ndarray]]]) -> str:
    """The gallery as one fixed-layout table: a header of :data:`GALLERY_COLUMNS`, one row per image.

    Args:
        rows: per image, ``(alt text, (H, W, 3) uint8 RGB)`` for each column; sizes may differ.
    """
    head = "<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in GALLERY_COLUMNS) + "</tr>"
    body = ["<tr>" + "".join(f"<td>{_img(arr, alt)}</td>" for alt, arr in row) + "</tr>" for row in rows]
    return "<table class='gallery'>" + head + "".join(body) + "</table>"


def write_report(cfg: Config, run_dir: Path) -> Path:
    """Write ``run_dir/report.html`` from the run's files (it runs no model); returns its path."""
    run_dir = Path(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    miou = metrics.get("miou", {})
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>urn report</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>urn run: {html.escape(cfg.name)}</h1>",
        f"<p>Dataset <code>{html.escape(cfg.data.root)}</code>, backbone "
        f"<code>{html.escape(cfg.model.backbone.name)}</code>, head <code>{html.escape(cfg.model.head)}</code>.</p>",
        "<h2>mIoU by stage</h2><table id='miou'><tr><th>stage</th><th>split</th><th>mIoU (%)</th></tr>",
    ]
    labels = {
        "pseudo_masks": ("PMM pseudo-masks", "train"),
        "cyclic_masks": ("cyclic masks", "train"),
        "seg1": ("Seg-1 (PUS)", "val"),
        "seg2": ("Seg-2 (URN)", "val"),
    }
    for key, (label, split) in labels.items():
        parts.append(f"<tr><td>{label}</td><td>{split}</td><td>{_fmt(miou.get(key))}</td></tr>")
    parts.append("</table>")
    if metrics.get("notes"):
        parts.append("<ul id='notes'>" + "".join(f"<li>{html.escape(n)}</li>" for n in metrics["notes"]) + "</ul>")
    parts += coverage_tables(metrics.get("coverage") or {})
    per_class = metrics.get("per_class_iou", {})
    if per_class:
        names = list(next(iter(per_class.values())).keys())
        parts.append(
            "<h2>Per-class IoU (val)</h2><table id='per-class'><tr><th>class</th>"
            + "".join(f"<th>{p}</th>" for p in per_class)
            + "</tr>"
        )
        for name in names:
            parts.append(
                f"<tr><td>{html.escape(name)}</td>"
                + "".join(f"<td>{_fmt(per_class[p].get(name))}</td>" for p in per_class)
                + "</tr>"
            )
        parts.append("</table>")
    curves = _curves_png(run_dir)
    if curves is not None:
        parts.append("<h2>Training curves</h2>" + _img(curves, "training curves"))
    unc = metrics.get("uncertainty")
    udir = run_dir / "evaluate" / "uncertainty_report"
    if unc:
        parts.append("<h2>Does the uncertainty find the pseudo-mask noise?</h2><table id='uncertainty'>")
        for k, v in unc.items():
            parts.append(f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>")
        parts.append("</table>")
        for name, alt in (
            ("error_by_decile.png", "error rate by uncertainty decile"),
            ("most_uncertain.png", "most uncertain training images"),
        ):
            if (udir / name).is_file():
                parts.append(f"<p>{html.escape(alt)}</p>" + _img(udir / name, alt))
    rows = _gallery_rows(cfg, run_dir)
    if rows:
        parts.append("<h2>Gallery (val)</h2>" + gallery_table(rows))
    seconds = metrics.get("seconds", {})
    if seconds:
        parts.append("<h2>Time per stage</h2><table id='seconds'><tr><th>stage</th><th>seconds</th></tr>")
        parts += [f"<tr><td>{k}</td><td>{v:.1f}</td></tr>" for k, v in seconds.items()]
        parts.append("</table>")
    parts.append("</body></html>")
    path = run_dir / "report.html"
    atomic_write_text(path, "\n".join(parts))
    return path
