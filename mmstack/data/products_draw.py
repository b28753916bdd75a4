"""Drawn product photos for the synthetic catalogue: a flat object (shape by sub-category) on a background.

A :class:`Photo` is one view of a product, rendered on a square canvas a little larger than the output; an
:class:`ImageSpec` is one listing's file of that view: a crop of the canvas, resized, brightened and encoded.
Listings of the same product reuse the photo with another crop and JPEG quality, so they are near-duplicates.
Shapes are polygons in unit coordinates (x, y in -1..1, y down), each part filled by role: ``b`` body (the
product colour and pattern), ``a`` accent (second colour), ``w`` light detail, ``h`` hole (background again).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

Points = list[tuple[float, float]]
PATTERNS = ("solid", "stripes", "dots", "checks")
LIGHT = (232, 232, 228)
ROLE_LABEL = {"h": 0, "b": 1, "a": 2, "w": 3}


def _e(cx: float, cy: float, rx: float, ry: float, start: float = 0.0, end: float = 360.0, n: int = 20) -> Points:
    """Ellipse (or the arc from ``start`` to ``end`` degrees, closed by its chord) as a polygon."""
    angles = np.radians(np.linspace(start, end, n, endpoint=end - start < 360))
    return [(cx + rx * math.cos(a), cy + ry * math.sin(a)) for a in angles]


def _r(x0: float, y0: float, x1: float, y1: float) -> Points:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def _band(path: Points, width: float) -> Points:
    """A thick line along ``path`` as one polygon (left side forward, right side back)."""
    pts = np.asarray(path)
    d = np.gradient(pts, axis=0)
    normal = np.c_[-d[:, 1], d[:, 0]] / np.linalg.norm(d, axis=1, keepdims=True) * width / 2
    return [tuple(p) for p in np.r_[pts + normal, (pts - normal)[::-1]]]


_WAVE = [(-0.9 + 1.8 * t, 0.35 * math.sin(6.0 * t) - 0.5 + t) for t in np.linspace(0, 1, 16)]
_ZIGZAG = [(-0.85 + 1.7 * t, 0.45 * math.sin(9.0 * t)) for t in np.linspace(0, 1, 24)]

SHAPES: dict[str, list[tuple[str, Points]]] = {
    "tshirt": [("b", [(-0.35, -0.8), (-0.12, -0.9), (0.12, -0.9), (0.35, -0.8), (0.8, -0.45), (0.6, -0.2),
                      (0.4, -0.35), (0.4, 0.9), (-0.4, 0.9), (-0.4, -0.35), (-0.6, -0.2), (-0.8, -0.45)])],
    "shirt": [("b", [(-0.35, -0.8), (-0.12, -0.9), (0.12, -0.9), (0.35, -0.8), (0.8, -0.45), (0.6, -0.2),
                     (0.4, -0.35), (0.4, 0.9), (-0.4, 0.9), (-0.4, -0.35), (-0.6, -0.2), (-0.8, -0.45)]),
              ("a", [(-0.18, -0.9), (0, -0.62), (0.18, -0.9)]), ("a", _r(-0.03, -0.62, 0.03, 0.9))],
    "dress": [("b", [(-0.22, -0.9), (0.22, -0.9), (0.28, -0.25), (0.75, 0.9), (-0.75, 0.9), (-0.28, -0.25)]),
              ("a", _r(-0.3, -0.32, 0.3, -0.2))],
    "trousers": [("b", [(-0.45, -0.9), (0.45, -0.9), (0.5, 0.95), (0.12, 0.95), (0, -0.2), (-0.12, 0.95),
                        (-0.5, 0.95)]), ("a", _r(-0.46, -0.92, 0.46, -0.8))],
    "jacket": [("b", [(-0.4, -0.85), (0.4, -0.85), (0.85, 0.6), (0.62, 0.72), (0.4, 0.05), (0.4, 0.85),
                      (-0.4, 0.85), (-0.4, 0.05), (-0.62, 0.72), (-0.85, 0.6)]), ("a", _r(-0.03, -0.8, 0.03, 0.85))],
    "coat": [("b", [(-0.32, -0.92), (0.32, -0.92), (0.75, 0.45), (0.57, 0.55), (0.38, 0.0), (0.5, 0.97),
                    (-0.5, 0.97), (-0.38, 0.0), (-0.57, 0.55), (-0.75, 0.45)]),
             *[("a", _e(0.1, y, 0.05, 0.05, n=8)) for y in (-0.5, -0.2, 0.1, 0.4)]],
    "skirt": [("b", [(-0.35, -0.6), (0.35, -0.6), (0.75, 0.7), (-0.75, 0.7)]), ("a", _r(-0.36, -0.62, 0.36, -0.5))],
    "shorts": [("b", [(-0.55, -0.5), (0.55, -0.5), (0.65, 0.45), (0.1, 0.5), (0, 0.05), (-0.1, 0.5), (-0.65, 0.45)]),
               ("a", _r(-0.56, -0.52, 0.56, -0.4))],
    "sock": [("b", [(-0.25, -0.9), (0.2, -0.9), (0.2, 0.25), (0.75, 0.45), (0.75, 0.85), (-0.25, 0.85)]),
             ("a", _r(-0.25, -0.9, 0.2, -0.7))],
    "underwear": [("b", [(-0.7, -0.35), (0.7, -0.35), (0.6, 0.05), (0.15, 0.5), (-0.15, 0.5), (-0.6, 0.05)]),
                  ("a", _r(-0.7, -0.38, 0.7, -0.26))],
    "shoe": [("b", [(-0.9, 0.45), (-0.9, -0.05), (-0.5, -0.15), (-0.2, -0.5), (0.2, -0.5), (0.35, -0.1), (0.9, 0.15),
                    (0.9, 0.45)]), ("a", _r(-0.92, 0.4, 0.92, 0.58)), ("w", _r(-0.15, -0.35, 0.2, -0.25))],
    "boot": [("b", [(-0.35, -0.9), (0.2, -0.9), (0.2, 0.1), (0.85, 0.3), (0.85, 0.6), (-0.35, 0.6)]),
             ("a", _r(-0.37, 0.55, 0.87, 0.72))],
    "heel": [("b", [(-0.85, 0.25), (-0.55, -0.15), (0.35, 0.05), (0.85, 0.25), (0.85, 0.42), (-0.55, 0.42)]),
             ("a", _r(-0.85, 0.25, -0.68, 0.85))],
    "slipper": [("b", _e(0, 0.2, 0.85, 0.35)), ("a", [(-0.35, -0.25), (0.35, -0.25), (0.45, 0.2), (-0.45, 0.2)])],
    "bag": [("b", _e(0, -0.2, 0.45, 0.6, 180, 360)), ("h", _e(0, -0.2, 0.32, 0.46, 180, 360)),
            ("b", _r(-0.7, -0.2, 0.7, 0.8)), ("a", _r(-0.7, -0.2, 0.7, -0.05))],
    "backpack": [("a", _e(0, -0.72, 0.25, 0.22, 180, 360)), ("h", _e(0, -0.72, 0.15, 0.13, 180, 360)),
                 ("b", _r(-0.6, -0.72, 0.6, 0.88)), ("a", _r(-0.4, 0.2, 0.4, 0.7))],
    "strap": [("b", _r(-0.95, -0.12, 0.95, 0.12)), ("a", _r(-0.95, -0.24, -0.6, 0.24)),
              ("h", _r(-0.87, -0.12, -0.68, 0.12))],
    "wallet": [("b", _r(-0.8, -0.5, 0.8, 0.5)), ("a", [(-0.8, -0.5), (0.8, -0.5), (0.8, -0.05), (0, 0.15),
                                                       (-0.8, -0.05)])],
    "watch": [("a", _r(-0.22, -0.95, 0.22, 0.95)), ("b", _e(0, 0, 0.45, 0.45)), ("w", _e(0, 0, 0.33, 0.33)),
              ("a", _r(-0.02, -0.28, 0.02, 0.02))],
    "glasses": [("b", _e(-0.45, 0, 0.36, 0.29)), ("b", _e(0.45, 0, 0.36, 0.29)), ("b", _r(-0.12, -0.06, 0.12, 0.04)),
                ("a", _e(-0.45, 0, 0.28, 0.21)), ("a", _e(0.45, 0, 0.28, 0.21))],
    "scarf": [("b", _band(_WAVE, 0.35)), *[("a", _r(0.8 + 0.05 * k, 0.45, 0.82 + 0.05 * k, 0.75)) for k in range(3)]],
    "hat": [("b", _e(0, 0.2, 0.55, 0.75, 180, 360)), ("a", _e(0, 0.22, 0.9, 0.15))],
    "glove": [("b", _r(-0.45, -0.1, 0.45, 0.85)), *[("b", _r(-0.45 + 0.24 * k, -0.8, -0.27 + 0.24 * k, 0.0))
                                                    for k in range(4)],
              ("b", [(-0.45, 0.1), (-0.85, -0.3), (-0.7, -0.45), (-0.35, -0.1)]), ("a", _r(-0.47, 0.65, 0.47, 0.85))],
    "ring": [("b", _e(0, 0.1, 0.7, 0.7)), ("h", _e(0, 0.1, 0.47, 0.47)), ("a", _e(0, -0.62, 0.2, 0.2))],
    "towel": [("b", _r(-0.75, -0.6, 0.75, 0.6)), ("a", _r(-0.75, 0.3, 0.75, 0.4)), ("a", _r(-0.75, -0.4, 0.75, -0.3))],
    "curtain": [("a", _r(-0.95, -0.92, 0.95, -0.82)),
                ("b", [(-0.85, -0.82), (-0.1, -0.82), (-0.3, 0.9), (-0.55, 0.8), (-0.85, 0.9)]),
                ("b", [(0.1, -0.82), (0.85, -0.82), (0.85, 0.9), (0.55, 0.8), (0.3, 0.9)])],
    "pillow": [("b", [(-0.8, -0.8), (0, -0.62), (0.8, -0.8), (0.62, 0), (0.8, 0.8), (0, 0.62), (-0.8, 0.8),
                      (-0.62, 0)])],
    "plate": [("b", _e(0, 0, 0.85, 0.85, n=28)), ("w", _e(0, 0, 0.55, 0.55, n=24))],
    "pot": [("a", _r(-0.86, -0.25, -0.6, -0.1)), ("a", _r(0.6, -0.25, 0.86, -0.1)), ("b", _r(-0.65, -0.35, 0.65, 0.7)),
            ("a", _e(0, -0.36, 0.7, 0.12)), ("a", _r(-0.1, -0.58, 0.1, -0.42))],
    "pan": [("a", _r(0.3, -0.02, 0.98, 0.14)), ("b", _e(-0.25, 0.05, 0.62, 0.62)), ("w", _e(-0.25, 0.05, 0.45, 0.45))],
    "mug": [("b", _e(0.5, 0.05, 0.3, 0.32)), ("h", _e(0.5, 0.05, 0.15, 0.17)), ("b", _r(-0.55, -0.6, 0.35, 0.7))],
    "candle": [("b", _r(-0.35, -0.3, 0.35, 0.85)), ("a", _e(0, -0.55, 0.1, 0.2)), ("w", _r(-0.02, -0.38, 0.02, -0.3))],
    "vase": [("b", _e(0, 0.3, 0.55, 0.55)), ("b", _r(-0.18, -0.85, 0.18, -0.1)), ("a", _r(-0.26, -0.92, 0.26, -0.8))],
    "box": [("b", _r(-0.7, -0.55, 0.7, 0.65)), ("a", _r(-0.75, -0.65, 0.75, -0.45)), ("w", _r(-0.4, -0.1, 0.4, 0.3))],
    "mat": [("b", _r(-0.9, -0.45, 0.9, 0.45)), *[("a", _r(-0.9, y, 0.9, y + 0.05)) for y in (-0.3, -0.02, 0.26)]],
    "bottle": [("b", _r(-0.35, -0.3, 0.35, 0.9)), ("b", _r(-0.12, -0.7, 0.12, -0.3)), ("a", _r(-0.15, -0.9, 0.15, -0.7)),
               ("w", _r(-0.28, 0.1, 0.28, 0.5))],
    "jar": [("b", _r(-0.6, -0.2, 0.6, 0.6)), ("a", _r(-0.65, -0.5, 0.65, -0.2)), ("w", _r(-0.4, 0.05, 0.4, 0.35))],
    "tube": [("b", _r(-0.18, -0.3, 0.18, 0.9)), ("a", _r(-0.2, -0.9, 0.2, -0.3))],
    "perfume": [("b", _r(-0.45, -0.2, 0.45, 0.7)), ("a", _r(-0.15, -0.6, 0.15, -0.2)), ("w", _r(-0.25, 0.1, 0.25, 0.35))],
    "comb": [("b", _r(-0.9, -0.35, 0.9, -0.05)), *[("b", _r(-0.85 + 0.12 * k, -0.05, -0.8 + 0.12 * k, 0.4))
                                                   for k in range(15)]],
    "headphones": [("b", _e(0, 0.1, 0.7, 0.8, 180, 360)), ("h", _e(0, 0.1, 0.56, 0.66, 180, 360)),
                   ("a", _e(-0.66, 0.25, 0.2, 0.32)), ("a", _e(0.66, 0.25, 0.2, 0.32))],
    "phone": [("b", _r(-0.42, -0.85, 0.42, 0.85)), ("a", _r(-0.35, -0.72, 0.35, 0.72))],
    "speaker": [("b", _r(-0.85, -0.4, 0.85, 0.4)), ("a", _e(-0.45, 0, 0.28, 0.28)), ("a", _e(0.45, 0, 0.28, 0.28))],
    "cable": [("b", _band(_ZIGZAG, 0.12)), ("a", _r(-0.98, -0.12, -0.78, 0.12)), ("a", _r(0.78, -0.12, 0.98, 0.12))],
    "kettle": [("a", _r(0.52, -0.5, 0.75, 0.5)), ("h", _r(0.6, -0.35, 0.68, 0.35)),
               ("b", [(-0.45, -0.6), (0.45, -0.6), (0.6, 0.75), (-0.6, 0.75)]),
               ("b", [(-0.5, -0.3), (-0.85, -0.55), (-0.55, -0.05)]), ("a", _r(-0.65, 0.72, 0.65, 0.88))],
    "hairdryer": [("b", _r(-0.7, -0.55, 0.5, -0.05)), ("b", _r(0.5, -0.45, 0.85, -0.15)),
                  ("a", [(-0.3, -0.1), (0.0, -0.1), (-0.05, 0.85), (-0.3, 0.85)])],
    "vacuum": [("b", _e(0, 0, 0.8, 0.8, n=28)), ("a", _e(0, 0, 0.35, 0.35)), ("w", _e(0, 0, 0.12, 0.12, n=10))],
    "iron": [("b", [(-0.85, 0.5), (0.85, 0.5), (0.6, -0.1), (-0.2, -0.1)]),
             ("a", [(-0.45, -0.1), (0.4, -0.1), (0.3, -0.55), (-0.35, -0.55)]), ("h", _e(-0.02, -0.3, 0.2, 0.1)),
             ("w", _r(-0.85, 0.45, 0.85, 0.55))],
    "bear": [("b", _e(-0.3, -0.75, 0.14, 0.14)), ("b", _e(0.3, -0.75, 0.14, 0.14)), ("b", _e(0, -0.45, 0.36, 0.33)),
             ("b", _e(0, 0.35, 0.5, 0.52)), ("a", _e(0, 0.4, 0.25, 0.3)), ("a", _e(0, -0.38, 0.1, 0.07))],
    "doll": [("b", [(-0.2, -0.2), (0.2, -0.2), (0.55, 0.9), (-0.55, 0.9)]), ("w", _e(0, -0.5, 0.22, 0.25)),
             ("a", _e(0, -0.56, 0.26, 0.24, 180, 360))],
    "car": [("b", [(-0.9, 0.35), (-0.9, -0.05), (-0.45, -0.1), (-0.25, -0.45), (0.35, -0.45), (0.55, -0.1),
                   (0.9, 0.0), (0.9, 0.35)]), ("w", [(-0.2, -0.38), (0.3, -0.38), (0.45, -0.12), (-0.35, -0.12)]),
            ("a", _e(-0.5, 0.4, 0.2, 0.2)), ("a", _e(0.5, 0.4, 0.2, 0.2))],
    "dumbbell": [("b", _r(-0.6, -0.1, 0.6, 0.1)), ("a", _r(-0.85, -0.5, -0.55, 0.5)), ("a", _r(0.55, -0.5, 0.85, 0.5))],
    "ball": [("b", _e(0, 0, 0.8, 0.8, n=28)), ("a", _r(-0.8, -0.07, 0.8, 0.07)), ("a", _r(-0.07, -0.8, 0.07, 0.8))],
    "tent": [("b", [(0, -0.8), (0.9, 0.7), (-0.9, 0.7)]), ("a", [(0, -0.1), (0.3, 0.7), (-0.3, 0.7)])],
    "pouch": [("b", [(-0.6, -0.8), (0.6, -0.8), (0.7, 0.85), (-0.7, 0.85)]), ("a", _r(-0.6, -0.8, 0.6, -0.65)),
              ("w", _e(0, 0.15, 0.35, 0.3))],
    "book": [("b", _r(-0.6, -0.85, 0.6, 0.85)), ("a", _r(-0.6, -0.85, -0.45, 0.85)), ("w", _r(-0.3, -0.5, 0.4, -0.3))],
    "stick": [("b", [(-0.75, 0.85), (-0.85, 0.75), (0.75, -0.85), (0.85, -0.75)]),
              ("a", [(0.55, -0.75), (0.75, -0.95), (0.95, -0.75), (0.75, -0.55)])],
    "camera": [("b", _r(-0.75, -0.45, 0.75, 0.45)), ("a", _e(0, 0, 0.3, 0.3)), ("w", _e(0, 0, 0.14, 0.14, n=10))],
    "freshener": [("a", _r(-0.02, -0.98, 0.02, -0.88)),
                  ("b", [(0, -0.9), (0.5, -0.2), (0.25, -0.2), (0.6, 0.45), (0.1, 0.45), (0.1, 0.8), (-0.1, 0.8),
                         (-0.1, 0.45), (-0.6, 0.45), (-0.25, -0.2), (-0.5, -0.2)])],
    "hookah": [("b", _e(0, 0.55, 0.45, 0.35)), ("b", _r(-0.08, -0.6, 0.08, 0.3)), ("a", _e(0, -0.3, 0.3, 0.06)),
               ("a", [(-0.22, -0.92), (0.22, -0.92), (0.12, -0.6), (-0.12, -0.6)]),
               ("a", _band([(0.08, 0.1), (0.45, 0.0), (0.7, 0.3), (0.85, 0.8)], 0.06))],
}


@dataclass(frozen=True)
class Photo:
    """One view of a product on a ``canvas`` x ``canvas`` background, before any listing's crop."""

    seed: int
    canvas: int
    shape: str
    colour: tuple[int, int, int]
    accent: tuple[int, int, int]
    pattern: str
    pattern_colour: tuple[int, int, int]
    pattern_period: float  # in canvas fractions
    pattern_angle: float  # degrees
    scale: float  # object half-size as a fraction of the canvas half-size
    rotation: float  # degrees
    centre: tuple[float, float]  # in canvas fractions
    background: tuple[int, int, int]
    floor: tuple[int, int, int] | None  # colour of a floor band under the object, or None


