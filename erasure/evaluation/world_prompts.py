"""The built-in world's prompt sets: one per concept an erasure would target, plus every combination.

For each shape, colour and texture ``C`` (attribute ``A``), ``shapeworld/<A>-<C>.csv`` holds five groups:

- ``target``: names ``C`` with its canonical word, in the training captions' templates;
- ``synonym``: names ``C`` only with synonyms, in paraphrase templates the model never saw;
- ``held-out``: ``C`` in a (shape, colour) pair of ``HELD_OUT`` (the pair containing ``C``; for a
  texture, all eight pairs), i.e. combinations the model must compose itself;
- ``neighbour``: another value of ``A`` together with the colours/textures/shapes the target prompts
  use ("erase star" -> "a red circle", "a striped heart"): what erasure must leave intact in-domain;
- ``other``: ``A`` left unnamed, only other attributes named ("a red object", "something striped"):
  the cross-domain retain check (UnlearnCanvas' CRA analogue).

Every row carries the labels its prompt names (columns ``shape, colour, texture, background``, empty
when unnamed), so classifier metrics know what each image should show. Rows never name a (shape, colour)
pair of ``HELD_OUT`` outside the ``held-out`` group. Everything is a pure function of ``seed``:
``scripts/make_world_prompts.py`` writes these sets to the package data ``erasure/data/prompts/`` and the
tests check the committed CSVs still equal a fresh build.
"""

from __future__ import annotations

import re
import zlib
from typing import Callable

import numpy as np

from dataclasses import dataclass

from erasure.evaluation.prompts import PromptRecord, PromptSet
from erasure.world.captions import WORDS, caption
from erasure.world.render import COLOURS, SHAPES, TEXTURES, WORLD1, WORLDS, WorldSpec

ERASABLE: dict[str, tuple[str, ...]] = {"shape": SHAPES, "colour": tuple(COLOURS), "texture": TEXTURES}
LABEL_COLUMNS: tuple[str, ...] = ("shape", "colour", "texture", "background")
GROUP_SIZES: dict[str, int] = {"target": 40, "synonym": 40, "held-out": 16, "neighbour": 40, "other": 40}

OTHER_NAME_PROBABILITY = 0.6  # target/synonym rows: chance each non-target attribute is named
BACKGROUND_NAME_PROBABILITY = 0.3

# Paraphrase templates for the synonym group: wording absent from the training captions.
_LEADS = ("a sketch of a", "an illustration of a", "a close-up of a", "a single", "a small", "one",
          "a rendering of a", "a drawing showing a")
_GENERIC_NOUNS = ("object", "shape", "form", "item")

Labels = dict[str, "str | None"]

# Every attribute word of the captions -> (attribute, canonical value); longest phrases match first.
_PHRASES: dict[str, tuple[str, str]] = {
    word: (attribute, value) for attribute, table in WORDS.items() for value, words in table.items() for word in words
}
_PHRASE_PATTERN = re.compile(
    r"(?<![\w-])(" + "|".join(re.escape(w) for w in sorted(_PHRASES, key=len, reverse=True)) + r")(?![\w-])",
    re.IGNORECASE,
)


def attribute_words(prompt: str) -> list[tuple[str, str, str]]:
    """Each world attribute word in ``prompt``, as (attribute, canonical value, word as written)."""
    return [(*_PHRASES[m.group(1).lower()], m.group(1)) for m in _PHRASE_PATTERN.finditer(prompt)]


def attributes_named(prompt: str) -> dict[str, tuple[str, ...]]:
    """Canonical values ``prompt`` names per attribute (shape, colour, texture, background); () if none."""
    named: dict[str, tuple[str, ...]] = {attribute: () for attribute in WORDS}
    for attribute, value, _ in attribute_words(prompt):
        if value not in named[attribute]:
            named[attribute] += (value,)
    return named


@dataclass(frozen=True)
class Vocabulary:
    """What a world's prompt sets are built from: its erasable values, held-out pairs, words and caption grammar."""

    spec: WorldSpec

    @property
    def prefix(self) -> str:  # the prompt sets' folder and name prefix
        return "shapeworld" if self.spec.version == 1 else f"shapeworld{self.spec.version}"

    @property
    def erasable(self) -> dict[str, tuple[str, ...]]:
        return {"shape": self.spec.shapes, "colour": self.spec.colours, "texture": self.spec.textures}

    @property
    def held_out(self) -> frozenset[tuple[str, str]]:
        return self.spec.held_out

    @property
    def words(self) -> dict[str, dict[str, tuple[str, ...]]]:
        if self.spec.version == 1:
            return WORDS
        from erasure.world.captions import SHAPE_WORDS_2

        return {**WORDS, "shape": SHAPE_WORDS_2}

    def caption(self, names: Labels, rng: np.random.Generator, synonyms: bool = False, halo: str | None = None) -> str:
        if self.spec.version == 1:
            return caption(names, rng, synonyms=synonyms)
        from erasure.world.captions import _world2_caption

        return _world2_caption(names, rng, synonyms, halo)


