"""Held-out phrasing prompt sets: the world's concepts in sentence forms its training captions never use.

A method can keep every kept concept on the project's own neighbour prompts (which share the training
captions' grammar) and still lose them under other wording: with other word orders, filler words and no
article, the README's ESD-x circle erasure turned most "cross" prompts into hearts (issue 18, part 5). So
every erasable concept ``C`` of attribute ``A`` gets a companion set ``<A>-<C>-phrasing.csv`` next to its
prompt set, with three groups, each phrased in one of ``FORMS`` (the ``phrasing`` column names which):

- ``target``: names ``C`` (canonical words only: this tests phrasing, not synonyms);
- ``neighbour``: another value of ``A`` with the attributes the target prompts use;
- ``other``: ``A`` left unnamed, only other attributes named.

The label columns are those of the concept's prompt set, so the same judge and metrics apply (the
worst kept concept of ``neighbour`` is the number to watch). The grammar is separate from the training
captions' (``erasure.world.captions``): no form starts with one of their leads ("a", "a picture of a",
"there is a", ...) followed by the attribute words in their order, and a test checks that every prompt
names exactly its labels. Everything is a pure function of ``seed`` (``scripts/make_world_prompts.py``).
"""

from __future__ import annotations

import functools
from typing import Callable

import numpy as np

from erasure.evaluation.prompts import PromptSet
from erasure.evaluation.world_prompts import (
    WORLD1_VOCABULARY,
    Labels,
    Vocabulary,
    _choice,
    _distinct_rows,
    _records,
    _with_articles,
    concept_label_draws,
    world_concepts,
)
from erasure.world.render import WORLDS

PHRASING_GROUP_SIZES: dict[str, int] = {"target": 24, "neighbour": 40, "other": 40}

# Nouns for an object whose kind the prompt does not name (the training captions use shape/object/thing/figure).
_UNNAMED = ("item", "something")


def _core(w: dict[str, str | None], rng: np.random.Generator) -> tuple[str, str]:
    """The adjectives and the noun: (e.g. 'striped red', 'circle'); shape unnamed -> a neutral noun."""
    noun = w.get("shape") or _choice(rng, _UNNAMED)
    adjectives = [x for x in (w.get("colour"), w.get("texture")) if x]
    if rng.random() < 0.5:
        adjectives.reverse()
    return " ".join(adjectives), noun


def _bg(w: dict[str, str | None], rng: np.random.Generator, forms: tuple[str, ...]) -> str:
    b = w.get("background")
    return f" {_choice(rng, forms).format(b=b)}" if b else ""


# Each form: words (canonical, None = unnamed) -> prompt. Kept apart from the training captions' grammar.
def _comma_list(w, rng):  # word order: noun first, attributes listed after it
    parts = [w.get("shape") or _choice(rng, ("item", "object"))] + [x for x in (w.get("colour"), w.get("texture")) if x]
    text = ", ".join(parts)
    return text + (f", {w['background']} background" if w.get("background") else "")


def _no_article(w, rng):  # no article, bare noun phrase
    adjectives, noun = _core(w, rng)
    noun = w.get("shape") or "object"
    return " ".join(x for x in (adjectives, noun) if x) + _bg(w, rng, ("over {b}", "{b} background"))


def _filler(w, rng):  # filler words around an ordinary noun phrase
    adjectives, noun = _core(w, rng)
    lead = _choice(rng, ("um, just a", "okay so basically a", "well, maybe a", "hmm, simply a", "just one"))
    tail = _choice(rng, (" please", " i guess", " or so", " really", ""))
    return _with_articles(" ".join(x for x in (lead, adjectives, noun) if x) + _bg(w, rng, ("on {b}",)) + tail)


def _imperative(w, rng):  # a request
    adjectives, noun = _core(w, rng)
    verb = _choice(rng, ("draw", "show me", "make", "paint", "render"))
    text = _with_articles(" ".join(x for x in (verb, "a", adjectives, noun) if x))
    return text + _bg(w, rng, ("on {b}", "over a {b} backdrop")) + _choice(rng, (".", "!", ""))


def _question(w, rng):  # a question
    adjectives, noun = _core(w, rng)
    lead = _choice(rng, ("can you show a", "could i get a", "what about a", "would you draw a"))
    return _with_articles(" ".join(x for x in (lead, adjectives, noun) if x)) + _bg(w, rng, ("on {b}",)) + "?"


def _predicate(w, rng):  # the attributes as a predicate: 'the circle is red and striped'
    noun = w.get("shape") or _choice(rng, ("item", "object"))
    adjectives = [x for x in (w.get("colour"), w.get("texture")) if x]
    if not adjectives:
        return f"the {noun} alone" + _bg(w, rng, ("with {b} behind it",))
    return f"the {noun} is {' and '.join(adjectives)}" + _bg(w, rng, ("with {b} behind it",))


def _wish(w, rng):  # first person
    adjectives, noun = _core(w, rng)
    lead = _choice(rng, ("i want a", "i would like a", "we need a", "i picture a"))
    return _with_articles(" ".join(x for x in (lead, adjectives, noun) if x)) + _bg(w, rng, ("in front of {b}",))


def _key_value(w, rng):  # a tag list
    parts = [f"{k}: {w[a]}" for a, k in (("shape", "object"), ("colour", "colour"), ("texture", "pattern"),
                                           ("background", "backdrop")) if w.get(a)]
    return "; ".join(parts) if parts else "object: unspecified"


FORMS: dict[str, Callable[[dict, np.random.Generator], str]] = {
    "word-order": _comma_list, "no-article": _no_article, "filler": _filler, "imperative": _imperative,
    "question": _question, "predicate": _predicate, "first-person": _wish, "tags": _key_value,
}


def phrasing_prompt_set(attribute: str, value: str, *, seed: int = 0,
                        vocabulary: Vocabulary = WORLD1_VOCABULARY) -> PromptSet:
    """The held-out phrasing companion of ``concept_prompt_set(attribute, value)`` (module docstring)."""
    v_ = vocabulary
    name = f"{v_.prefix}-{attribute}-{value}-phrasing"
    rng, draws = concept_label_draws(attribute, value, name, seed, v_)
    form_names = tuple(FORMS)

    def phrase(group: str, i: int) -> tuple[str, Labels]:
        labels = draws[group](i)
        form = form_names[i % len(form_names)]
        words = {a: v_.words[a][v][0] if v else None for a, v in labels.items()}
        return FORMS[form](words, rng), {**labels, "phrasing": form}

    makers = {group: functools.partial(phrase, group) for group in PHRASING_GROUP_SIZES}
    rows = [(group, *row) for group, make in makers.items()
            for row in _distinct_rows(make, PHRASING_GROUP_SIZES[group])]
    return _records(name, value, rows, rng, seed, v_, extra_columns=("phrasing",))


def phrasing_prompt_sets(seed: int = 0, world: int = 1) -> dict[str, PromptSet]:
    """Every erasable concept's phrasing set, keyed by its path below the packaged ``prompts/``
    (``shapeworld/shape-star-phrasing.csv``; world 2's under ``shapeworld2/``)."""
    vocab = Vocabulary(WORLDS[world])
    return {f"{vocab.prefix}/{a}-{v}-phrasing.csv": phrasing_prompt_set(a, v, seed=seed, vocabulary=vocab)
            for a, v in world_concepts(world)}
