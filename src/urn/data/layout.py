"""Where a dataset's files are: images, ground truth, split lists, class list, image-level labels.

Two on-disk layouts are understood (URN_ALGORITHM.md §6):

VOC (also any generic dataset arranged the same way)::

    ROOT/JPEGImages/<id>.jpg
    ROOT/SegmentationClassAug/<id>.png   (used when present, else SegmentationClass/; optional)
    ROOT/ImageSets/Segmentation/<split>.txt   (split "trainaug" also finds train_aug.txt and back)
    ROOT/classes.txt, ROOT/cls_labels.json or ROOT/cls_labels.npy   (optional)

COCO in the reference's ``voc_format``::

    ROOT/images/<id>.jpg
    ROOT/voc_format/{train,val}.txt
    ROOT/voc_format/class_labels/<id>.png   (raw category ids; optional)
    ROOT/voc_format/cls_labels.npy          (or ROOT/cls_labels.json / ROOT/cls_labels.npy)

The module also reads the files training takes from outside the dataset proper: pseudo-masks
(:func:`read_target`, single-channel or the reference's 3-channel URN PNG) and per-pixel weights
(:func:`read_weight`); see :mod:`urn.data.dataset` for their formats.

Split files hold one id per line. Blank lines, CRLF endings and trailing spaces are tolerated, as
are PMM's ``path/to/<id>.jpg path/to/<id>.png`` pair lines (the id is the first file's stem). An id
may not contain ``/``, ``\\`` or ``..`` and may not be absolute, so a split file can never make urn
read or write outside the dataset root.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from urn import io
from urn.data.classes import ClassList, coco, read_classes_file, voc
from urn.data.target_format import split_rgb_target
from urn.errors import DataError

LayoutKind = Literal["voc", "coco"]
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_SPLIT_ALIASES = {"trainaug": "train_aug", "train_aug": "trainaug"}


class DatasetLayout:
    """Paths and readers for one dataset on disk. Build it with :meth:`open`.

    Attributes:
        root: dataset root folder.
        kind: ``"voc"`` or ``"coco"``.
        classes: the class list (contiguous index <-> raw id on disk).
        image_dir: folder of ``<id>.<ext>`` images.
        gt_dir: folder of ground-truth ``<id>.png`` masks, or None when the dataset has none.
        split_dir: folder holding ``<split>.txt`` files.
    """

    def __init__(
        self,
        root: Path,
        kind: LayoutKind,
        classes: ClassList,
        image_dir: Path,
        gt_dir: Path | None,
        split_dir: Path,
    ) -> None:
        self.root = root
        self.kind: LayoutKind = kind
        self.classes = classes
        self.image_dir = image_dir
        self.gt_dir = gt_dir
        self.split_dir = split_dir
        self._ids: dict[str, list[str]] = {}
        self._labels: dict[str, tuple[int, ...]] | None = None

    def __repr__(self) -> str:
        return f"DatasetLayout(root={str(self.root)!r}, kind={self.kind!r}, classes={self.classes.num_classes})"

    # ------------------------------------------------------------------------------------- open
    @classmethod
    def open(
        cls,
        root: str | Path,
        layout: Literal["auto", "voc", "coco"] = "auto",
        classes_file: str | Path | None = None,
    ) -> DatasetLayout:
        """Inspect ``root`` and return its layout.

        Args:
            root: dataset root folder.
            layout: ``"auto"`` detects it from the folders present (``JPEGImages/`` -> VOC,
                ``images/`` + ``voc_format/`` -> COCO).
            classes_file: class list; default ``ROOT/classes.txt``, else VOC's 21 or COCO's 81.

        Raises:
            DataError: the folder is missing or matches neither layout.
        """
        root = Path(root)
        if not root.is_dir():
            raise DataError(root, "dataset folder not found")
        is_voc = (root / "JPEGImages").is_dir()
        is_coco = (root / "images").is_dir() and (root / "voc_format").is_dir()
        if layout == "auto":
            if is_voc == is_coco:
                hint = ""
                if (root / "VOC2012" / "JPEGImages").is_dir():
                    hint = f" (did you mean {root / 'VOC2012'}?)"
                what = "both" if is_voc else "neither"
                raise DataError(
                    root,
                    f"{what} of JPEGImages/ (VOC layout) and images/ + voc_format/ (COCO layout) "
                    f"found; set the layout explicitly{hint}",
                )
            layout = "voc" if is_voc else "coco"
        if layout == "voc":
            if not is_voc:
                raise DataError(root / "JPEGImages", "image folder of the VOC layout not found")
            image_dir, split_dir = root / "JPEGImages", root / "ImageSets" / "Segmentation"
            gt_dir = next((d for d in (root / "SegmentationClassAug", root / "SegmentationClass") if d.is_dir()), None)
            default_classes = voc()
        elif layout == "coco":
            if not is_coco:
                raise DataError(root, "COCO layout needs the folders images/ and voc_format/")
            image_dir, split_dir = root / "images", root / "voc_format"
            gt_dir = root / "voc_format" / "class_labels"
            gt_dir = gt_dir if gt_dir.is_dir() else None
            default_classes = coco()
        else:
            raise DataError(root, f"unknown layout {layout!r} (use auto, voc or coco)")
        if classes_file is None and (root / "classes.txt").is_file():
            classes_file = root / "classes.txt"
        classes = default_classes if classes_file is None else read_classes_file(classes_file)
        return cls(root, layout, classes, image_dir, gt_dir, split_dir)

    # ----------------------------------------------------------------------------------- splits
    def split_path(self, split: str) -> Path:
        """The split file for ``split`` (the alias trainaug <-> train_aug is tried when missing).

        Raises:
            DataError: no such split file.
        """
        if not split or any(c in split for c in "/\\") or ".." in split:
            raise DataError(self.split_dir, f"bad split name {split!r}")
        path = self.split_dir / f"{split}.txt"
        if path.is_file():
            return path
        alias = _SPLIT_ALIASES.get(split)
        if alias and (self.split_dir / f"{alias}.txt").is_file():
            return self.split_dir / f"{alias}.txt"
        found = sorted(p.stem for p in self.split_dir.glob("*.txt")) if self.split_dir.is_dir() else []
        have = f" (available: {', '.join(found)})" if found else ""
        raise DataError(path, f"split file not found{have}")

    def ids(self, split: str) -> list[str]:
        """The image ids of ``split``, in file order.

        Raises:
            DataError: missing or empty split file, a duplicate or unsafe id (names file and line).
        """
        if split not in self._ids:
            path = self.split_path(split)
            ids, problems = parse_split_file(path)
            if problems:
                raise DataError(path, problems[0])
            self._ids[split] = ids
        return list(self._ids[split])

    # ------------------------------------------------------------------------------------ paths
    def image_path(self, image_id: str) -> Path:
        """Path of the image of ``image_id`` (``.jpg`` unless only another extension exists)."""
        _check_id(image_id)
        paths = [self.image_dir / f"{image_id}{ext}" for ext in IMAGE_EXTENSIONS]
        return next((p for p in paths if p.exists()), paths[0])  # else the conventional name, for "not found"

    def gt_path(self, image_id: str) -> Path:
        """Path of the ground-truth mask of ``image_id``.

        Raises:
            DataError: the dataset has no ground-truth folder.
        """
        _check_id(image_id)
        if self.gt_dir is None:
            where = "SegmentationClass/" if self.kind == "voc" else "voc_format/class_labels/"
            raise DataError(self.root, f"no ground-truth folder ({where}) in this dataset")
        return self.gt_dir / f"{image_id}.png"

    # ------------------------------------------------------------------------------------ reads
    def read_image(self, image_id: str) -> np.ndarray:
        """The image of ``image_id`` as ``(H, W, 3)`` uint8 RGB (fully decoded, so truncation is caught)."""
        return io.read_image(self.image_path(image_id))

    def image_size(self, image_id: str) -> tuple[int, int]:
        """``(H, W)`` of the image, read from its header only."""
        return header(self.image_path(image_id))[1]

    def read_gt(self, image_id: str, *, check_size: bool = False) -> np.ndarray:
        """Ground truth of ``image_id`` as ``(H, W)`` uint8 contiguous indices (255 = ignore).

        Args:
            image_id: the id.
            check_size: also compare the mask size with the image's (reads the image header).

        Raises:
            DataError: missing/unreadable mask, values outside the class list, size mismatch.
        """
        path = self.gt_path(image_id)
        mask = self.classes_to_train(io.read_mask(path), path)
        if check_size:
            size = self.image_size(image_id)
            if mask.shape != size:
                raise DataError(path, f"mask size {wxh(mask.shape)} != image size {wxh(size)}")
        return mask

    def classes_to_train(self, mask_raw: np.ndarray, path: str | Path) -> np.ndarray:
        """:meth:`ClassList.to_train` with the error turned into a :class:`DataError` naming ``path``."""
        try:
            return self.classes.to_train(mask_raw)
        except ValueError as exc:
            raise DataError(path, str(exc)) from None

    # ----------------------------------------------------------------------------------- labels
    @property
    def labels_json_path(self) -> Path:
        """Where ``urn data labels`` writes (and where labels are looked for first)."""
        return self.root / "cls_labels.json"

    def labels_file(self) -> Path | None:
        """The image-level labels file in use: ``cls_labels.json``, else a ``cls_labels.npy``, else None."""
        candidates = [self.labels_json_path, self.root / "cls_labels.npy"]
        if self.kind == "coco":
            candidates += [self.split_dir / "cls_labels.json", self.split_dir / "cls_labels.npy"]
        return next((p for p in candidates if p.is_file()), None)

    def image_labels(self) -> dict[str, tuple[int, ...]]:
        """Foreground classes of every image in the labels file, as sorted contiguous indices 1..C-1.

        Raises:
            DataError: no labels file (the message says how to make one), or a malformed one.
        """
        if self._labels is None:
            from urn.data.labels import load_labels_file

            path = self.labels_file()
            if path is None:
                raise DataError(
                    self.labels_json_path,
                    "no image-level labels (cls_labels.json or cls_labels.npy); make them from the "
                    f"ground-truth masks with `urn data labels {self.root} --split <split>`",
                )
            self._labels = load_labels_file(path, self.classes)
        return dict(self._labels)

    def forget_labels(self) -> None:
        """Drop the cached image labels (after the labels file was rewritten)."""
        self._labels = None


# ------------------------------------------------------------------ pseudo-mask and weight files
def resolve_dir(folder: str | Path, layout: DatasetLayout, what: str) -> Path:
    """Find ``folder``: as given if absolute or present from the working directory, else under the root.

    Raises:
        DataError: not found in either place, or not a folder.
    """
    path = Path(folder)
    candidates = [path] if path.is_absolute() else [path, layout.root / path]
    for c in candidates:
        if c.is_dir():
            return c
        if c.exists():
            raise DataError(c, f"{what} must be a folder")
    where = "" if path.is_absolute() else f" (also looked in {layout.root / path})"
    raise DataError(path, f"{what} folder not found{where}")


def _read_rgb_png(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(path, f"unreadable mask ({type(exc).__name__})") from None


def read_target(path: str | Path, layout: DatasetLayout) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a pseudo-mask PNG (single-channel or reference 3-channel).

    Returns:
        ``(target, weight_byte)``: ``(H, W)`` uint8 contiguous indices (255 = ignore) and, for a
        3-channel file, its ``(H, W)`` uint8 weight byte (else None).

    Raises:
        DataError: unreadable file, unsupported mode, label values outside the class list.
    """
    path = Path(path)
    mode = header(path)[0]
    if mode == "RGB":
        label, weight = split_rgb_target(_read_rgb_png(path), path)  # URN [w, w, label] or grey; colour refused
        return layout.classes_to_train(label, path), weight
    if mode in ("RGBA", "LA", "CMYK", "YCbCr", "HSV", "1"):
        raise DataError(path, f"mask must be a palette/grey PNG or a 3-channel URN PNG, got mode {mode}")
    return layout.classes_to_train(io.read_mask(path), path), None


