"""Captions for shapeworld scenes: varied templates, synonyms, and attributes left unnamed.

Every shape, colour and texture word has at least two synonyms. Training captions name
each attribute only with some probability, so the model also learns "a star" (any colour)
and "something red" (any shape): an erased concept must then vanish from both.
"""

from __future__ import annotations

import numpy as np

from erasure.world.render import Scene

# The first word of each list is the canonical name; the others are synonyms.
SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "disc", "disk"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle", "wedge", "trigon"),
    "star": ("star", "pentagram", "starburst"),
    "heart": ("heart", "valentine", "love heart"),
    "cross": ("cross", "plus sign", "plus"),
    "crescent": ("crescent", "moon", "sickle"),
    "diamond": ("diamond", "rhombus", "lozenge"),
}
COLOUR_WORDS: dict[str, tuple[str, ...]] = {
    "red": ("red", "crimson", "scarlet"),
    "orange": ("orange", "tangerine", "amber"),
    "yellow": ("yellow", "golden", "lemon"),
    "green": ("green", "emerald", "leafy"),
    "cyan": ("cyan", "turquoise", "aqua"),
    "blue": ("blue", "azure", "cobalt"),
    "purple": ("purple", "violet", "plum"),
    "pink": ("pink", "rose", "fuchsia"),
}
TEXTURE_WORDS: dict[str, tuple[str, ...]] = {
    "plain": ("plain", "solid", "flat"),
    "striped": ("striped", "stripy", "banded"),
    "dotted": ("dotted", "spotted", "polka-dot"),
    "checkered": ("checkered", "chequered", "checked"),
}
BACKGROUND_WORDS: dict[str, tuple[str, ...]] = {
    "white": ("white",),
    "gray": ("gray", "grey"),
    "black": ("black", "dark"),
    "sand": ("sand", "beige"),
}
WORDS: dict[str, dict[str, tuple[str, ...]]] = {
    "shape": SHAPE_WORDS,
    "colour": COLOUR_WORDS,
    "texture": TEXTURE_WORDS,
    "background": BACKGROUND_WORDS,
}

# How often training captions name each attribute.
NAME_PROBABILITY = {"shape": 0.85, "colour": 0.8, "texture": 0.7, "background": 0.45}

_NOUNS_FOR_UNNAMED_SHAPE = ("shape", "object", "thing", "figure")
_PREFIXES = ("a", "a", "a picture of a", "an image of a", "a drawing of a", "a photo of a", "there is a")


def _pick(rng: np.random.Generator, options: tuple[str, ...], synonyms: bool) -> str:
    return options[rng.integers(len(options))] if synonyms else options[0]


def _article_fix(text: str) -> str:
    """'a orange' -> 'an orange' (cheap English)."""
    words = text.split(" ")
    for i in range(len(words) - 1):
        if words[i] in ("a", "A") and words[i + 1][:1] in "aeiou":
            words[i] = words[i] + "n"
    return " ".join(words)


def caption(
    names: dict[str, str | None],
    rng: np.random.Generator,
    *,
    synonyms: bool = True,
) -> str:
    """Compose one caption naming exactly the attributes in ``names`` whose value is not None.

    ``names`` maps attribute -> canonical value (or None for "leave unnamed").
    """
    shape = names.get("shape")
    colour = names.get("colour")
    texture = names.get("texture")
    background = names.get("background")
    noun = _pick(rng, SHAPE_WORDS[shape], synonyms) if shape else _pick(rng, _NOUNS_FOR_UNNAMED_SHAPE, True)
    col = _pick(rng, COLOUR_WORDS[colour], synonyms) if colour else None
    tex = _pick(rng, TEXTURE_WORDS[texture], synonyms) if texture else None
    bg = _pick(rng, BACKGROUND_WORDS[background], synonyms) if background else None

    form = int(rng.integers(4))
    prefix = _PREFIXES[rng.integers(len(_PREFIXES))]
    if form == 0 or (col is None and tex is None):
        # "a striped red star"
        core = " ".join(w for w in (prefix, tex, col, noun) if w)
    elif form == 1:
        # "a red star with a striped pattern"
        core = " ".join(w for w in (prefix, col, noun) if w)
        if tex:
            core += f" with a {tex} pattern"
    elif form == 2:
        # "a star, red, in a striped style"
        core = f"{prefix} {noun}"
        if col:
            core += f", {col}"
        if tex:
            core += f", in a {tex} style"
    else:
        # "a star coloured red, striped"
        core = f"{prefix} {noun}"
        if col:
            core += f" coloured {col}"
        if tex:
            core += f", {tex}"
    if bg:
        core += f" on a {bg} background"
    return _article_fix(core)


def training_caption(scene: Scene, rng: np.random.Generator) -> str:
    """A random caption for a rendered scene; each attribute named with NAME_PROBABILITY."""
    if scene.shape is None:
        bg = _pick(rng, BACKGROUND_WORDS[scene.background], True)
        return _article_fix(f"an empty {bg} background")
    names = {
        k: (v if rng.random() < NAME_PROBABILITY[k] else None) for k, v in scene.labels().items()
    }
    return caption(names, rng)


def all_words() -> list[str]:
    """Every attribute word used in captions (for vocabulary checks)."""
    return sorted({w for table in WORDS.values() for opts in table.values() for w in opts})