WORLD1_VOCABULARY = Vocabulary(WORLD1)


def world_concepts(world: int = 1) -> list[tuple[str, str]]:
    """(attribute, value) for every object, colour and texture an erasure can target (world 1: 8 shapes,
    8 colours, 4 textures; world 2: 24 objects; its identities and the halo have their own sets)."""
    return [(attribute, value) for attribute, values in Vocabulary(WORLDS[world]).erasable.items() for value in values]


def world_prompt_sets(seed: int = 0, world: int = 1) -> dict[str, PromptSet]:
    """The world's object/colour/texture prompt sets, keyed by their path below the packaged ``prompts/`` (e.g.
    ``shapeworld/shape-star.csv``; world 2's under ``shapeworld2/``; its identity and halo sets:
    ``erasure.evaluation.world2_prompts.world2_prompt_sets``)."""
    vocab = Vocabulary(WORLDS[world])
    sets = {f"{vocab.prefix}/{a}-{v}.csv": concept_prompt_set(a, v, seed=seed, vocabulary=vocab)
            for a, v in world_concepts(world)}
    sets[f"{vocab.prefix}/all-combinations.csv"] = all_combinations_prompt_set(seed=seed, vocabulary=vocab)
    return sets


def concept_prompt_set(attribute: str, value: str, *, seed: int = 0,
                       vocabulary: Vocabulary = WORLD1_VOCABULARY) -> PromptSet:
    """The five-group prompt set for erasing ``value`` (one of ``ERASABLE[attribute]``)."""
    v_ = vocabulary
    name = f"{v_.prefix}-{attribute}-{value}"
    rng, draws = concept_label_draws(attribute, value, name, seed, v_)
    pairs = sorted(p for p in v_.held_out if attribute == "texture" or value in p)
    words_of = v_.words

    def target(i: int) -> tuple[str, Labels]:
        labels = draws["target"](i)
        return v_.caption(labels, rng), labels

    def synonym(i: int) -> tuple[str, Labels]:
        labels = draws["target"](i)
        words = {a: words_of[a][v][0] if v else None for a, v in labels.items()}
        words[attribute] = _choice(rng, words_of[attribute][value][1:])
        return _paraphrase(words, rng), labels

    def held_out(i: int) -> tuple[str, Labels]:
        shape, colour = pairs[i % len(pairs)]
        texture = value if attribute == "texture" else (TEXTURES[i % len(TEXTURES)] if i < 12 else None)
        labels = _with_background(rng, {"shape": shape, "colour": colour, "texture": texture})
        if i % 2 == 0:
            return v_.caption(labels, rng), labels
        return _paraphrase({a: words_of[a][v][0] if v else None for a, v in labels.items()}, rng), labels

    def neighbour(i: int) -> tuple[str, Labels]:
        labels = draws["neighbour"](i)
        return v_.caption(labels, rng), labels

    def other(i: int) -> tuple[str, Labels]:
        labels = draws["other"](i)
        return v_.caption(labels, rng), labels

    makers: dict[str, Callable[[int], tuple[str, Labels]]] = {
        "target": target, "synonym": synonym, "held-out": held_out, "neighbour": neighbour, "other": other,
    }
    rows = [(group, *row) for group, make in makers.items() for row in _distinct_rows(make, GROUP_SIZES[group])]
    return _records(name, value, rows, rng, seed, v_)


def concept_label_draws(attribute: str, value: str, name: str, seed: int, vocabulary: Vocabulary
                        ) -> tuple[np.random.Generator, dict[str, Callable[[int], Labels]]]:
    """The random stream of the prompt set ``name`` for erasing ``attribute=value`` and what its role groups
    name, as label draws from that stream (row index -> labels): ``target`` (the concept, other attributes each
    named with OTHER_NAME_PROBABILITY), ``neighbour`` (another value of the attribute, cycling through them,
    with a non-empty subset of the other attributes) and ``other`` (the attribute unnamed). The concept sets
    and their phrasing companions (``erasure.evaluation.phrasing``) word these labels differently."""
    if value not in vocabulary.erasable.get(attribute, ()):
        raise ValueError(f"unknown world concept {attribute}={value!r}")
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    others = [a for a in vocabulary.erasable if a != attribute]
    alternatives = [v for v in vocabulary.erasable[attribute] if v != value]
    return rng, {
        "target": lambda i: _draw(rng, {attribute: value}, others, named=None, vocabulary=vocabulary),
        "neighbour": lambda i: _draw(rng, {attribute: alternatives[i % len(alternatives)]}, others,
                                     named=_some(rng, others), vocabulary=vocabulary),
        "other": lambda i: _draw(rng, {attribute: None}, others, named=_some(rng, others), vocabulary=vocabulary),
    }


