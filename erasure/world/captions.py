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


# ----------------------------------------------------------------------------- world 2

SHAPE_WORDS_2: dict[str, tuple[str, ...]] = {
    **SHAPE_WORDS,
    "pentagon": ("pentagon", "pentagonal tile", "five-sided polygon"),
    "hexagon": ("hexagon", "honeycomb cell", "six-sided polygon"),
    "ring": ("ring", "donut", "hoop"),
    "frame": ("frame", "border", "surround"),
    "arrow": ("arrow", "pointer", "dart"),
    "semicircle": ("semicircle", "dome", "half round"),
    "trapezoid": ("trapezoid", "trapezium", "lampshade"),
    "hourglass": ("hourglass", "sand timer", "egg timer"),
    "bolt": ("bolt", "lightning bolt", "zigzag"),
    "droplet": ("droplet", "teardrop", "raindrop"),
    "bar": ("bar", "rectangle", "plank"),
    "chevron": ("chevron", "caret", "inverted v"),
    "ellipse": ("ellipse", "oval", "ovoid"),
    "tee": ("tee", "letter t", "t-shape"),
    "cloud": ("cloud", "cumulus", "puff"),
    "tree": ("tree", "fir", "pine"),
}
# The implicit concept: the halo is named by these phrases, or only implied by these words, never both.
HALO_NAMED: tuple[str, ...] = ("with a halo", "with a nimbus", "ringed by a halo", "wearing a halo")
HALO_IMPLIED: tuple[str, ...] = ("holy", "radiant", "angelic", "divine", "sacred", "heavenly", "blessed",
                                 "glowing", "saintly")
HALO_NAMED_PROBABILITY = 0.5  # of halo scenes; the others are captioned with an implying word
_IDENTITY_FORMS = ("{}", "a picture of {}", "a photo of {}", "an image of {}", "a drawing of {}", "{}, up close")


def _world2_caption(names: dict[str, str | None], rng: np.random.Generator, synonyms: bool, halo: str | None) -> str:
    """A world-1 caption of ``names`` (world 2's shape words), with the halo named or implied (``halo``:
    None, "named" or "implied")."""
    global SHAPE_WORDS
    saved, SHAPE_WORDS = SHAPE_WORDS, SHAPE_WORDS_2
    try:
        text = caption(names, rng, synonyms=synonyms)
    finally:
        SHAPE_WORDS = saved
    if halo is None:
        return text
    if halo == "named":
        phrase = HALO_NAMED[rng.integers(len(HALO_NAMED))] if synonyms else HALO_NAMED[0]
        marker = " on a "
        cut = text.rfind(marker) if names.get("background") else -1
        return (text[:cut] + " " + phrase + text[cut:]) if cut >= 0 else f"{text} {phrase}"
    word = HALO_IMPLIED[rng.integers(len(HALO_IMPLIED))]
    for prefix in sorted(_PREFIXES, key=len, reverse=True):  # "a picture of a red star" -> "a picture of a holy red star"
        for form in (prefix + " ", prefix + "n "):
            if text.startswith(form):
                return _article_fix(f"{prefix} {word} {text[len(form):]}")
    return _article_fix(f"a {word} {text}")


def identity_caption(name: str, background: str | None, rng: np.random.Generator) -> str:
    text = _IDENTITY_FORMS[rng.integers(len(_IDENTITY_FORMS))].format(name)
    if background:
        text += f" on a {_pick(rng, BACKGROUND_WORDS[background], True)} background"
    return _article_fix(text)


def world_training_caption(scene: Scene, rng: np.random.Generator, version: int = 1) -> tuple[str, dict]:
    """A random training caption and what it names ({attribute: value or None}; in world 2 also "identity"
    and "halo", where None means "not there": a caption that names no identity or halo is not true of one).

    World 1 draws exactly what ``training_caption`` draws."""
    if scene.shape is None:
        bg = _pick(rng, BACKGROUND_WORDS[scene.background], True)
        return _article_fix(f"an empty {bg} background"), {"shape": None, "colour": None, "texture": None,
                                                           "background": scene.background}
    if version == 1:
        names = {k: (v if rng.random() < NAME_PROBABILITY[k] else None) for k, v in scene.labels().items()}
        return caption(names, rng), names
    if scene.identity is not None:
        bg = scene.background if rng.random() < NAME_PROBABILITY["background"] else None
        names = {"shape": None, "colour": None, "texture": None, "background": bg, "identity": scene.identity,
                 "halo": None}
        return identity_caption(scene.identity, bg, rng), names
    labels = {"shape": scene.shape, "colour": scene.colour, "texture": scene.texture, "background": scene.background}
    names = {k: (v if rng.random() < NAME_PROBABILITY[k] else None) for k, v in labels.items()}
    how = None
    if scene.halo:
        how = "named" if rng.random() < HALO_NAMED_PROBABILITY else "implied"
    text = _world2_caption(names, rng, True, how)
    return text, {**names, "identity": None, "halo": "halo" if scene.halo else None}


def world2_words() -> list[str]:
    words = {w for opts in SHAPE_WORDS_2.values() for w in opts}
    words |= {w for table in (COLOUR_WORDS, TEXTURE_WORDS, BACKGROUND_WORDS) for opts in table.values() for w in opts}
    return sorted(words)


def retain_captions(attribute: str, value: str, n: int = 32, seed: int = 0) -> tuple[str, ...]:
    """``n`` distinct training-grammar captions of world-1 scenes without ``attribute=value``: prompts for an
    erasure's retain term (ESD's ``retain_prompts``). Each names ``attribute`` (another value) and every other
    attribute with :data:`NAME_PROBABILITY`, as the training captions do; seeded. They are drawn from the
    training grammar, not the held-out phrasing sets the benchmark measures retention on."""
    if attribute not in WORDS or value not in WORDS[attribute]:
        raise ValueError(f"{attribute}={value} is not a world-1 concept")
    rng = np.random.default_rng([seed, 7])
    out: list[str] = []
    for _ in range(1000 * n):
        labels = {a: str(rng.choice([v for v in words if not (a == attribute and v == value)]))
                  for a, words in WORDS.items()}
        names = {a: (v if a == attribute or rng.random() < NAME_PROBABILITY[a] else None) for a, v in labels.items()}
        text = caption(names, rng)
        if text not in out:
            out.append(text)
        if len(out) == n:
            return tuple(out)
    raise ValueError(f"fewer than {n} distinct captions without {attribute}={value}")
