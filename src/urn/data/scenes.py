"""A second procedural dataset, unlike the demo, to check that label-free rules carry to untuned data.

Four object classes, each a family of outlines with its own surface pattern, in colours that overlap
with each other and with the backgrounds::

    1 leaf    ovate / lanceolate blade, stem, midrib and side veins   greens, yellow, orange, red, brown
    2 star    4-7 points, sharp or rounded, bevelled facets          yellow, gold, orange, red, white, blue, pink
    3 bottle  body, shoulder, neck, cap; glassy highlights, label     greens, amber, blue, clear, red, white
    4 fish    body, forked or round tail, dorsal fin, eye, scales     orange, silver, blue, yellow, olive, red

Each image is 200-500 pixels on the long side with a random aspect ratio (4:3, 3:4, 1:1, 16:9, ...).
Backgrounds are natural-looking without any download: landscapes (sky with clouds, hills, a ground in
perspective), wood planks, sand / soil / stone / moss / gravel, water with caustics, out-of-focus indoor
clutter, and, when the installed matplotlib ships them, crops of its sample photograph and its
elevation model shaded as aerial terrain. Some backgrounds carry distractor blobs that borrow a class's
pattern and palette without its outline, so that neither colour nor texture alone names a class.

1-3 objects per image, each 0.1-0.45 of the short side in half-length (so 0.2-0.9 in length),
lit by the image's light (shading from a height field and a cast shadow), soft-edged, sometimes
partly hidden by another object, by a foreground twig, grass or post (background), or by the image
border. Ground truth has the demo's 1-pixel ignore (255) band on the inside of object borders.

Written like the demo (:func:`urn.data.demo.write_procedural`): ``JPEGImages/``, ``SegmentationClass/``,
``ImageSets/Segmentation/{train,val}.txt``, ``classes.txt`` and ``cls_labels.json``. Everything depends
only on ``seed`` (and, for the photo and terrain backgrounds, on matplotlib's sample files; pass
``photos=False`` for data that depends on nothing else).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from urn.data.classes import ClassList
from urn.data.demo import ignore_borders, write_procedural
from urn.data.layout import DatasetLayout

SCENES_CLASSES = ClassList.from_names(("background", "leaf", "star", "bottle", "fish"))
LEAF, STAR, BOTTLE, FISH = 1, 2, 3, 4

_C = {
    "leaf": (70, 130, 45),
    "dark_green": (35, 85, 35),
    "yellow_green": (150, 170, 50),
    "yellow": (220, 190, 50),
    "gold": (215, 165, 45),
    "orange": (215, 120, 35),
    "red": (180, 45, 35),
    "brown": (120, 75, 40),
    "amber": (150, 80, 25),
    "white": (232, 232, 222),
    "clear": (195, 212, 208),
    "silver": (165, 170, 175),
    "sky_blue": (110, 160, 220),
    "blue": (45, 75, 170),
    "teal": (40, 135, 135),
    "pink": (225, 120, 150),
    "purple": (120, 60, 150),
    "olive": (110, 115, 55),
    "bottle_green": (40, 110, 60),
    "dark": (40, 40, 45),
}
_PALETTES = {
    LEAF: ("leaf", "dark_green", "yellow_green", "yellow", "orange", "red", "brown"),
    STAR: ("yellow", "gold", "orange", "red", "white", "sky_blue", "pink", "purple"),
    BOTTLE: ("bottle_green", "amber", "blue", "clear", "red", "white", "brown", "teal"),
    FISH: ("orange", "silver", "blue", "yellow", "olive", "red", "teal", "pink"),
}
_ASPECTS = (4 / 3, 3 / 4, 1.0, 16 / 9, 9 / 16, 3 / 2, 2 / 3, 5 / 4)
_SAMPLE_DATA = ("matplotlib", "mpl-data", "sample_data")


def _colour(name: str) -> np.ndarray:
    return np.array(_C[name], dtype=np.float32)


def _jitter(c: np.ndarray, rng: np.random.Generator, spread: float = 14.0) -> np.ndarray:
    return np.clip(c * rng.uniform(0.8, 1.15) + rng.normal(0, spread, 3), 5, 250).astype(np.float32)


def _class_colour(kind: int, rng: np.random.Generator) -> np.ndarray:
    return _jitter(_colour(_PALETTES[kind][int(rng.integers(len(_PALETTES[kind])))]), rng)


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per-pixel blend of colours (or images) ``a`` and ``b`` by ``t`` (``(H, W)``)."""
    t = t[..., None]
    return a * (1 - t) + b * t


def _ramp(t: np.ndarray, stops: list[tuple[int, int, int]] | np.ndarray) -> np.ndarray:
    """Map ``t`` in [0, 1] through a colour ramp (evenly spaced stops) -> ``(H, W, 3)`` float32."""
    stops = np.asarray(stops, dtype=np.float32)
    x = np.linspace(0, 1, len(stops))
    lut = np.stack([np.interp(np.linspace(0, 1, 256), x, stops[:, c]) for c in range(3)], 1).astype(np.float32)
    return lut[(np.clip(t, 0, 1) * 255).astype(np.uint8)]


def _smoothstep(a: float, b: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - a) / (b - a), 0, 1)
    return t * t * (3 - 2 * t)