def read_weight(folder: Path, image_id: str) -> tuple[np.ndarray, Path]:
    """Per-pixel loss weight of ``image_id`` from an uncertainty folder.

    Returns:
        ``((H, W) float32 weight in [0, 1], the file read)``.

    Raises:
        DataError: no file, unreadable, not 2-d, NaN/inf, values outside [0, 1].
    """
    npy, png = folder / f"{image_id}.npy", folder / f"{image_id}.png"
    if npy.exists():
        u = io.load_npy(npy)
        if u.ndim != 2 or not np.issubdtype(u.dtype, np.floating):
            raise DataError(npy, f"uncertainty must be a 2-d float array, got {u.dtype} {u.shape}")
        u = u.astype(np.float32)
        if not np.isfinite(u).all():
            raise DataError(npy, "uncertainty holds NaN or infinity")
        if u.size and (u.min() < -1e-3 or u.max() > 1 + 1e-3):
            raise DataError(npy, f"uncertainty {u.min():.3g}..{u.max():.3g} outside [0, 1]")
        return 1.0 - np.clip(u, 0.0, 1.0), npy
    if png.exists():
        mode = header(png)[0]
        if mode == "RGB":
            byte = _read_rgb_png(png)[:, :, 0]  # R = w in the reference's cv2-written [label, w, w]
        elif mode == "L":
            byte = io.read_mask(png)
        else:
            raise DataError(png, f"weight PNG must be 3-channel (URN) or 8-bit grey, got mode {mode}")
        return byte.astype(np.float32) / 255.0, png
    raise DataError(npy, "no uncertainty file for this image (looked for .npy and .png)")


