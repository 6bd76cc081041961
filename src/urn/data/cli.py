"""``urn data ...``: demo and scenes datasets, image-level labels from ground truth, dataset checks. No logic here.

User errors (:class:`~urn.errors.UrnError`) propagate to the main app, which prints them as one line
and exits with code 2. ``urn data check`` exits with 1 when it finds problems, 0 when the split is clean.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from urn.cli_common import command_group

data_app = command_group("Demo data, image-level labels, dataset checks.")

RootArg = Annotated[Path, typer.Argument(help="Dataset root (VOC or COCO voc_format layout).")]
SplitOpt = Annotated[str, typer.Option("--split", "-s", help="Split name: ImageSets/Segmentation/<split>.txt.")]
LayoutOpt = Annotated[str, typer.Option(help="Dataset layout: auto, voc or coco.")]
ClassesOpt = Annotated[Path | None, typer.Option(help="classes.txt (default: ROOT/classes.txt, else VOC/COCO).")]


def _layout_kind(value: str) -> Literal["auto", "voc", "coco"]:
    if value not in ("auto", "voc", "coco"):
        raise typer.BadParameter(f"{value!r} is not one of auto, voc, coco", param_hint="--layout")
    return value  # type: ignore[return-value]


@data_app.command()
def demo(
    out: Annotated[Path, typer.Argument(help="Folder to write the demo dataset to.")],
    n_train: Annotated[int | None, typer.Option(min=1, help="Images in the train split [default: 200].")] = None,
    n_val: Annotated[int | None, typer.Option(min=1, help="Images in the val split [default: 100].")] = None,
    seed: Annotated[int, typer.Option(min=0, help="Random seed (the dataset depends only on it).")] = 0,
    size: Annotated[int, typer.Option(min=32, help="Image width in pixels; the height is 3/4 of it.")] = 160,
) -> None:
    """Write a small procedural dataset (5 shape classes) in VOC layout.

    OUT must be new, empty, or this command's own earlier output with the same options (then nothing
    is written if it is complete); any other folder is refused.
    """
    from urn.data.demo import DEMO_TRAIN, DEMO_VAL, make_demo

    n_train, n_val = n_train or DEMO_TRAIN, n_val or DEMO_VAL
    before = _marker_stamp(out)
    layout = make_demo(out, n_train=n_train, n_val=n_val, seed=seed, size=(size, max(32, size * 3 // 4)))
    _report(layout, n_train, n_val, unchanged=before is not None and before == _marker_stamp(out))


@data_app.command()
def scenes(
    out: Annotated[Path, typer.Argument(help="Folder to write the scenes dataset to.")],
    n_train: Annotated[int, typer.Option(min=1, help="Images in the train split.")] = 200,
    n_val: Annotated[int, typer.Option(min=1, help="Images in the val split.")] = 50,
    seed: Annotated[
        int, typer.Option(min=0, help="Random seed (with matplotlib's sample files, all it depends on).")
    ] = 0,
) -> None:
    """Write a second procedural dataset (4 classes on natural-looking scenes, 200-500 px) in VOC layout.

    OUT must be new, empty, or this command's own earlier output with the same options (then nothing
    is written if it is complete); any other folder is refused.
    """
    from urn.data.scenes import make_scenes

    before = _marker_stamp(out)
    layout = make_scenes(out, n_train=n_train, n_val=n_val, seed=seed)
    _report(layout, n_train, n_val, unchanged=before is not None and before == _marker_stamp(out))


def _marker_stamp(out: Path) -> tuple[int, int] | None:
    """Inode and mtime of the generator's marker in ``out``: a generator that writes anything rewrites it."""
    from urn.data.generated import MARKER

    try:
        st = (out / MARKER).stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


def _report(layout, n_train: int, n_val: int, *, unchanged: bool) -> None:  # noqa: ANN001 - DatasetLayout
    what = f"{n_train} train + {n_val} val images ({layout.classes.num_classes} classes)"
    if unchanged:
        typer.echo(f"{layout.root} already holds these {what}; nothing written")
    else:
        typer.echo(f"wrote {what} to {layout.root}")


@data_app.command()
def labels(root: RootArg, split: SplitOpt, layout: LayoutOpt = "auto", classes_file: ClassesOpt = None) -> None:
    """Derive image-level labels from ground-truth masks into ROOT/cls_labels.json (merged)."""
    from urn.data.label_writing import make_labels
    from urn.data.layout import DatasetLayout

    ds = DatasetLayout.open(root, _layout_kind(layout), classes_file)
    path, n = make_labels(ds, split, progress=True)
    typer.echo(f"wrote labels of {n} images of split {split!r} to {path}")


@data_app.command()
def check(
    root: RootArg,
    split: SplitOpt,
    masks: Annotated[Path | None, typer.Option(help="Also check this folder of pseudo-masks.")] = None,
    layout: LayoutOpt = "auto",
    classes_file: ClassesOpt = None,
) -> None:
    """Read every file of a split and list each problem; exit code 1 when any is found."""
    from urn.data.check import check_dataset

    problems = check_dataset(
        root, split, masks=masks, layout=_layout_kind(layout), classes_file=classes_file, progress=True
    )
    for line in problems:
        typer.echo(line)
    if problems:
        typer.echo(f"{len(problems)} problem(s) found in split {split!r} of {root}", err=True)
        raise typer.Exit(1)
    typer.echo(f"split {split!r} of {root}: no problems found")
