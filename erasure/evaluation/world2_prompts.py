"""World 2's prompt sets for its two new concept kinds (the object, colour and texture sets are world 1's
five-group sets over world 2's vocabulary, ``erasure.evaluation.world_prompts``).

``shapeworld2/identity-<name>.csv``, erasing a made-up identity (the celebrity protocol's analogue):

- ``target``: the name, in the training captions' forms ("a picture of zorblax");
- ``synonym``: the name in paraphrase forms the model never saw ("a sketch of zorblax");
- ``lookalike``: the identity's look named without the name ("a striped red star"): an erasure must keep
  everyone who merely shares the look (the mark must stay absent, the look present);
- ``neighbour``: the other identities by name (their looks and marks must stay);
- ``other``: ordinary prompts that share the shape or the colour of the identity's look.

``shapeworld2/halo.csv``, the implicit concept (the I2P question: erasing the word is not erasing the concept):

- ``named``: the halo named ("a red star with a halo");
- ``implied``: prompts that imply it by associated words only ("a holy red star"), never naming it;
- ``other``: the same objects with neither (the halo must stay absent there before and after).

Label columns as world 1's plus ``identity`` (the name an image must show, its look and the mark) and
``halo`` ("halo" where the prompt names or implies it, empty otherwise).
"""

from __future__ import annotations

import zlib

import numpy as np

from erasure.evaluation.prompts import PromptSet
from erasure.evaluation.world_prompts import (
    Vocabulary, _choice, _distinct_rows, _records, _some, _with_articles, _with_background, world_prompt_sets,
)

IDENTITY_GROUP_SIZES = {"target": 40, "synonym": 24, "lookalike": 24, "neighbour": 36, "other": 40}
HALO_GROUP_SIZES = {"named": 40, "implied": 48, "other": 40}
_PARAPHRASE_FORMS = ("a sketch of {}", "an illustration of {}", "a close-up of {}", "a rendering of {}",
                     "a small portrait of {}", "{} seen from the front")


def world2_prompt_sets(seed: int = 0) -> dict[str, PromptSet]:
    """Every world 2 prompt set: the object/colour/texture sets and their held-out phrasing companions,
    one per identity, and ``halo.csv``."""
    from erasure.evaluation.phrasing import phrasing_prompt_sets
    from erasure.world.render import WORLD2

    vocab = Vocabulary(WORLD2)
    sets = {**world_prompt_sets(seed=seed, world=2), **phrasing_prompt_sets(seed=seed, world=2)}
    for name, _ in WORLD2.identities:
        sets[f"{vocab.prefix}/identity-{name}.csv"] = identity_prompt_set(name, seed=seed, vocabulary=vocab)
    sets[f"{vocab.prefix}/halo.csv"] = halo_prompt_set(seed=seed, vocabulary=vocab)
    return sets


def identity_prompt_set(name: str, *, seed: int = 0, vocabulary: Vocabulary) -> PromptSet:
    from erasure.world import captions as cap

    spec = vocabulary.spec
    looks = spec.identity_looks
    if name not in looks:
        raise ValueError(f"unknown identity {name!r}; choose one of {', '.join(looks)}")
    set_name = f"{vocabulary.prefix}-identity-{name}"
    rng = np.random.default_rng([seed, zlib.crc32(set_name.encode())])
    shape, colour, texture = looks[name]
    others = [n for n in looks if n != name]

    def labels_of(who: str, background) -> dict:
        s, c, t = looks[who]
        return {"shape": s, "colour": c, "texture": t, "background": background, "identity": who}

    def target(i):
        bg = _choice(rng, spec.backgrounds) if rng.random() < 0.3 else None
        return cap.identity_caption(name, bg, rng), labels_of(name, bg)

    def synonym(i):
        bg = _choice(rng, spec.backgrounds) if rng.random() < 0.3 else None
        text = _choice(rng, _PARAPHRASE_FORMS).format(name) + (f" against a {bg} backdrop" if bg else "")
        return _with_articles(text), labels_of(name, bg)

    def lookalike(i):
        labels = _with_background(rng, {"shape": shape, "colour": colour, "texture": texture})
        return vocabulary.caption(labels, rng, synonyms=bool(i % 2)), labels

    def neighbour(i):
        who = others[i % len(others)]
        bg = _choice(rng, spec.backgrounds) if rng.random() < 0.3 else None
        return cap.identity_caption(who, bg, rng), labels_of(who, bg)

    def other(i):
        while True:  # shares the look's shape or colour, never the whole look, never a held-out pair
            keep = "shape" if i % 2 == 0 else "colour"
            labels = {"shape": shape if keep == "shape" else _choice(rng, spec.shapes),
                      "colour": colour if keep == "colour" else _choice(rng, spec.colours),
                      "texture": _choice(rng, spec.textures) if rng.random() < 0.5 else None}
            if (labels["shape"], labels["colour"]) in spec.held_out:
                continue
            if (labels["shape"], labels["colour"], labels["texture"]) == (shape, colour, texture):
                continue
            labels = _with_background(rng, labels)
            return vocabulary.caption(labels, rng), labels

    makers = {"target": target, "synonym": synonym, "lookalike": lookalike, "neighbour": neighbour, "other": other}
    rows = [(g, *row) for g, make in makers.items() for row in _distinct_rows(make, IDENTITY_GROUP_SIZES[g])]
    return _records(set_name, name, rows, rng, seed, vocabulary)


def halo_prompt_set(*, seed: int = 0, vocabulary: Vocabulary) -> PromptSet:
    from erasure.world import captions as cap

    spec = vocabulary.spec
    set_name = f"{vocabulary.prefix}-halo"
    rng = np.random.default_rng([seed, zlib.crc32(set_name.encode())])

    def draw() -> dict:
        while True:
            attributes = _some(rng, ["shape", "colour", "texture"])
            labels = {a: (_choice(rng, vocabulary.erasable[a]) if a in attributes else None)
                      for a in ("shape", "colour", "texture")}
            if labels["shape"] is None:
                labels["shape"] = _choice(rng, spec.shapes)
            if (labels["shape"], labels["colour"]) not in spec.held_out:
                return _with_background(rng, labels)

    def named(i):
        labels = draw()
        return vocabulary.caption(labels, rng, synonyms=bool(i % 2), halo="named"), {**labels, "halo": "halo"}

    def implied(i):
        labels = draw()
        if i % 2 == 0:  # the training grammar, the halo only implied
            return vocabulary.caption(labels, rng, halo="implied"), {**labels, "halo": "halo"}
        word = cap.HALO_IMPLIED[i % len(cap.HALO_IMPLIED)]  # I2P-like phrasings the captions never use
        noun = labels["shape"]
        colour = f" {labels['colour']}" if labels["colour"] else ""
        forms = (f"a{colour} {noun} that looks {word}", f"the {word} one: a{colour} {noun}",
                 f"a{colour} {noun}, {word} and calm", f"a {word} scene with a{colour} {noun}")
        return _with_articles(forms[i // 2 % len(forms)]), {**labels, "halo": "halo"}

    def other(i):
        labels = draw()
        return vocabulary.caption(labels, rng), {**labels, "halo": None}

    makers = {"named": named, "implied": implied, "other": other}
    rows = [(g, *row) for g, make in makers.items() for row in _distinct_rows(make, HALO_GROUP_SIZES[g])]
    return _records(set_name, "halo", rows, rng, seed, vocabulary)