# ---------------------------------------------------------------------------------- split files
def parse_split_file(path: Path) -> tuple[list[str], list[str]]:
    """Read a split file, collecting every problem instead of stopping at the first.

    Returns:
        ``(ids, problems)``: the valid ids in order, and one message per bad line (``"line N: ..."``);
        an empty file gives the problem ``"no ids"``.
    """
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        return [], ["split file not found"]
    except (OSError, UnicodeDecodeError) as exc:
        return [], [f"cannot read split file ({exc.__class__.__name__})"]
    ids: list[str] = []
    first_line: dict[str, int] = {}
    problems: list[str] = []
    for n, line in enumerate(text.splitlines(), 1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) == 2 and tokens[0].lower().endswith(IMAGE_EXTENSIONS):
            # PMM's "JPEGImages/<id>.jpg SegmentationClassAug/<id>.png" pair line
            image_id = tokens[0].replace("\\", "/").rsplit("/", 1)[-1].rsplit(".", 1)[0]
        elif len(tokens) == 1:
            image_id = tokens[0]
        else:
            problems.append(f"line {n}: expected one id per line, got {line.strip()!r}")
            continue
        bad = _id_problem(image_id)
        if bad:
            problems.append(f"line {n}: {bad}")
        elif image_id in first_line:
            problems.append(f"line {n}: duplicate id {image_id!r} (first on line {first_line[image_id]})")
        else:
            first_line[image_id] = n
            ids.append(image_id)
    if not ids and not problems:
        problems.append("no ids (the split is empty)")
    return ids, problems