# ------------------------------------------------------------------------------------------ noise
def _fractal(
    shape: tuple[int, int],
    rng: np.random.Generator,
    *,
    cells: float = 3,
    octaves: int = 5,
    persistence: float = 0.5,
    stretch: tuple[float, float] = (1.0, 1.0),
) -> np.ndarray:
    """Multi-octave value noise in [0, 1], ``(H, W)`` float32; ``stretch`` = (rows, cols) cell factors."""
    h, w = shape
    total = np.zeros(shape, np.float32)
    amp, norm = 1.0, 0.0
    for o in range(octaves):
        ch = max(2, round(cells * 2**o * stretch[0]))
        cw = max(2, round(cells * 2**o * stretch[1] * w / h))
        if ch > h / 2 or cw > w / 2:
            break
        # one spare cell each way, cut at a random offset: the lattice does not pin to the image border
        small = rng.random((ch + 2, cw + 2)).astype(np.float32)
        big = cv2.resize(small, (w * (cw + 2) // cw, h * (ch + 2) // ch), interpolation=cv2.INTER_CUBIC)
        oy, ox = int(rng.integers(0, big.shape[0] - h + 1)), int(rng.integers(0, big.shape[1] - w + 1))
        total += big[oy : oy + h, ox : ox + w] * amp
        norm += amp
        amp *= persistence
    total /= max(norm, 1e-6)
    lo, hi = float(total.min()), float(total.max())
    return (total - lo) / max(hi - lo, 1e-6)


def _fractal_1d(n: int, rng: np.random.Generator, cells: int = 3, octaves: int = 5) -> np.ndarray:
    """Multi-octave 1-D noise in [0, 1] of length ``n`` (piecewise linear: ridge lines)."""
    x = np.linspace(0, 1, n)
    total = np.zeros(n)
    amp = 1.0
    for o in range(octaves):
        k = cells * 2**o
        if k > n / 2:
            break
        total += np.interp(x * k + rng.random(), np.arange(k + 2), rng.random(k + 2)) * amp
        amp *= 0.5
    lo, hi = float(total.min()), float(total.max())
    return ((total - lo) / max(hi - lo, 1e-6)).astype(np.float32)


# ------------------------------------------------------------------------------------ backgrounds
_SKIES = (
    ((55, 105, 185), (165, 200, 235)),  # clear
    ((75, 80, 145), (240, 170, 110)),  # sunset
    ((140, 148, 160), (205, 208, 210)),  # overcast
    ((90, 140, 200), (215, 225, 230)),  # hazy
)
_GROUNDS = (
    ((30, 65, 25), (75, 120, 45), (140, 155, 75)),  # grass
    ((120, 95, 40), (190, 160, 75), (230, 205, 130)),  # wheat field
    ((150, 120, 85), (205, 180, 135), (235, 215, 175)),  # sand
    ((70, 50, 35), (115, 85, 55), (150, 120, 90)),  # soil
    ((170, 180, 195), (215, 222, 232), (245, 247, 250)),  # snow
)
_SURFACES = (
    ((140, 115, 80), (200, 175, 130), (235, 215, 170), (180, 150, 110)),  # sand
    ((55, 40, 28), (100, 75, 50), (140, 110, 80), (85, 65, 45)),  # soil
    ((70, 72, 75), (125, 125, 120), (175, 172, 165), (105, 108, 110)),  # stone
    ((40, 60, 30), (85, 110, 50), (130, 140, 90), (95, 100, 80)),  # moss on rock
    ((90, 70, 60), (160, 130, 110), (200, 185, 170), (130, 120, 115)),  # granite
)
_WOODS = (
    ((150, 100, 60), (205, 160, 110)),
    ((50, 30, 15), (100, 62, 32)),
    ((110, 50, 25), (165, 85, 50)),
    ((160, 135, 100), (215, 195, 160)),
)
_WALLS = ((225, 215, 195), (200, 205, 210), (190, 120, 90), (150, 165, 140), (235, 230, 225), (90, 95, 110))


def _landscape(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    h, w = shape
    top, horizon_colour = (np.array(c, np.float32) for c in _SKIES[int(rng.integers(len(_SKIES)))])
    yy = np.linspace(0, 1, h, dtype=np.float32)[:, None] * np.ones((1, w), np.float32)
    horizon = rng.uniform(0.25, 0.65) * h
    tilt = rng.normal(0, 0.04) * (np.arange(w, dtype=np.float32) - w / 2)
    sky_t = np.clip(yy * h / max(horizon, 1), 0, 1) ** 0.8
    img = _lerp(top, horizon_colour, sky_t)
    clouds = _smoothstep(rng.uniform(0.45, 0.6), 0.85, _fractal(shape, rng, cells=2, octaves=5, stretch=(1.6, 0.6)))
    img = _lerp(img, np.array((245, 245, 245), np.float32) * rng.uniform(0.8, 1.0), clouds * rng.uniform(0.5, 0.95))
    ground = np.array(_GROUNDS[int(rng.integers(len(_GROUNDS)))], np.float32)
    # distant hills: a hazy ridge line above the horizon
    ridge = horizon + tilt - (0.02 + 0.18 * _fractal_1d(w, rng, cells=3)) * h * rng.uniform(0.3, 1.0)
    haze = _lerp(ground[0][None, None], horizon_colour[None, None], np.full((1, 1), rng.uniform(0.4, 0.7)))[0, 0]
    hills = (np.arange(h, dtype=np.float32)[:, None] >= ridge[None, :]).astype(np.float32)
    hills = cv2.GaussianBlur(hills, (0, 0), 0.8)
    hill_tex = _fractal(shape, rng, cells=4, octaves=4)
    img = _lerp(img, haze * (0.85 + 0.3 * hill_tex[..., None]), hills)
    # near ground in perspective: rows squeezed towards the horizon line
    edge = horizon + tilt + rng.uniform(0.0, 0.06) * h * _fractal_1d(w, rng, cells=6)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    depth = np.clip((ys - edge[None, :]) / np.maximum(h - edge[None, :], 1), 0, 1)
    map_y = (depth**1.8 * (h - 1)).astype(np.float32)
    map_x = (w / 2 + (xs - w / 2) * (0.35 + 0.65 * depth)).astype(np.float32)
    tex = _fractal(shape, rng, cells=3, octaves=6, persistence=0.6, stretch=(0.5, 1.0))
    tex = cv2.remap(tex, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    ground_img = _ramp(tex, ground) * (0.8 + 0.3 * depth[..., None])
    land = cv2.GaussianBlur((ys >= edge[None, :]).astype(np.float32), (0, 0), 0.7)
    return _lerp(img, ground_img, land)


def _wood(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    vertical = rng.random() < 0.5
    h, w = shape if vertical else shape[::-1]  # planks run along columns of (h, w)
    dark, light = (np.array(c, np.float32) for c in _WOODS[int(rng.integers(len(_WOODS)))])
    plank = rng.uniform(0.12, 0.35) * w
    xs = np.arange(w, dtype=np.float32)
    plank_no = np.floor((xs + rng.uniform(0, plank)) / plank)
    warp = _fractal((h, w), rng, cells=2, octaves=4, stretch=(0.3, 2.0))
    fibre = _fractal((h, w), rng, cells=4, octaves=5, stretch=(0.15, 3.0))
    period = rng.uniform(6, 18)
    offset = (plank_no * 37.1) % 50
    u = xs[None, :] + offset[None, :] + 25 * warp
    rings = (0.5 + 0.5 * np.sin(2 * np.pi * u / period)) ** rng.uniform(1.5, 4)
    t = np.clip(0.55 * rings + 0.45 * fibre, 0, 1)
    img = _lerp(dark, light, t) * (0.88 + 0.12 * ((plank_no * 0.618) % 1))[None, :, None]
    seam = ((xs + rng.uniform(0, plank)) % plank) < 1.5
    img[:, seam] *= 0.45
    if not vertical:
        img = img.transpose(1, 0, 2)
    return np.ascontiguousarray(img)


def _surface(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    h, w = shape
    stops = np.array(_SURFACES[int(rng.integers(len(_SURFACES)))], np.float32)
    stops = stops[rng.permutation(len(stops))] if rng.random() < 0.3 else stops
    f = _fractal(shape, rng, cells=rng.uniform(2, 5), octaves=7, persistence=rng.uniform(0.45, 0.65))
    if rng.random() < 0.4:  # ridged: cracks and veins
        f = 1 - np.abs(2 * f - 1) ** rng.uniform(0.5, 1.0)
    img = _ramp(f, stops)
    fine = _fractal(shape, rng, cells=20, octaves=3)
    img *= (0.88 + 0.24 * fine)[..., None]
    if rng.random() < 0.45:  # gravel / pebbles
        light = np.array(rng.normal(0, 1, 2))
        light /= np.linalg.norm(light) + 1e-6
        for _ in range(int(h * w / rng.uniform(400, 2500))):
            cx, cy = float(rng.uniform(0, w)), float(rng.uniform(0, h))
            a, b = rng.uniform(2, 0.04 * max(h, w) + 3), rng.uniform(2, 0.03 * max(h, w) + 3)
            colour = stops[int(rng.integers(len(stops)))] * rng.uniform(0.7, 1.2)
            ang = float(rng.uniform(0, 180))
            centre = (round(cx), round(cy))
            axes = (round(a), round(b))
            cv2.ellipse(img, centre, axes, ang, 0, 360, tuple(float(c) * 0.55 for c in colour), -1, cv2.LINE_AA)
            inner = (max(1, round(a * 0.8)), max(1, round(b * 0.8)))
            centre2 = (round(cx + light[0] * a * 0.12), round(cy + light[1] * b * 0.12))
            cv2.ellipse(img, centre2, inner, ang, 0, 360, tuple(float(c) for c in colour), -1, cv2.LINE_AA)
        img = cv2.GaussianBlur(img, (0, 0), 0.6)
    return img


def _water(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    deep = np.array((20, 60, 90), np.float32) * rng.uniform(0.7, 1.3)
    shallow = np.array((60, 150, 160), np.float32) * rng.uniform(0.8, 1.2)
    f = _fractal(shape, rng, cells=2, octaves=5, stretch=(1.0, 0.5))
    img = _lerp(deep, shallow, f)
    warp = _fractal(shape, rng, cells=3, octaves=4)
    caustic = np.abs(np.sin(warp * rng.uniform(14, 30))) ** 12
    return img + caustic[..., None] * rng.uniform(40, 90)


def _indoor(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    h, w = shape
    wall = np.array(_WALLS[int(rng.integers(len(_WALLS)))], np.float32) * rng.uniform(0.75, 1.1)
    xs = np.linspace(-1, 1, w, dtype=np.float32)[None, :] * np.ones((h, 1), np.float32)
    img = wall * (0.85 + 0.2 * (1 - xs**2) + 0.05 * _fractal(shape, rng, cells=3, octaves=3))[..., None]
    # out-of-focus clutter drawn at a quarter of the resolution, blurred, upsampled
    sh, sw = max(8, h // 4), max(8, w // 4)
    small = np.zeros((sh, sw, 3), np.float32)
    cover = np.zeros((sh, sw), np.float32)
    for _ in range(int(rng.integers(4, 14))):
        colour = tuple(float(c) for c in rng.uniform(20, 235, 3))
        x0, y0 = int(rng.integers(0, sw)), int(rng.integers(0, sh))
        if rng.random() < 0.5:
            x1, y1 = x0 + int(rng.integers(3, sw // 2 + 4)), y0 + int(rng.integers(3, sh // 2 + 4))
            cv2.rectangle(small, (x0, y0), (x1, y1), colour, -1)
            cv2.rectangle(cover, (x0, y0), (x1, y1), 1.0, -1)
        else:
            r = int(rng.integers(2, max(3, min(sh, sw) // 3)))
            cv2.circle(small, (x0, y0), r, colour, -1)
            cv2.circle(cover, (x0, y0), r, 1.0, -1)
    sigma = rng.uniform(1.0, 3.0)
    small = cv2.GaussianBlur(small, (0, 0), sigma)
    cover = cv2.GaussianBlur(cover, (0, 0), sigma)
    clutter = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    alpha = cv2.resize(cover, (w, h), interpolation=cv2.INTER_LINEAR).clip(0, 1)
    img = img * (1 - alpha[..., None]) + clutter
    # a table or floor below a line, in wood or cloth
    edge = int(rng.uniform(0.45, 0.85) * h)
    floor = _wood((h - edge, w), rng) if rng.random() < 0.5 else _surface((h - edge, w), rng)
    img[edge:] = floor
    img[max(0, edge - 2) : edge + 1] *= 0.6
    return img


@lru_cache(maxsize=1)
def _sample_dir() -> Path | None:
    spec = importlib.util.find_spec(_SAMPLE_DATA[0])
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))).joinpath(*_SAMPLE_DATA[1:])
    return folder if folder.is_dir() else None


@lru_cache(maxsize=1)
def _photo() -> np.ndarray | None:
    """matplotlib's sample photograph (RGB float32), or None when this installation lacks it."""
    folder = _sample_dir()
    try:
        with Image.open(folder / "grace_hopper.jpg") as im:  # type: ignore[operator]
            return np.asarray(im.convert("RGB"), dtype=np.float32)
    except (OSError, TypeError, ValueError):
        return None


@lru_cache(maxsize=1)
def _elevation() -> np.ndarray | None:
    """matplotlib's sample elevation model (float32 metres), or None when this installation lacks it."""
    folder = _sample_dir()
    try:
        with np.load(folder / "jacksboro_fault_dem.npz", allow_pickle=False) as z:  # type: ignore[operator]
            return z["elevation"].astype(np.float32)
    except (OSError, TypeError, ValueError, KeyError):
        return None


def _crop_resized(src: np.ndarray, shape: tuple[int, int], rng: np.random.Generator, turn: bool) -> np.ndarray:
    """A random crop of ``src`` with the aspect ratio of ``shape``, flipped (and ``turn``: turned), resized."""
    h, w = shape
    if turn and rng.random() < 0.5:
        src = np.rot90(src, int(rng.integers(1, 4)))
    if rng.random() < 0.5:
        src = src[:, ::-1]
    sh, sw = src.shape[:2]
    scale = rng.uniform(0.35, 0.9) * min(sh / h, sw / w)
    ch, cw = max(8, int(h * scale)), max(8, int(w * scale))
    y0, x0 = int(rng.integers(0, sh - ch + 1)), int(rng.integers(0, sw - cw + 1))
    crop = np.ascontiguousarray(src[y0 : y0 + ch, x0 : x0 + cw])
    return cv2.resize(crop, (w, h), interpolation=cv2.INTER_LINEAR)


def _photo_background(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    photo = _photo()
    if photo is None:
        return _surface(shape, rng)
    img = _crop_resized(photo, shape, rng, turn=False)
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 2.5))
    gains = rng.uniform(0.75, 1.25, 3).astype(np.float32)
    return img * gains + rng.normal(0, 10, 3).astype(np.float32)


def _terrain(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    dem = _elevation()
    if dem is None:
        return _surface(shape, rng)
    z = _crop_resized(dem, shape, rng, turn=True)
    z = (z - z.min()) / max(float(z.max() - z.min()), 1e-6)
    gy, gx = np.gradient(z * rng.uniform(20, 60))
    az = rng.uniform(0, 2 * np.pi)
    shade = np.clip((np.cos(az) * gx + np.sin(az) * gy + 0.8) / np.sqrt(gx**2 + gy**2 + 1), 0, 1)
    stops = ((40, 70, 35), (85, 115, 55), (150, 140, 90), (175, 150, 120), (225, 220, 210))
    if rng.random() < 0.4:
        stops = ((150, 120, 80), (190, 160, 110), (220, 195, 150), (170, 130, 90))  # desert
    noise = _fractal(shape, rng, cells=6, octaves=4)
    return _ramp(np.clip(z + 0.15 * (noise - 0.5), 0, 1), stops) * (0.35 + 0.8 * shade[..., None])


_BACKGROUNDS = (_landscape, _landscape, _wood, _surface, _surface, _water, _indoor, _photo_background, _terrain)


# ---------------------------------------------------------------------------------------- outlines
def _leaf(rng: np.random.Generator) -> tuple[list[np.ndarray], dict]:
    """A leaf along x in [-1, 1] (stem at -x), y across: an ovate/lanceolate blade and a stem."""
    t = np.linspace(-1, 1, 41)
    width = rng.uniform(0.22, 0.55)
    power = rng.uniform(0.5, 1.1)
    skew = rng.uniform(-0.35, 0.35)
    half = width * (1 - t**2) ** power * (1 - skew * t)
    if rng.random() < 0.4:  # serrated margin
        half = half * (1 + 0.07 * np.abs(np.sin(np.pi * rng.uniform(6, 14) * t)))
    bend = rng.uniform(-0.25, 0.25)
    mid = bend * (t**2 - 1)
    upper = np.stack([t, mid + half], 1)
    lower = np.stack([t, mid - half * rng.uniform(0.85, 1.15)], 1)[::-1]
    blade = np.concatenate([upper, lower[1:-1]])
    stem_len, stem_w = rng.uniform(0.1, 0.3), rng.uniform(0.025, 0.05)
    stem = np.array([[-0.9, stem_w], [-1 - stem_len, stem_w * 0.7], [-1 - stem_len, -stem_w * 0.7], [-0.9, -stem_w]])
    return [blade, stem], {"width": width, "bend": bend}


def _star(rng: np.random.Generator) -> tuple[list[np.ndarray], dict]:
    n = int(rng.choice([4, 5, 5, 5, 6, 7]))
    inner = rng.uniform(0.36, 0.55) if n > 4 else rng.uniform(0.3, 0.45)
    k = np.arange(2 * n)
    radius = np.where(k % 2 == 0, 1.0, inner)
    ang = k * np.pi / n
    pts = np.stack([np.cos(ang) * radius, np.sin(ang) * radius], 1)
    if rng.random() < 0.35:  # rounded points (Chaikin corner cutting)
        for _ in range(2):
            nxt = np.roll(pts, -1, 0)
            pts = np.stack([0.75 * pts + 0.25 * nxt, 0.25 * pts + 0.75 * nxt], 1).reshape(-1, 2)
    return [pts], {"points": n}


def _bottle(rng: np.random.Generator) -> tuple[list[np.ndarray], dict]:
    """A bottle along x from its base (-1) to its cap (+1), y across (symmetric)."""
    body = rng.uniform(0.24, 0.42)
    neck = rng.uniform(0.07, 0.13) if rng.random() < 0.8 else body * rng.uniform(0.55, 0.8)  # some jars
    shoulder = rng.uniform(-0.1, 0.4)
    neck_start = min(0.8, shoulder + rng.uniform(0.15, 0.35))
    corner = 0.08
    s = np.linspace(0, 1, 10)
    profile = [(-1.0, body - corner), (-1 + corner * 0.3, body - corner * 0.3), (-1 + corner, body)]
    profile += [(shoulder, body)]
    profile += list(
        zip(shoulder + (neck_start - shoulder) * s, neck + (body - neck) * (1 - _smoothstep(0, 1, s)), strict=True)
    )
    profile += [(0.88, neck), (0.88, neck * 1.2), (1.0, neck * 1.2)]
    right = np.array(profile)
    left = right[::-1] * [1, -1]
    return [np.concatenate([right, left])], {"body": body, "neck": neck, "shoulder": shoulder}


def _fish(rng: np.random.Generator) -> tuple[list[np.ndarray], dict]:
    """A fish along x with its head at +x and its tail at -x, back at +y."""
    height = rng.uniform(0.2, 0.42)
    t = np.linspace(0, np.pi, 24)
    x = -0.55 + 1.3 * (1 - np.cos(t)) / 2  # tail root -0.55 .. snout 0.75
    along = (x + 0.55) / 1.3
    girth = height * np.sin(np.pi * along**0.75) ** 0.8 + 0.04
    top = np.stack([x, girth], 1)
    bottom = np.stack([x, -girth * rng.uniform(0.8, 1.0)], 1)[::-1]
    body = np.concatenate([top, bottom[1:-1]])
    spread, fork = rng.uniform(0.22, 0.42), rng.uniform(0.0, 0.25)
    tail = np.array([[-0.45, 0.06], [-1.0, spread], [-1.0 + fork, 0.0], [-1.0, -spread], [-0.45, -0.06]])
    fin_x = rng.uniform(-0.25, 0.15)
    fin_h = rng.uniform(0.08, 0.25)
    dorsal = np.array([[fin_x - 0.2, height * 0.7], [fin_x - 0.05, height + fin_h], [fin_x + 0.2, height * 0.85]])
    return [body, tail, dorsal], {"height": height}


_OUTLINES = {LEAF: _leaf, STAR: _star, BOTTLE: _bottle, FISH: _fish}


# ---------------------------------------------------------------------------------------- textures
def _leaf_texture(u: np.ndarray, v: np.ndarray, p: dict, rng: np.random.Generator) -> np.ndarray:
    c = _class_colour(LEAF, rng)
    vm = v - p.get("bend", 0.0) * (u**2 - 1)
    img = c * (0.85 + 0.2 * np.clip((u + 1) / 2, 0, 1))[..., None]
    mott = _fractal(u.shape, rng, cells=3, octaves=3)
    img = img * (0.88 + 0.24 * mott[..., None])
    if rng.random() < 0.35:  # autumn blotches
        blot = _smoothstep(0.6, 0.75, _fractal(u.shape, rng, cells=4, octaves=3))
        img = _lerp(img, _colour("brown") * rng.uniform(0.6, 1.1), blot)
    vein_colour = np.clip(c * 1.35 + 25, 0, 255)
    midrib = np.exp(-((vm / 0.03) ** 2))
    phase = (u - np.abs(vm) * rng.uniform(0.8, 1.6)) * rng.uniform(3, 6)
    side = np.exp(-(((phase - np.round(phase)) / 0.08) ** 2)) * np.clip(1 - np.abs(vm) / (p["width"] + 1e-3), 0, 1)
    return _lerp(img, vein_colour, np.clip(0.8 * midrib + 0.45 * side, 0, 1))


def _star_texture(u: np.ndarray, v: np.ndarray, p: dict, rng: np.random.Generator) -> np.ndarray:
    c = _class_colour(STAR, rng)
    n = p.get("points", 5)
    sector = (np.arctan2(v, u) % (2 * np.pi / n)) / (2 * np.pi / n)
    facet = np.where(sector < 0.5, rng.uniform(1.1, 1.3), rng.uniform(0.7, 0.85)).astype(np.float32)
    rho = np.sqrt(u * u + v * v)
    img = c * facet[..., None] * (1.1 - 0.25 * rho)[..., None]
    if rng.random() < 0.5:  # a differently coloured heart
        img = _lerp(img, _class_colour(STAR, rng) * facet[..., None], np.exp(-((rho / 0.3) ** 2)))
    sparkle = rng.random(u.shape).astype(np.float32) > 0.985
    img[sparkle] = img[sparkle] * 0.5 + 125
    return img


def _bottle_texture(u: np.ndarray, v: np.ndarray, p: dict, rng: np.random.Generator) -> np.ndarray:
    c = _class_colour(BOTTLE, rng)
    body = p.get("body", 0.35)
    across = np.clip(np.abs(v) / body, 0, 1)
    img = c * (1.05 - 0.45 * across**2)[..., None]
    if rng.random() < 0.6:  # paper label around the body
        lo = rng.uniform(-0.85, -0.4)
        hi = min(p.get("shoulder", 0.2), lo + rng.uniform(0.25, 0.6))
        band = ((u > lo) & (u < hi)).astype(np.float32)
        paper = _jitter(_colour(str(rng.choice(["white", "yellow", "red", "gold", "clear"]))), rng, 10)
        rows = (((u - lo) * rng.uniform(8, 16)) % 1) < 0.3
        dashes = _fractal(u.shape, rng, cells=8, octaves=2) > 0.55
        ink = rows & dashes & (np.abs(v) < body * 0.7)
        label = paper * (1.05 - 0.4 * across**2)[..., None]
        label[ink] *= 0.35
        img = _lerp(img, label, band)
    cap = _jitter(_colour(str(rng.choice(["gold", "red", "dark", "white", "blue"]))), rng)
    img = _lerp(img, cap * (1.05 - 0.4 * across**2)[..., None], (u > 0.88).astype(np.float32))
    highlight = np.exp(-(((v + body * 0.45) / (0.05 + 0.1 * body)) ** 2)) + 0.5 * np.exp(
        -(((v - body * 0.6) / 0.03) ** 2)
    )
    return img + (highlight * rng.uniform(60, 140))[..., None] * (u < 0.88)[..., None]


def _fish_texture(u: np.ndarray, v: np.ndarray, p: dict, rng: np.random.Generator) -> np.ndarray:
    c = _class_colour(FISH, rng)
    height = p.get("height", 0.3)
    belly = np.clip(0.5 - v / (2 * height), 0, 1)
    img = _lerp(c * 0.7, np.clip(c * 0.6 + 110, 0, 255), belly**1.5)
    fs = rng.uniform(10, 18)
    su, sv = u * fs, v * fs
    sv = sv + 0.5 * (np.floor(su) % 2)
    du, dv = su - np.floor(su), sv - np.floor(sv) - 0.5
    arc = np.abs(np.sqrt(du * du + dv * dv) - 0.75) < 0.12
    img[arc] *= 0.8
    pattern = rng.random()
    if pattern < 0.35:  # vertical bands
        bands = _smoothstep(0.55, 0.7, np.sin(u * rng.uniform(8, 16) + rng.uniform(0, 6)))
        img = _lerp(img, _class_colour(FISH, rng) * 0.9, bands)
    elif pattern < 0.6:  # spots
        spots = _smoothstep(0.7, 0.8, _fractal(u.shape, rng, cells=6, octaves=2))
        img = _lerp(img, c * 0.35, spots)
    fins = (u < -0.5) | (np.abs(v) > height * 0.98)
    rays = 0.5 + 0.5 * np.sin(np.arctan2(v, u + 0.5) * rng.uniform(25, 45))
    fin_colour = _lerp(c * 0.85, c * 0.55, rays)
    img = np.where(fins[..., None], fin_colour, img)
    if not p.get("eye", True):
        return img
    eye_u, eye_v = 0.55, height * 0.2
    d = np.sqrt((u - eye_u) ** 2 + (v - eye_v) ** 2)
    r_eye = 0.04 + 0.1 * height
    img[d < r_eye] = (225, 225, 215)
    img[d < r_eye * 0.55] = (15, 15, 20)
    return img


_TEXTURES = {LEAF: _leaf_texture, STAR: _star_texture, BOTTLE: _bottle_texture, FISH: _fish_texture}


# --------------------------------------------------------------------------------------- geometry
@dataclass
class _Shape:
    """A rasterised outline: anti-aliased coverage over the whole image and its local frame."""

    kind: int
    coverage: np.ndarray  # (H, W) uint8, 0..255
    area: float  # full polygon area in pixels (also the part outside the image)
    centre: np.ndarray
    scale: np.ndarray  # local unit -> pixels along (x, y)
    angle: float
    params: dict

    @property
    def hard(self) -> np.ndarray:
        return self.coverage >= 128

    def bbox(self, pad: int = 3) -> tuple[slice, slice] | None:
        ys, xs = np.nonzero(self.coverage)
        if ys.size == 0:
            return None
        h, w = self.coverage.shape
        return (
            slice(max(0, ys.min() - pad), min(h, ys.max() + pad + 1)),
            slice(max(0, xs.min() - pad), min(w, xs.max() + pad + 1)),
        )

    def local(self, box: tuple[slice, slice]) -> tuple[np.ndarray, np.ndarray]:
        """Local (u, v) coordinates of the pixel centres of ``box``."""
        ys, xs = np.mgrid[box[0], box[1]].astype(np.float32)
        dx, dy = xs - self.centre[0], ys - self.centre[1]
        c, s = np.cos(self.angle), np.sin(self.angle)
        return (dx * c + dy * s) / self.scale[0], (-dx * s + dy * c) / self.scale[1]


def _rasterise(
    kind: int, polys: list[np.ndarray], shape: tuple[int, int], centre, scale, angle: float, params: dict
) -> _Shape:
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    cover = np.zeros(shape, np.uint8)
    area = 0.0
    for poly in polys:
        pts = (poly * scale) @ rot.T + centre
        area += abs(float(cv2.contourArea(pts.astype(np.float32))))
        cv2.fillPoly(cover, [np.round(pts * 16).astype(np.int32)], 255, lineType=cv2.LINE_AA, shift=4)
    return _Shape(kind, cover, area, np.asarray(centre, float), np.asarray(scale, float), angle, params)


def _place_object(kind: int, shape: tuple[int, int], rng: np.random.Generator, cut: bool) -> _Shape:
    h, w = shape
    r = rng.uniform(0.1, 0.45) * min(h, w)
    polys, params = _OUTLINES[kind](rng)
    lo, hi = (-0.05, 1.05) if cut else (0.15, 0.85)
    centre = np.array([rng.uniform(lo, hi) * w, rng.uniform(lo, hi) * h])
    flip = 1.0 if rng.random() < 0.5 else -1.0
    if kind == BOTTLE:
        angle = -np.pi / 2 + rng.normal(0, 0.2) if rng.random() < 0.7 else rng.uniform(0, 2 * np.pi)
    elif kind == FISH:
        angle = rng.normal(0, 0.35) + (np.pi if rng.random() < 0.5 else 0.0)
        flip = -1.0 if abs(((angle + np.pi) % (2 * np.pi)) - np.pi) < np.pi / 2 else 1.0  # back (+y) up
    else:
        angle = rng.uniform(0, 2 * np.pi)
    scale = np.array([r, r * rng.uniform(0.85, 1.15) * flip])
    return _rasterise(kind, polys, shape, centre, scale, angle, params)


def _occluder(shape: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A foreground thing that is background: twig, grass blades or post. ``(coverage, colour image)``."""
    h, w = shape
    cover = np.zeros(shape, np.uint8)
    kind = rng.integers(3)
    if kind == 0:  # a twig: a thick wavy curve across the image
        p0, p2 = rng.uniform(0, 1, 2) * (w, h), rng.uniform(0, 1, 2) * (w, h)
        p1 = (p0 + p2) / 2 + rng.normal(0, 0.2, 2) * (w, h)
        t = np.linspace(0, 1, 30)[:, None]
        pts = (1 - t) ** 2 * p0 + 2 * t * (1 - t) * p1 + t**2 * p2
        thick = max(2, round(rng.uniform(0.008, 0.03) * min(h, w)))
        cv2.polylines(cover, [np.round(pts * 16).astype(np.int32)], False, 255, thick, cv2.LINE_AA, shift=4)
        colour = _jitter(_colour(str(rng.choice(["brown", "dark", "olive"]))), rng)
    elif kind == 1:  # grass blades from the bottom edge
        for _ in range(int(rng.integers(3, 12))):
            x0 = rng.uniform(0, w)
            top = np.array([x0 + rng.normal(0, 0.1 * w), h - rng.uniform(0.2, 0.7) * h])
            base = rng.uniform(0.006, 0.02) * w
            pts = np.array([[x0 - base, h + 2], [x0 + base, h + 2], top])
            cv2.fillPoly(cover, [np.round(pts * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
        colour = _jitter(_colour(str(rng.choice(["leaf", "dark_green", "yellow_green"]))), rng)
    else:  # a post or bar straight across
        angle = rng.normal(0, 0.15) + (np.pi / 2 if rng.random() < 0.5 else 0)
        centre = rng.uniform(0, 1, 2) * (w, h)
        half = rng.uniform(0.02, 0.06) * min(h, w)
        d = np.array([np.cos(angle), np.sin(angle)]) * (h + w)
        n = np.array([-np.sin(angle), np.cos(angle)]) * half
        pts = np.array([centre - d - n, centre + d - n, centre + d + n, centre - d + n])
        cv2.fillPoly(cover, [np.round(pts * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
        colour = _jitter(_colour(str(rng.choice(["silver", "brown", "white", "dark"]))), rng)
    tex = 0.75 + 0.4 * _fractal(shape, rng, cells=6, octaves=3)
    return cover, colour * tex[..., None]


def _visible_enough(objects: list[_Shape], label_owner: np.ndarray) -> bool:
    kernel = np.ones((3, 3), np.uint8)
    for i, obj in enumerate(objects):
        interior = int(cv2.erode((label_owner == i).astype(np.uint8), kernel).sum())
        if interior < max(30, 0.3 * obj.area):
            return False
    return True


# ------------------------------------------------------------------------------------------ paint
def _shade(obj: _Shape, box: tuple[slice, slice], light: np.ndarray) -> np.ndarray:
    """Lambert shading of a height field that rises away from the outline: ``(h, w)`` ~1 inside."""
    hard = obj.hard[box].astype(np.uint8)
    dist = cv2.distanceTransform(hard, cv2.DIST_L2, 3)
    height = np.sqrt(np.clip(dist / max(float(dist.max()) * 0.6, 1.0), 0, 1)) * max(float(dist.max()), 1.0) * 0.6
    height = cv2.GaussianBlur(height, (0, 0), 1.0)
    gy, gx = np.gradient(height)
    lambert = (-gx * light[0] - gy * light[1] + light[2]) / np.sqrt(gx * gx + gy * gy + 1)
    return np.clip(lambert / light[2], 0.35, 1.5)


def _paint_object(
    img: np.ndarray, obj: _Shape, rng: np.random.Generator, light: np.ndarray, *, flat: bool = False
) -> None:
    """Composite ``obj`` into ``img``: shaded and casting a shadow, or ``flat`` (a pattern on a surface)."""
    box = obj.bbox()
    if box is None:
        return
    alpha = obj.coverage[box].astype(np.float32) / 255
    if flat or rng.random() < 0.5:  # soft, slightly out-of-focus edge
        alpha = cv2.GaussianBlur(alpha, (0, 0), rng.uniform(0.4, 1.2) + 1.5 * flat)
    if flat:
        u, v = obj.local(box)
        colour = _TEXTURES[obj.kind](u, v, obj.params, rng)
        img[box] = _lerp(img[box], colour, alpha * rng.uniform(0.45, 0.8))
        return
    if rng.random() < 0.6:  # cast shadow, away from the light
        h, w = img.shape[:2]
        shift = -light[:2] * rng.uniform(0.03, 0.08) * min(h, w)
        m = np.float32([[1, 0, shift[0]], [0, 1, shift[1]]])
        shadow = cv2.warpAffine(obj.coverage.astype(np.float32) / 255, m, (w, h))
        shadow = cv2.GaussianBlur(shadow, (0, 0), rng.uniform(2, 5)) * rng.uniform(0.25, 0.5)
        img *= (1 - shadow)[..., None]
    u, v = obj.local(box)
    colour = _TEXTURES[obj.kind](u, v, obj.params, rng) * _shade(obj, box, light)[..., None]
    if obj.kind == BOTTLE and rng.random() < 0.5:  # glass lets some of the scene through
        alpha = alpha * rng.uniform(0.75, 0.92)
    img[box] = _lerp(img[box], colour, alpha)


def _distractor(img: np.ndarray, rng: np.random.Generator, light: np.ndarray) -> None:
    """A flat background patch that borrows a class's pattern and colours, not its outline."""
    h, w = img.shape[:2]
    t = np.linspace(0, 2 * np.pi, 28, endpoint=False)
    wobble = 1 + 0.12 * np.sin(2 * t + rng.uniform(0, 6)) + rng.normal(0, 0.05, t.size)
    blob = np.stack([np.cos(t) * wobble, np.sin(t) * wobble * rng.uniform(0.5, 1.0)], 1)
    kind = int(rng.integers(1, 5))
    params = {"width": 0.5, "bend": 0.0, "points": 5, "body": 0.6, "shoulder": 0.5, "height": 0.6, "eye": False}
    r = rng.uniform(0.08, 0.25) * min(h, w)
    centre = rng.uniform(0, 1, 2) * (w, h)
    shape = _rasterise(kind, [blob], (h, w), centre, np.array([r, r]), rng.uniform(0, 2 * np.pi), params)
    _paint_object(img, shape, rng, light, flat=True)


def render_scene(
    rng: np.random.Generator, long_side: tuple[int, int] = (200, 500), photos: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """One scenes image and its ground truth.

    Args:
        rng: the generator (the sample depends on nothing else, bar matplotlib's sample files).
        long_side: inclusive range of the image's long side in pixels.
        photos: allow the photograph and terrain backgrounds (else a surface texture replaces them).

    Returns:
        ``((H, W, 3) uint8 RGB image, (H, W) uint8 mask with 0..4 and 255 on object borders)``.
    """
    long = int(rng.integers(long_side[0], long_side[1] + 1))
    aspect = _ASPECTS[int(rng.integers(len(_ASPECTS)))]  # width / height
    w, h = (long, round(long / aspect)) if aspect >= 1 else (round(long * aspect), long)
    shape = (h, w)
    # 1. background, maybe with class-textured distractors
    background = _BACKGROUNDS[int(rng.integers(len(_BACKGROUNDS)))]
    if not photos and background in (_photo_background, _terrain):
        background = _surface
    img = background(shape, rng).astype(np.float32)
    light = np.array([*rng.normal(0, 1, 2), 0.0])
    light[:2] /= np.linalg.norm(light[:2]) + 1e-6
    light[:2] *= rng.uniform(0.3, 0.8)
    light[2] = np.sqrt(1 - light[0] ** 2 - light[1] ** 2)
    if rng.random() < 0.35:
        for _ in range(int(rng.integers(1, 3))):
            _distractor(img, rng, light)
    # 2. layout: objects (and foreground occluders) re-drawn until each object keeps a visible interior
    for _ in range(40):
        n = int(rng.choice([1, 1, 2, 2, 2, 3, 3]))
        objects = [_place_object(int(rng.integers(1, 5)), shape, rng, cut=rng.random() < 0.3) for _ in range(n)]
        occluders = [_occluder(shape, rng) for _ in range(int(rng.random() < 0.25) * int(rng.integers(1, 3)))]
        owner = np.full(shape, -1, np.int32)
        for i, obj in enumerate(objects):
            owner[obj.hard] = i
        for cover, _ in occluders:
            owner[cover >= 128] = -1
        if _visible_enough(objects, owner):
            break
    label = np.zeros(shape, np.uint8)
    label[owner >= 0] = np.array([o.kind for o in objects], np.uint8)[owner[owner >= 0]]
    # 3. paint in depth order, then the occluders on top
    for obj in objects:
        _paint_object(img, obj, rng, light)
    for cover, colour in occluders:
        img = _lerp(img, colour, cover.astype(np.float32) / 255)
    # 4. camera: light falloff, colour cast, focus, sensor noise
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    falloff = 1 + rng.uniform(-0.15, 0.15) * (xs / w - 0.5) + rng.uniform(-0.15, 0.15) * (ys / h - 0.5)
    falloff -= rng.uniform(0, 0.25) * (((xs / w - 0.5) ** 2 + (ys / h - 0.5) ** 2) * 2)
    img = img * falloff[..., None] * rng.uniform(0.92, 1.08, 3).astype(np.float32)
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 0.8))
    img += rng.normal(0, rng.uniform(1.5, 5), img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8), ignore_borders(label)


def make_scenes(
    out: str | Path,
    *,
    n_train: int = 200,
    n_val: int = 50,
    seed: int = 0,
    long_side: tuple[int, int] = (200, 500),
    photos: bool = True,
) -> DatasetLayout:
    """Write the scenes dataset to ``out`` (VOC layout) and return its layout.

    Args:
        out: dataset root (created). A folder holding anything else than this function's own output
            with the same arguments is refused (:func:`urn.data.demo.write_procedural`).
        n_train: images in the ``train`` split.
        n_val: images in the ``val`` split.
        seed: the only source of randomness.
        long_side: inclusive range of each image's long side in pixels.
        photos: also use matplotlib's sample photograph and elevation model as backgrounds (when
            installed); False makes the data depend on ``seed`` alone.
    """
    if not 32 <= long_side[0] <= long_side[1]:
        raise ValueError("long_side must be (lo, hi) with 32 <= lo <= hi")
    args = {"n_train": n_train, "n_val": n_val, "seed": seed, "long_side": list(long_side), "photos": photos}
    return write_procedural(out, "scenes", SCENES_CLASSES, lambda rng: render_scene(rng, long_side, photos), args)