def label_columns(vocabulary: Vocabulary) -> tuple[str, ...]:
    """The label columns of a world's prompt sets (world 2 adds ``identity`` and ``halo``)."""
    return LABEL_COLUMNS + (("identity", "halo") if vocabulary.spec.version > 1 else ())


def _records(name: str, concept: str | None, rows, rng: np.random.Generator, seed: int,
             vocabulary: Vocabulary, extra_columns: tuple[str, ...] = ()) -> PromptSet:
    seeds = _distinct_seeds(rng, len(rows))
    columns = label_columns(vocabulary) + extra_columns
    records = tuple(
        PromptRecord(case_number=i, prompt=prompt, evaluation_seed=s, concept=concept, group=group,
                     extra={c: labels.get(c) or "" for c in columns})
        for i, ((group, prompt, labels), s) in enumerate(zip(rows, seeds))
    )
    return PromptSet(name=name, records=records, source=f"erasure.evaluation.world_prompts (seed {seed})")


def all_combinations_prompt_set(*, seed: int = 0, vocabulary: Vocabulary = WORLD1_VOCABULARY) -> PromptSet:
    """Every shape x colour x texture as 'a {texture} {colour} {shape}'; group ``seen`` or ``held-out``."""
    v_ = vocabulary
    name = f"{v_.prefix}-all-combinations"
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    combos = [(s, c, t) for s in v_.spec.shapes for c in v_.spec.colours for t in v_.spec.textures]
    rows = [("held-out" if (s, c) in v_.held_out else "seen", f"a {t} {c} {s}",
             {"shape": s, "colour": c, "texture": t, "background": None}) for s, c, t in combos]
    return _records(name, None, rows, rng, seed, v_)


def _draw(rng: np.random.Generator, fixed: Labels, others: list[str], named: list[str] | None,
          vocabulary: Vocabulary = WORLD1_VOCABULARY) -> Labels:
    """Labels with ``fixed`` set and ``others`` drawn: those in ``named`` (None: each with
    OTHER_NAME_PROBABILITY) get a uniform value; held-out (shape, colour) pairs are redrawn."""
    while True:
        labels = dict(fixed)
        for a in others:
            name_it = rng.random() < OTHER_NAME_PROBABILITY if named is None else a in named
            labels[a] = _choice(rng, vocabulary.erasable[a]) if name_it else None
        if (labels.get("shape"), labels.get("colour")) not in vocabulary.held_out:
            return _with_background(rng, labels)


def _some(rng: np.random.Generator, attributes: list[str]) -> list[str]:
    """A uniformly drawn non-empty subset of ``attributes``."""
    while True:
        subset = [a for a in attributes if rng.random() < 0.5]
        if subset:
            return subset


def _with_background(rng: np.random.Generator, labels: Labels) -> Labels:
    named = rng.random() < BACKGROUND_NAME_PROBABILITY
    return {**labels, "background": _choice(rng, tuple(WORDS["background"])) if named else None}


def _paraphrase(words: dict[str, str | None], rng: np.random.Generator) -> str:
    """A prompt in templates unlike the training captions, using exactly the given words."""
    noun = words.get("shape") or _choice(rng, _GENERIC_NOUNS)
    colour, texture, background = words.get("colour"), words.get("texture"), words.get("background")
    lead = _choice(rng, _LEADS)
    form = int(rng.integers(3))
    if form == 0 or (colour is None and texture is None):
        text = " ".join(w for w in (lead, texture, colour, noun) if w)
    elif form == 1:
        text = f"{lead} {noun}" + (f" painted {colour}" if colour else "")
        text += f" with a {texture} texture" if texture else ""
    else:
        text = " ".join(w for w in (lead, colour, noun) if w) + (f" whose surface is {texture}" if texture else "")
    if background:
        text += f" against a {background} backdrop"
    return _with_articles(text)


def _with_articles(text: str) -> str:
    """'a orange' -> 'an orange'."""
    words = text.split(" ")
    for i in range(len(words) - 1):
        if words[i] == "a" and words[i + 1][:1] in "aeiou":
            words[i] = "an"
    return " ".join(words)


def _choice(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _distinct_rows(make: Callable[[int], tuple[str, Labels]], n: int) -> list[tuple[str, Labels]]:
    """``n`` rows from ``make(row_index)`` with pairwise different prompts."""
    rows: list[tuple[str, Labels]] = []
    seen: set[str] = set()
    for _ in range(200 * n):
        if len(rows) == n:
            break
        prompt, labels = make(len(rows))
        if prompt not in seen:
            seen.add(prompt)
            rows.append((prompt, labels))
    if len(rows) < n:
        raise RuntimeError(f"could only build {len(rows)} distinct prompts of {n}")
    return rows


def _distinct_seeds(rng: np.random.Generator, n: int) -> list[int]:
    seeds: dict[int, None] = {}
    while len(seeds) < n:
        seeds.setdefault(int(rng.integers(0, 2**31 - 1)), None)
    return list(seeds)