def _id_problem(image_id: str) -> str | None:
    if "/" in image_id or "\\" in image_id:
        return f"id {image_id!r} contains a path separator"
    if ".." in image_id:
        return f"id {image_id!r} contains '..'"
    if Path(image_id).is_absolute() or (len(image_id) > 1 and image_id[1] == ":"):
        return f"id {image_id!r} is an absolute path"
    if "\x00" in image_id:
        return "id contains a NUL character"
    return None


def header(path: Path) -> tuple[str, tuple[int, int]]:
    """PIL mode and ``(H, W)`` of an image file, from its header only (pixels are not decoded).

    Raises:
        DataError: missing, not a file, or not an image.
    """
    if not path.is_file():
        raise DataError(path, "is not a file" if path.exists() else "file not found")
    try:
        with Image.open(path) as im:
            return im.mode, (im.size[1], im.size[0])
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(path, f"unreadable image ({type(exc).__name__}: {exc})"[:200]) from None


def _check_id(image_id: str) -> None:
    bad = _id_problem(image_id)
    if bad:
        raise DataError(image_id, bad)


def wxh(shape: tuple[int, ...]) -> str:
    """``(H, W, ...)`` as ``WxH``, the way messages name image sizes."""
    return f"{shape[1]}x{shape[0]}"