@dataclass(frozen=True)
class ImageSpec:
    """One image file of a listing: a crop of ``photo`` (canvas fractions), resized, brightened and encoded."""

    path: str
    photo: Photo
    size: tuple[int, int]
    crop: tuple[float, float, float]  # left, top, side
    brightness: float
    format: str  # JPEG, PNG or WEBP
    quality: int


@functools.lru_cache(maxsize=8)
def _grid(c: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column coordinates of a ``c`` x ``c`` canvas in canvas fractions (read-only, shared)."""
    yy, xx = np.mgrid[0:c, 0:c].astype(np.float32) / c
    yy.flags.writeable = xx.flags.writeable = False
    return yy, xx


def render(photo: Photo) -> np.ndarray:
    """The photo as an ``canvas x canvas x 3`` float array (0..255)."""
    c = photo.canvas
    rng = np.random.default_rng(photo.seed)
    yy, xx = _grid(c)
    img = np.asarray(photo.background, np.float32) * (1.04 - 0.08 * yy[..., None])  # soft light from above
    if photo.floor is not None:
        img[yy > 0.72] = photo.floor

    labels = Image.new("L", (c, c), 0)
    shadow = Image.new("L", (c, c), 0)
    draw, draw_shadow = ImageDraw.Draw(labels), ImageDraw.Draw(shadow)
    theta = math.radians(photo.rotation)
    cos, sin = math.cos(theta), math.sin(theta)
    half = photo.scale * c / 2
    cx, cy = photo.centre[0] * c, photo.centre[1] * c
    for role, pts in SHAPES[photo.shape]:
        xy = [(cx + half * (x * cos - y * sin), cy + half * (x * sin + y * cos)) for x, y in pts]
        draw.polygon(xy, fill=ROLE_LABEL[role])
        if role != "h":
            draw_shadow.polygon([(x + 0.04 * c, y + 0.05 * c) for x, y in xy], fill=1)
    lab = np.asarray(labels)
    img[(np.asarray(shadow) == 1) & (lab == 0)] *= 0.8

    colour = np.asarray(photo.colour, np.float32)
    if photo.pattern == "solid":
        fill = colour
    else:
        a = math.radians(photo.pattern_angle)
        u = (xx * math.cos(a) + yy * math.sin(a)) / photo.pattern_period
        v = (-xx * math.sin(a) + yy * math.cos(a)) / photo.pattern_period
        if photo.pattern == "stripes":
            on = (u % 1.0) < 0.4
        elif photo.pattern == "checks":
            on = ((np.floor(u) + np.floor(v)) % 2) == 0
        else:
            on = ((u % 1.0 - 0.5) ** 2 + (v % 1.0 - 0.5) ** 2) < 0.07
        fill = np.where(on[..., None], np.asarray(photo.pattern_colour, np.float32), colour)
    # the object is lit from the top left: a gentle gradient makes it look less flat
    shade = (1.08 - 0.16 * ((xx - photo.centre[0]) + (yy - photo.centre[1]) + 0.5))[..., None]
    lab3 = lab[..., None]
    img = np.where(lab3 == 1, fill * shade, img)
    img = np.where(lab3 == 2, np.asarray(photo.accent, np.float32) * shade, img)
    img = np.where(lab3 == 3, np.asarray(LIGHT, np.float32), img)
    img += rng.standard_normal((c, c, 1), dtype=np.float32) * 3.0  # grey sensor noise
    return img


def draw_image(spec: ImageSpec) -> None:
    """Render, crop, resize, brighten and write one image file (callers draw into a temporary folder that is
    renamed into place when complete, so single files need no atomic write)."""
    canvas = render(spec.photo) * spec.brightness
    img = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    c = spec.photo.canvas
    left, top, side = (v * c for v in spec.crop)
    img = img.resize(spec.size, Image.Resampling.BILINEAR, box=(left, top, left + side, top + side))
    if spec.format == "PNG":
        img.save(spec.path, format="PNG")
    else:
        img.save(spec.path, format=spec.format, quality=spec.quality)


def draw_batch(specs: list[ImageSpec]) -> int:
    for spec in specs:
        draw_image(spec)
    return len(specs)
