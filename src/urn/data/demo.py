"""A small procedural dataset in VOC layout, so the whole pipeline can run in minutes on a laptop CPU.

Five shape classes, each with its own texture family and a colour palette that overlaps with the other
classes' palettes and with the background::

    1 disc      polka dots      red / yellow / blue / white
    2 box       checker board   blue / green / orange / dark
    3 triangle  stripes         yellow / purple / teal / red
    4 ring      smooth mottling green / pink / brown / blue
    5 cross     grid lines      orange / teal / white / purple

Each image has 1-3 objects (random class, scale, rotation, possibly overlapping or cut by the border)
over a textured gradient background with distractor blobs, some of which borrow a class texture. So
neither colour nor texture alone identifies a class; shape does, which leaves CAMs imperfect. Ground
truth has a 1-pixel ignore (255) band on the inside of object borders, like VOC's boundary band.

Written (atomically): ``JPEGImages/<id>.jpg`` (quality 90), ``SegmentationClass/<id>.png`` (VOC
palette), ``ImageSets/Segmentation/{train,val}.txt``, ``classes.txt`` and ``cls_labels.json``.
Everything depends only on ``seed`` (image ``i`` of a split uses its own generator). A folder that
holds anything but this generator's own output with the same arguments is refused
(:mod:`urn.data.generated`: the ``.urn-dataset.json`` marker).
"""

from __future__ import annotations

import io as _io
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from urn.data.classes import ClassList, write_classes_text
from urn.data.generated import claim_folder, mark_complete
from urn.data.label_writing import write_labels
from urn.data.layout import DatasetLayout
from urn.io import IGNORE_INDEX, atomic_write_bytes, atomic_write_text, save_palette_png

DEMO_CLASSES = ClassList.from_names(("background", "disc", "box", "triangle", "ring", "cross"))

_COLOURS = {
    "red": (200, 50, 40),
    "orange": (230, 140, 30),
    "yellow": (220, 200, 50),
    "green": (60, 160, 70),
    "teal": (40, 150, 150),
    "blue": (50, 80, 200),
    "purple": (130, 60, 170),
    "pink": (220, 100, 160),
    "brown": (130, 80, 40),
    "grey": (128, 128, 128),
    "white": (230, 230, 220),
    "dark": (40, 40, 50),
}
_PALETTES = {
    1: ("red", "yellow", "blue", "white"),
    2: ("blue", "green", "orange", "dark"),
    3: ("yellow", "purple", "teal", "red"),
    4: ("green", "pink", "brown", "blue"),
    5: ("orange", "teal", "white", "purple"),
}
_POOL = np.array(list(_COLOURS.values()), dtype=np.float32)


