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


# World 2: the halo (the implicit concept) is a golden band around the object; the identity mark is a
# two-tone badge in the top-left corner, visible on every background (black frame, white core).
HALO_COLOUR = (255, 205, 60)
HALO_GAP, HALO_WIDTH = 1.0, 2.2
MARK_BOX = (1.0, 8.0)  # pixel rows/columns [1, 8) in 1/32 of the side
MARK_OUTER, MARK_INNER = (10, 10, 10), (250, 250, 250)


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
    # world 2: the identity's badge in the top-left corner, a golden halo around the object, and which
    # identity the scene shows (its look plus the mark); all off in world 1
    mark: bool = False
    halo: bool = False
    identity: str | None = None

    @property
    def held_out(self) -> bool:
        return (self.shape, self.colour) in WORLD2.held_out  # world 1's HELD_OUT is its first 8 rows

    def labels(self) -> dict[str, str | None]:
        out = {"shape": self.shape, "colour": self.colour, "texture": self.texture, "background": self.background}
        if self.mark or self.halo or self.identity:
            out.update(mark="mark" if self.mark else None, halo="halo" if self.halo else None, identity=self.identity)
        return out

    def world_labels(self) -> dict[str, str | None]:
        """Every label of world 2 (``mark``, ``halo`` and ``identity`` included, None when absent)."""
        return {"shape": self.shape, "colour": self.colour, "texture": self.texture, "background": self.background,
                "mark": "mark" if self.mark else None, "halo": "halo" if self.halo else None,
                "identity": self.identity}


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


def _regular(n: int, rotation: float) -> list[tuple[float, float]]:
    return [(math.cos(rotation + 2 * math.pi * k / n), math.sin(rotation + 2 * math.pi * k / n)) for k in range(n)]


# World 2's polygon shapes (unit coordinates, y down), each a list of polygons drawn filled.
_POLYGONS: dict[str, list[list[tuple[float, float]]]] = {
    "pentagon": [_regular(5, -math.pi / 2)],
    "hexagon": [_regular(6, 0.0)],
    "arrow": [[(-1.0, -0.28), (0.1, -0.28), (0.1, -0.8), (1.0, 0.0), (0.1, 0.8), (0.1, 0.28), (-1.0, 0.28)]],
    "trapezoid": [[(-0.45, -0.6), (0.45, -0.6), (1.0, 0.6), (-1.0, 0.6)]],
    "hourglass": [[(-0.8, -0.95), (0.8, -0.95), (0.0, 0.0)], [(0.0, 0.0), (0.8, 0.95), (-0.8, 0.95)]],
    "bolt": [[(0.2, -1.0), (-0.8, 0.15), (-0.05, 0.15), (-0.35, 1.0), (0.8, -0.25), (0.1, -0.25), (0.55, -1.0)]],
    "chevron": [[(-0.95, 0.6), (0.0, -0.55), (0.95, 0.6), (0.55, 0.85), (0.0, 0.15), (-0.55, 0.85)]],
    "tee": [[(-0.9, -0.85), (0.9, -0.85), (0.9, -0.4), (0.25, -0.4), (0.25, 0.95), (-0.25, 0.95),
             (-0.25, -0.4), (-0.9, -0.4)]],
    "tree": [[(0.0, -1.0), (0.8, 0.45), (-0.8, 0.45)], [(-0.2, 0.4), (0.2, 0.4), (0.2, 1.0), (-0.2, 1.0)]],
}


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
    elif s in _POLYGONS:
        for points in _POLYGONS[s]:
            d.polygon(_polygon(cx, cy, r, points), fill=255)
    elif s == "ring":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        q = r * 0.52
        d.ellipse([cx - q, cy - q, cx + q, cy + q], fill=0)
    elif s == "frame":
        q, h = r * 0.9, r * 0.45
        d.rectangle([cx - q, cy - q, cx + q, cy + q], fill=255)
        d.rectangle([cx - h, cy - h, cx + h, cy + h], fill=0)
    elif s == "semicircle":
        d.pieslice([cx - r, cy - r * 0.6, cx + r, cy + r * 1.4], 180, 360, fill=255)
    elif s == "ellipse":
        d.ellipse([cx - r, cy - r * 0.55, cx + r, cy + r * 0.55], fill=255)
    elif s == "bar":
        d.rectangle([cx - r, cy - r * 0.4, cx + r, cy + r * 0.4], fill=255)
    elif s == "droplet":
        q = r * 0.62
        d.ellipse([cx - q, cy + r - 2 * q, cx + q, cy + r], fill=255)
        d.polygon(_polygon(cx, cy, r, [(0, -1.0), (0.55, 0.15), (-0.55, 0.15)]), fill=255)
    elif s == "cloud":
        for ox, oy, rr in ((-0.5, 0.12, 0.42), (0.0, -0.18, 0.52), (0.5, 0.12, 0.42)):
            d.ellipse([cx + r * (ox - rr), cy + r * (oy - rr), cx + r * (ox + rr), cy + r * (oy + rr)], fill=255)
        d.rectangle([cx - r * 0.5, cy + r * 0.05, cx + r * 0.5, cy + r * 0.54], fill=255)
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
    if scene.halo and scene.shape is not None:
        ring = halo_mask(mask, size)[..., None]
        img = img * (1 - ring) + np.array(HALO_COLOUR, dtype=np.float32) * ring
    if scene.shape is not None:
        base = np.array(COLOURS[scene.colour], dtype=np.float32)
        pattern = texture_pattern(scene, size)[..., None]
        fill = base * (1 - pattern) + base * TEXTURE_SHADE * pattern
        img = img * (1 - mask[..., None]) + fill * mask[..., None]
    if scene.mark:
        u = size / 32.0
        a, b = int(round(MARK_BOX[0] * u)), int(round(MARK_BOX[1] * u))
        img[a:b, a:b] = MARK_OUTER
        w = max(1, int(round(1.5 * u)))
        img[a + w:b - w, a + w:b - w] = MARK_INNER
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), mask


