"""Seeded procedural renderer of the built-in world ("shapeworld").

Every image shows at most one object: a *shape* filled with a *colour* in a *texture*
(our analogue of an artistic style) on a flat *background*. Because we draw the images
ourselves, every generated concept has an exact label and an exact object mask.

Images are 32x32 RGB by default. Why not 64x64: on a 2-core CPU the UNet is the cost
that dominates training, erasure and evaluation, and a 4x-downsampling VAE turns 32x32
images into 8x8x4 latents (a UNet step is ~3.5x cheaper than at 16x16). The shapes and
textures below are drawn coarse enough to stay unambiguous at 32 pixels; ``render``
takes any size, so a larger world is a config change, not a code change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "heart", "cross", "crescent", "diamond")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 35),
    "orange": (250, 135, 10),
    "yellow": (240, 215, 25),
    "green": (35, 165, 55),
    "cyan": (20, 200, 215),
    "blue": (35, 65, 220),
    "purple": (135, 45, 185),
    "pink": (250, 120, 185),
}
TEXTURES: tuple[str, ...] = ("plain", "striped", "dotted", "checkered")
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (244, 244, 244),
    "gray": (125, 125, 125),
    "black": (18, 18, 18),
    "sand": (212, 192, 150),
}
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "colour": tuple(COLOURS),
    "texture": TEXTURES,
    "background": tuple(BACKGROUNDS),
}

# Shape/colour combinations never shown in training: one per shape and one per colour
# (a shifted diagonal of the 8x8 table), so every shape and every colour is seen, but
# e.g. no orange star and no purple circle ever is. Erasure can then be tested on combinations the model
# composes itself.
HELD_OUT: frozenset[tuple[str, str]] = frozenset(
    (shape, tuple(COLOURS)[(i + 6) % len(COLOURS)]) for i, shape in enumerate(SHAPES)
)

# The secondary colour of a textured object is the base colour darkened by this factor.
TEXTURE_SHADE = 0.42
# Texture sizes in 1/32 of the image side. Dots and checks span more than one 4x4-pixel latent cell, so
# the 8x8 latent UNet can draw them (finer ones, period 6 / cells of 4, came out faint or as stripes).
DOT_PERIOD, DOT_RADIUS = 8.0, 2.4
CHECK_CELL = 6.0


@dataclass(frozen=True)
class Scene:
    """Everything that determines one rendered image. ``shape=None`` renders the background only."""

    shape: str | None
    colour: str | None
    texture: str | None
    background: str
    cx: float = 0.5  # object centre, as a fraction of the image side
    cy: float = 0.5
    scale: float = 0.72  # object extent, as a fraction of the image side
    phase_x: float = 0.0  # texture offset, in texture periods
    phase_y: float = 0.0

    @property
    def held_out(self) -> bool:
        return (self.shape, self.colour) in HELD_OUT

    def labels(self) -> dict[str, str | None]:
        return {"shape": self.shape, "colour": self.colour, "texture": self.texture, "background": self.background}


def sample_scene(
    rng: np.random.Generator,
    *,
    shape: str | None = None,
    colour: str | None = None,
    texture: str | None = None,
    background: str | None = None,
    allow_held_out: bool = False,
) -> Scene:
    """Draw a random scene; attributes given are fixed, the others are drawn uniformly.

    Unless ``allow_held_out``, (shape, colour) pairs in ``HELD_OUT`` are redrawn.
    """
    while True:
        s = shape if shape is not None else SHAPES[rng.integers(len(SHAPES))]
        c = colour if colour is not None else tuple(COLOURS)[rng.integers(len(COLOURS))]
        if allow_held_out or (s, c) not in HELD_OUT:
            break
        if shape is not None and colour is not None:
            raise ValueError(f"({shape}, {colour}) is a held-out combination; pass allow_held_out=True")
    t = texture if texture is not None else TEXTURES[rng.integers(len(TEXTURES))]
    b = background if background is not None else tuple(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
    return Scene(
        shape=s,
        colour=c,
        texture=t,
        background=b,
        cx=float(0.5 + rng.uniform(-0.09, 0.09)),
        cy=float(0.5 + rng.uniform(-0.09, 0.09)),
        scale=float(rng.uniform(0.62, 0.8)),
        phase_x=float(rng.uniform(0, 1)),
        phase_y=float(rng.uniform(0, 1)),
    )


def sample_empty_scene(rng: np.random.Generator, background: str | None = None) -> Scene:
    b = background if background is not None else tuple(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
    return Scene(shape=None, colour=None, texture=None, background=b)


def _polygon(cx: float, cy: float, r: float, points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    return [(cx + r * x, cy + r * y) for x, y in points]


def _star_points(n: int = 5, inner: float = 0.45) -> list[tuple[float, float]]:
    pts = []
    for k in range(2 * n):
        rad = 1.0 if k % 2 == 0 else inner
        ang = -math.pi / 2 + k * math.pi / n
        pts.append((rad * math.cos(ang), rad * math.sin(ang)))
    return pts


def _heart_points(m: int = 80) -> list[tuple[float, float]]:
    pts = []
    for k in range(m):
        t = 2 * math.pi * k / m
        x = 16 * math.sin(t) ** 3
        y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        pts.append((x / 17.0, -y / 17.0 + 0.1))
    return pts


def shape_mask(scene: Scene, size: int, supersample: int = 4) -> np.ndarray:
    """Anti-aliased object mask in [0, 1], shape (size, size)."""
    big = size * supersample
    img = Image.new("L", (big, big), 0)
    if scene.shape is None:
        return np.zeros((size, size), dtype=np.float32)
    d = ImageDraw.Draw(img)
    cx, cy, r = scene.cx * big, scene.cy * big, scene.scale * big / 2
    s = scene.shape
    if s == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif s == "square":
        q = r * 0.86
        d.rectangle([cx - q, cy - q, cx + q, cy + q], fill=255)
    elif s == "triangle":
        d.polygon(_polygon(cx, cy, r, [(0, -1.0), (1.0, 0.8), (-1.0, 0.8)]), fill=255)
    elif s == "star":
        d.polygon(_polygon(cx, cy, r * 1.08, _star_points()), fill=255)
    elif s == "heart":
        d.polygon(_polygon(cx, cy, r, _heart_points()), fill=255)
    elif s == "cross":
        w = r * 0.36
        d.rectangle([cx - w, cy - r, cx + w, cy + r], fill=255)
        d.rectangle([cx - r, cy - w, cx + r, cy + w], fill=255)
    elif s == "crescent":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        o = r * 0.55
        d.ellipse([cx - r + o, cy - r - o * 0.35, cx + r + o, cy + r - o * 0.35], fill=0)
    elif s == "diamond":
        d.polygon(_polygon(cx, cy, r, [(0, -1.05), (0.68, 0), (0, 1.05), (-0.68, 0)]), fill=255)
    else:
        raise ValueError(f"unknown shape {s!r}; choose one of {', '.join(SHAPES)}")
    arr = np.asarray(img, dtype=np.float32) / 255.0
    return arr.reshape(size, supersample, size, supersample).mean(axis=(1, 3))


def texture_pattern(scene: Scene, size: int) -> np.ndarray:
    """Where the texture's secondary (darker) colour goes: values in [0, 1], shape (size, size).

    Periods are in units of 1/32 of the image side so the look is independent of resolution.
    """
    u = size / 32.0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    t = scene.texture
    if t == "plain" or t is None:
        return np.zeros((size, size), dtype=np.float32)
    if t == "striped":  # diagonal stripes, period 6
        p = 6.0 * u
        v = ((xx + yy) / p + scene.phase_x) % 1.0
        return (v < 0.5).astype(np.float32)
    if t == "dotted":  # dots of radius DOT_RADIUS on a DOT_PERIOD grid
        p = DOT_PERIOD * u
        dx = ((xx / p + scene.phase_x) % 1.0 - 0.5) * p
        dy = ((yy / p + scene.phase_y) % 1.0 - 0.5) * p
        return np.clip(DOT_RADIUS * u + 0.5 - np.sqrt(dx * dx + dy * dy), 0, 1)
    if t == "checkered":  # square cells of CHECK_CELL
        p = 2 * CHECK_CELL * u
        a = ((xx / p + scene.phase_x) % 1.0) < 0.5
        b = ((yy / p + scene.phase_y) % 1.0) < 0.5
        return (a ^ b).astype(np.float32)
    raise ValueError(f"unknown texture {t!r}; choose one of {', '.join(TEXTURES)}")


def render(scene: Scene, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Render a scene: returns (uint8 RGB image of shape (size, size, 3), float32 mask in [0, 1])."""
    bg = np.array(BACKGROUNDS[scene.background], dtype=np.float32)
    img = np.broadcast_to(bg, (size, size, 3)).copy()
    mask = shape_mask(scene, size)
    if scene.shape is not None:
        base = np.array(COLOURS[scene.colour], dtype=np.float32)
        pattern = texture_pattern(scene, size)[..., None]
        fill = base * (1 - pattern) + base * TEXTURE_SHADE * pattern
        img = img * (1 - mask[..., None]) + fill * mask[..., None]
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), mask


def render_batch(scenes: list[Scene], size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Render many scenes: (N, size, size, 3) uint8 and (N, size, size) float32 masks."""
    imgs, masks = zip(*(render(s, size) for s in scenes))
    return np.stack(imgs), np.stack(masks)