# --------------------------------------------------------------------------------------- textures
def _texture(kind: int, shape: tuple[int, int], rng: np.random.Generator, angle: float) -> np.ndarray:
    """A two-level pattern in [0, 1], ``(H, W)`` float32, in coordinates rotated by ``angle``."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    c, s = np.cos(angle), np.sin(angle)
    u = (xx * c + yy * s + rng.uniform(0, 50)).astype(np.float32)
    v = (-xx * s + yy * c + rng.uniform(0, 50)).astype(np.float32)
    p = float(rng.uniform(5.0, 9.0))  # pattern period in pixels
    if kind == 1:  # dots
        du, dv = (u % p) - p / 2, (v % p) - p / 2
        return (du * du + dv * dv < (0.3 * p) ** 2).astype(np.float32)
    if kind == 2:  # checker
        return ((np.floor(u / p) + np.floor(v / p)) % 2).astype(np.float32)
    if kind == 3:  # stripes
        return (np.floor(u / (p * 0.6)) % 2).astype(np.float32)
    if kind == 4:  # mottling: smooth noise
        return _smooth_noise(shape, rng, cells=int(rng.integers(4, 8)))
    if kind == 5:  # grid lines
        return (((u % p) < 1.6) | ((v % p) < 1.6)).astype(np.float32)
    return _smooth_noise(shape, rng, cells=3) * 0.4  # distractor default: faint noise


def _smooth_noise(shape: tuple[int, int], rng: np.random.Generator, cells: int) -> np.ndarray:
    h, w = shape
    small = rng.random((cells, max(2, cells * w // max(h, 1)))).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1)


def _paint(canvas: np.ndarray, region: np.ndarray, pattern: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    mix = pattern[..., None]
    colour = a * (1 - mix) + b * mix
    canvas[region] = colour[region]


def _class_colours(kind: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    names = rng.choice(len(_PALETTES[kind]), size=2, replace=False)
    a, b = (np.array(_COLOURS[_PALETTES[kind][i]], dtype=np.float32) for i in names)
    return a + rng.normal(0, 12, 3), b + rng.normal(0, 12, 3)


# ----------------------------------------------------------------------------------------- shapes
def _shape_mask(kind: int, shape: tuple[int, int], centre: np.ndarray, r: float, angle: float) -> np.ndarray:
    """Filled ``(H, W)`` bool mask of one object of class ``kind``."""
    h, w = shape
    m = np.zeros((h, w), dtype=np.uint8)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])

    def poly(points: np.ndarray, value: int = 1) -> None:
        pts = (points @ rot.T + centre) * 16  # 4 fractional bits: smoother edges
        cv2.fillPoly(m, [np.round(pts).astype(np.int32)], value, lineType=cv2.LINE_8, shift=4)

    if kind in (1, 4):  # disc / ring
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        circle = np.stack([np.cos(t), np.sin(t)], 1)
        poly(circle * [r, r * 0.92])
        if kind == 4:
            poly(circle * r * 0.58, 0)  # the hole
    elif kind == 2:  # box
        poly(np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * [r * 0.8, r * 0.7])
    elif kind == 3:  # triangle
        t = np.array([0, 2, 4]) * np.pi / 3 - np.pi / 2
        poly(np.stack([np.cos(t), np.sin(t)], 1) * r)
    elif kind == 5:  # cross
        arm = 0.3
        poly(np.array([[-1, -arm], [1, -arm], [1, arm], [-1, arm]]) * r)
        poly(np.array([[-arm, -1], [arm, -1], [arm, 1], [-arm, 1]]) * r)
    return m.astype(bool)


def _blob_mask(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """An irregular distractor blob (a wobbly ellipse)."""
    h, w = shape
    centre = np.array([rng.uniform(0, w), rng.uniform(0, h)])
    r = rng.uniform(0.08, 0.22) * min(h, w)
    t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    radius = r * (1 + 0.25 * np.sin(3 * t + rng.uniform(0, 6)) + rng.normal(0, 0.08, t.size))
    pts = np.stack([np.cos(t) * radius * rng.uniform(0.6, 1.4), np.sin(t) * radius], 1) + centre
    m = np.zeros((h, w), dtype=np.uint8)
    cv2.fillPoly(m, [np.round(pts * 16).astype(np.int32)], 1, shift=4)
    return m.astype(bool)


# ------------------------------------------------------------------------------------------ image
def render_sample(rng: np.random.Generator, size: tuple[int, int] = (160, 120)) -> tuple[np.ndarray, np.ndarray]:
    """One demo image and its ground truth.

    Args:
        rng: the generator (the sample depends on nothing else).
        size: ``(W, H)``.

    Returns:
        ``((H, W, 3) uint8 RGB image, (H, W) uint8 mask with 0..5 and 255 on object borders)``.
    """
    w, h = size
    shape = (h, w)
    # 1. background: gradient between two pool colours, mottled, with distractor blobs and lines
    a, b = _POOL[rng.choice(len(_POOL), 2, replace=False)]
    ramp = np.linspace(0, 1, w, dtype=np.float32)[None, :, None] * np.ones((h, 1, 1), np.float32)
    img = a * (1 - ramp) + b * ramp
    img += (_smooth_noise(shape, rng, cells=4)[..., None] - 0.5) * 60
    for _ in range(int(rng.integers(2, 6))):
        region = _blob_mask(shape, rng)
        kind = int(rng.integers(1, 6)) if rng.random() < 0.3 else 0  # some borrow a class texture
        c1, c2 = _POOL[rng.choice(len(_POOL), 2, replace=False)]
        _paint(img, region, _texture(kind, shape, rng, rng.uniform(0, np.pi)), c1, c2)
    for _ in range(int(rng.integers(0, 4))):
        p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        p2 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.line(img, p1, p2, tuple(float(x) for x in _POOL[rng.integers(len(_POOL))]), int(rng.integers(1, 3)))
    # 2. objects, re-drawn until each keeps a visible interior despite overlaps and borders
    for _ in range(30):
        label = np.zeros(shape, dtype=np.uint8)
        objects = []
        for _ in range(int(rng.integers(1, 4))):
            kind = int(rng.integers(1, 6))
            r = rng.uniform(0.15, 0.32) * min(h, w)
            centre = np.array([rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h])
            angle = rng.uniform(0, 2 * np.pi)
            mask = _shape_mask(kind, shape, centre, r, angle)
            objects.append((kind, mask, angle))
        owner = np.full(shape, -1, dtype=np.int32)
        for i, (kind, mask, _) in enumerate(objects):
            owner[mask] = i
            label[mask] = kind
        kernel = np.ones((3, 3), np.uint8)
        interiors = [int(cv2.erode((owner == i).astype(np.uint8), kernel).sum()) for i in range(len(objects))]
        if all(n >= max(40, 0.3 * m.sum()) for n, (_, m, _) in zip(interiors, objects, strict=True)):
            break
    for kind, mask, angle in objects:
        c1, c2 = _class_colours(kind, rng)
        _paint(img, mask, _texture(kind, shape, rng, angle + rng.normal(0, 0.2)), c1, c2)
    # 3. camera: slight blur and sensor noise
    img = cv2.GaussianBlur(img, (3, 3), 0.6) + rng.normal(0, 4, img.shape).astype(np.float32)
    # 4. ground truth: 1-pixel ignore band on the inner side of every object border
    return np.clip(img, 0, 255).astype(np.uint8), ignore_borders(label)


def ignore_borders(label: np.ndarray) -> np.ndarray:
    """Ground truth from a label map: 255 on every object pixel with a 4-neighbour of another label.

    The band lies on the inner side of object borders (background pixels are never ignored); the
    image border does not count as a border.
    """
    h, w = label.shape
    padded = np.pad(label, 1, mode="edge")
    differs = np.zeros((h, w), dtype=bool)
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        differs |= padded[dy : dy + h, dx : dx + w] != label
    gt = label.copy()
    gt[differs & (label > 0)] = IGNORE_INDEX
    return gt


#: The demo's split sizes. 100 val images: on 20, one image flipping moved a class's IoU by 10+ points and
#: the same two checkpoints' Seg-2 - Seg-1 by -6..+8 (docs/pipeline.md); image i of a split does not depend
#: on the split's size, so the 200 train images are the same whatever n_val is.
DEMO_TRAIN = 200
DEMO_VAL = 100


def make_demo(
    out: str | Path,
    *,
    n_train: int = DEMO_TRAIN,
    n_val: int = DEMO_VAL,
    seed: int = 0,
    size: tuple[int, int] = (160, 120),
) -> DatasetLayout:
    """Write the demo dataset to ``out`` (VOC layout) and return its layout.

    Args:
        out: dataset root (created). A folder holding anything else than this function's own output
            with the same arguments is refused; with the same arguments, nothing is written when the
            dataset is complete (else it is written again, identically).
        n_train: images in the ``train`` split. 200 by default: with 60, the demo's 300 Seg-1 iterations of
            batch 8 are 40 epochs and Seg-1 memorises its pseudo-masks' noise instead of averaging it out
            (docs/demo.md).
        n_val: images in the ``val`` split (100 by default: see :data:`DEMO_VAL`).
        seed: the only source of randomness.
        size: image ``(W, H)``.
    """
    if min(size) < 32:
        raise ValueError("demo images must be at least 32 pixels on each side")
    args = {"n_train": n_train, "n_val": n_val, "seed": seed, "size": list(size)}
    return write_procedural(out, "demo", DEMO_CLASSES, lambda rng: render_sample(rng, size), args)


_FILES = (("JPEGImages", "jpg"), ("SegmentationClass", "png"))
#: ``render(rng) -> ((H, W, 3) uint8 RGB image, (H, W) uint8 ground truth)``: one sample of a generator.
Render = Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]]


def write_procedural(out: str | Path, generator: str, classes: ClassList, render: Render, args: dict) -> DatasetLayout:
    """Write a procedural dataset in VOC layout (atomically) and return its layout.

    Image ``i`` of split ``s`` (0 = train, 1 = val) is ``render(np.random.default_rng((seed, s, i)))``,
    which returns ``((H, W, 3) uint8 RGB image, (H, W) uint8 ground truth with 255 = ignore)``; it is
    written as ``JPEGImages/<split>_<i:04d>.jpg`` (quality 90) and ``SegmentationClass/<id>.png``
    (VOC palette). The split files, ``classes.txt`` and ``cls_labels.json`` (the classes present in
    each mask; a previous file is replaced, not merged) complete the dataset.

    ``out`` is claimed first (:func:`urn.data.generated.claim_folder`): ``generator`` and ``args``
    (every argument the bytes depend on) go into its ``.urn-dataset.json`` marker. A folder holding
    anything else is refused; the complete dataset of the same generator and arguments is left as it is.

    Raises:
        DataError: ``out`` is not empty and not this generator's output with these arguments.
    """
    n_train, n_val, seed = args["n_train"], args["n_val"], args["seed"]
    if n_train < 1 or n_val < 1:
        raise ValueError("n_train and n_val must be at least 1")
    root = Path(out)
    split_dir = root / "ImageSets" / "Segmentation"
    splits = {"train": [f"train_{i:04d}" for i in range(n_train)], "val": [f"val_{i:04d}" for i in range(n_val)]}
    files = [f"{sub}/{i}.{ext}" for ids in splits.values() for i in ids for sub, ext in _FILES]
    files += [f"ImageSets/Segmentation/{split}.txt" for split in splits] + ["classes.txt", "cls_labels.json"]
    if claim_folder(root, generator, args, files):
        return DatasetLayout.open(root, "voc")  # already there, complete
    labels: dict[str, tuple[int, ...]] = {}
    for split_no, (split, ids) in enumerate(splits.items()):
        for i, image_id in enumerate(ids):
            image, gt = render(np.random.default_rng((seed, split_no, i)))
            buf = _io.BytesIO()
            Image.fromarray(image).save(buf, format="JPEG", quality=90)
            atomic_write_bytes(root / "JPEGImages" / f"{image_id}.jpg", buf.getvalue())
            save_palette_png(root / "SegmentationClass" / f"{image_id}.png", gt)
            labels[image_id] = tuple(int(v) for v in np.unique(gt) if 0 < v < IGNORE_INDEX)
        atomic_write_text(split_dir / f"{split}.txt", "".join(f"{i}\n" for i in ids))
    atomic_write_text(root / "classes.txt", write_classes_text(classes))
    layout = DatasetLayout.open(root, "voc")
    if layout.labels_json_path.exists():
        layout.labels_json_path.unlink()  # a fresh dataset replaces, not merges, its labels
    write_labels(layout, labels)
    mark_complete(root, generator, args)
    return layout