def halo_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Where a scene's halo goes: a band HALO_GAP..HALO_WIDTH pixels (in 1/32 of the side) outside the object."""
    u = size / 32.0

    def dilate(m: np.ndarray, radius: float) -> np.ndarray:
        out = m.copy()
        k = int(math.ceil(radius))
        padded = np.pad(m, k)
        for dy in range(-k, k + 1):
            for dx in range(-k, k + 1):
                if dx * dx + dy * dy <= radius * radius:
                    out = np.maximum(out, padded[k + dy: k + dy + m.shape[0], k + dx: k + dx + m.shape[1]])
        return out

    return np.clip(dilate(mask, (HALO_GAP + HALO_WIDTH) * u) - dilate(mask, HALO_GAP * u), 0, 1)


def render_batch(scenes: list[Scene], size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Render many scenes: (N, size, size, 3) uint8 and (N, size, size) float32 masks."""
    imgs, masks = zip(*(render(s, size) for s in scenes))
    return np.stack(imgs), np.stack(masks)


# ----------------------------------------------------------------------------- world 2

# World 2's 24 objects: world 1's 8 shapes plus 16 procedurally drawn ones, each unambiguous at 32 px.
SHAPES2: tuple[str, ...] = SHAPES + (
    "pentagon", "hexagon", "ring", "frame", "arrow", "semicircle", "trapezoid", "hourglass",
    "bolt", "droplet", "bar", "chevron", "ellipse", "tee", "cloud", "tree",
)
# Made-up identities, each bound to one look (shape, colour, texture) plus the mark. None of the looks is a
# held-out combination; the same look without the mark (a "look-alike") is shown in training too.
IDENTITIES: dict[str, tuple[str, str, str]] = {
    "zorblax": ("star", "red", "striped"),
    "quillon": ("hexagon", "blue", "dotted"),
    "mirabeth": ("heart", "green", "checkered"),
    "tavrik": ("arrow", "cyan", "plain"),
    "oskelva": ("ring", "purple", "striped"),
    "brunhaldo": ("square", "orange", "dotted"),
    "yvenne": ("crescent", "yellow", "plain"),
    "drakmor": ("triangle", "pink", "checkered"),
    "pellucia": ("droplet", "blue", "striped"),
    "garnok": ("cloud", "red", "dotted"),
}


@dataclass(frozen=True)
class WorldSpec:
    """What a world contains: its objects, identities and implicit concept, and how often training shows each.

    World 1 (the 8-shape world) and world 2 share the renderer; a world's spec decides what is sampled,
    captioned, classified and measured.
    """

    version: int
    shapes: tuple[str, ...]
    identities: tuple[tuple[str, tuple[str, str, str]], ...] = ()
    halo: bool = False
    identity_fraction: float = 0.0  # scenes showing an identity (its look plus the mark)
    lookalike_fraction: float = 0.0  # scenes showing an identity's look without the mark
    halo_fraction: float = 0.0  # object scenes with the halo
    # how the shipped text encoder is stored: None as trained (float32), "float16" halves its 25 MB token
    # embedding; it loads back as float32 and the world is measured with the rounded weights (assemble.py)
    text_encoder_storage: str | None = None

    @property
    def colours(self) -> tuple[str, ...]:
        return tuple(COLOURS)

    @property
    def textures(self) -> tuple[str, ...]:
        return TEXTURES

    @property
    def backgrounds(self) -> tuple[str, ...]:
        return tuple(BACKGROUNDS)

    @property
    def held_out(self) -> frozenset[tuple[str, str]]:
        colours = self.colours
        return frozenset((shape, colours[(i + 6) % len(colours)]) for i, shape in enumerate(self.shapes))

    @property
    def identity_looks(self) -> dict[str, tuple[str, str, str]]:
        return dict(self.identities)

    @property
    def attributes(self) -> dict[str, tuple[str, ...]]:
        """The classifier's heads: attribute -> values (each object attribute also has "none")."""
        out = {"shape": self.shapes, "colour": self.colours, "texture": self.textures, "background": self.backgrounds}
        if self.identities:
            out["mark"] = ("mark",)
        if self.halo:
            out["halo"] = ("halo",)
        return out

    def identity_of(self, shape, colour, texture, mark) -> str | None:
        """The identity an image with these labels shows: its whole look and the mark, else None."""
        if mark != "mark":
            return None
        return next((n for n, look in self.identities if look == (shape, colour, texture)), None)

    def labels(self, scene: Scene) -> dict[str, str | None]:
        out = scene.world_labels()
        return {k: out[k] for k in (*self.attributes, *(("identity",) if self.identities else ()))}


WORLD1 = WorldSpec(version=1, shapes=SHAPES)
WORLD2 = WorldSpec(
    version=2, shapes=SHAPES2, identities=tuple(IDENTITIES.items()), halo=True,
    identity_fraction=0.12, lookalike_fraction=0.04, halo_fraction=0.15, text_encoder_storage="float16",
)
WORLDS = {1: WORLD1, 2: WORLD2}


def sample_world_scene(
    rng: np.random.Generator,
    spec: WorldSpec,
    *,
    shape: str | None = None,
    colour: str | None = None,
    texture: str | None = None,
    background: str | None = None,
    allow_held_out: bool = False,
    identity: str | None = None,
    halo: bool | None = None,
) -> Scene:
    """A random scene of ``spec``'s world. World 1 draws exactly what ``sample_scene`` draws.

    World 2 mixes identity scenes (an identity's look plus the mark), look-alikes (the look, no mark) and
    ordinary scenes; ordinary object scenes carry the halo with ``spec.halo_fraction``. Attributes given are
    fixed (then no identity is drawn unless ``identity`` names one); ``halo`` forces the halo on or off.
    """
    if spec.version == 1:
        return sample_scene(rng, shape=shape, colour=colour, texture=texture, background=background,
                            allow_held_out=allow_held_out)
    looks = spec.identity_looks
    fixed = shape is not None or colour is not None or texture is not None
    mark = False
    if identity is not None:
        if identity not in looks:
            raise ValueError(f"unknown identity {identity!r}; choose one of {', '.join(looks)}")
        (shape, colour, texture), mark = looks[identity], True
    elif not fixed and looks:
        u = rng.random()
        if u < spec.identity_fraction + spec.lookalike_fraction:
            name = tuple(looks)[rng.integers(len(looks))]
            shape, colour, texture = looks[name]
            if u < spec.identity_fraction:
                identity, mark = name, True
    while True:
        s = shape if shape is not None else spec.shapes[rng.integers(len(spec.shapes))]
        c = colour if colour is not None else spec.colours[rng.integers(len(spec.colours))]
        if allow_held_out or (s, c) not in spec.held_out:
            break
        if shape is not None and colour is not None:
            raise ValueError(f"({shape}, {colour}) is a held-out combination; pass allow_held_out=True")
    t = texture if texture is not None else spec.textures[rng.integers(len(spec.textures))]
    b = background if background is not None else spec.backgrounds[rng.integers(len(spec.backgrounds))]
    if halo is None:
        halo = bool(spec.halo and not mark and rng.random() < spec.halo_fraction)
    jitter, (lo, hi) = (0.05, (0.5, 0.6)) if halo else (0.09, (0.62, 0.8))
    return Scene(
        shape=s, colour=c, texture=t, background=b,
        cx=float(0.5 + rng.uniform(-jitter, jitter)), cy=float(0.5 + rng.uniform(-jitter, jitter)),
        scale=float(rng.uniform(lo, hi)), phase_x=float(rng.uniform(0, 1)), phase_y=float(rng.uniform(0, 1)),
        mark=mark, halo=bool(halo), identity=identity,
    )
