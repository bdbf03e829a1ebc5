"""The built-in world's profile (erasure.profiles): its concept kinds, default templates and rendered concept
images with exact masks. Attached to the pipeline by erasure.models.load_pipeline."""

from __future__ import annotations

import numpy as np

from erasure.profiles import ModelProfile
from erasure.world.render import COLOURS, SHAPES, TEXTURES

CONCEPT_KINDS: dict[str, tuple[str, ...]] = {"shape": tuple(SHAPES), "colour": tuple(COLOURS),
                                             "texture": tuple(TEXTURES)}


def rendered_concept_images(pipe, concept: str, n: int, rng: np.random.Generator):
    """(latents, masks in [0, 1] at image resolution, caption prompts) of ``n`` renders showing ``concept``,
    or None when ``concept`` is not one of the world's values."""
    import torch

    from erasure.world.captions import caption
    from erasure.world.render import render_batch, sample_world_scene

    profile = getattr(pipe, "erasure_profile", None) or PROFILE
    attribute = profile.kind_of(concept)
    if attribute is None:
        return None
    if attribute in ("identity", "halo"):  # world 2: an identity's renders (look + mark), haloed objects
        from erasure.world.captions import _world2_caption, identity_caption
        from erasure.world.render import WORLD2, sample_world_scene

        kw = {"identity": concept} if attribute == "identity" else {"halo": True}
        scenes = [sample_world_scene(rng, WORLD2, **kw) for _ in range(n)]
        prompts = [identity_caption(concept, None, rng) if attribute == "identity" else
                   _world2_caption({**s.labels(), "background": None}, rng, False, "named") for s in scenes]
        images, masks = render_batch(scenes)
        if attribute == "halo":  # the halo, not the object, is the concept's region
            from erasure.world.render import halo_mask

            masks = np.stack([halo_mask(m, m.shape[0]) for m in masks])
    else:
        spec = _spec_of(profile)
        scenes = [sample_world_scene(rng, spec, **{attribute: concept}) for _ in range(n)]
        images, masks = render_batch(scenes)
        prompts = [caption({**s.labels(), "background": None}, rng, synonyms=False) if spec.version == 1 else
                   _world2_names_caption(s, rng) for s in scenes]
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1).to(pipe.vae.device, pipe.vae.dtype)
    with torch.no_grad():
        latents = pipe.vae.encode(x).latent_dist.mean * pipe.vae.config.scaling_factor
    return latents.float(), torch.from_numpy(masks).float()[:, None], prompts


def world_templates(concept: str) -> tuple[str, ...]:
    """Templates for a built-in-world concept that cover the contexts its captions put it in: a shape
    after colours and textures, a colour before shapes, a texture before colours and shapes."""
    colours, shapes, textures = list(COLOURS), list(SHAPES), [t for t in TEXTURES if t != "plain"]
    if concept in SHAPES:
        return ("{}", "a {}", *(f"a {c} {{}}" for c in colours), *(f"a {t} {{}}" for t in textures),
                *(f"a picture of a {t} {c} {{}}" for t, c in zip(textures * 3, colours[::-1])))
    if concept in COLOURS:
        return ("{}", "a {} shape", *(f"a {{}} {s}" for s in shapes),
                *(f"a drawing of a {t} {{}} {s}" for t, s in zip(textures * 3, shapes[::-1])))
    return ("{}", "a {} shape", *(f"a {{}} {s}" for s in shapes), *(f"a {{}} {c} {s}" for c, s in zip(colours, shapes[::-1])))


def world_caption_templates(concept: str, n: int = 32, seed: int = 7) -> tuple[str, ...]:
    """Templates drawn from the world's own caption grammar (every form: "a {} on a gray background",
    "a {}, red, in a striped style", ...), the concept's canonical word as the slot and the other
    attributes random; seeded, so an edit is reproducible (the evaluator's prompts use other seeds)."""
    from erasure.world import captions as cap
    from erasure.world.render import BACKGROUNDS

    values = {"shape": list(SHAPES), "colour": list(COLOURS), "texture": list(TEXTURES), "background": list(BACKGROUNDS)}
    attribute = next((a for a, vs in values.items() if concept in vs), None)
    if attribute is None:
        return ("{}",)
    rng = np.random.default_rng(seed + sum(map(ord, concept)))
    out: list[str] = []
    while len(out) < n:
        names = {a: (concept if a == attribute else
                     (str(vs[rng.integers(len(vs))]) if rng.random() < cap.NAME_PROBABILITY[a] else None))
                 for a, vs in values.items()}
        if attribute != "shape" and names["shape"] is None:
            names["shape"] = str(SHAPES[rng.integers(len(SHAPES))])
        words = cap.caption(names, rng, synonyms=False).split(" ")
        if concept in words:
            words[words.index(concept)] = "{}"
            template = " ".join(words)
            if template not in out:
                out.append(template)
    return tuple(out)


def vocabulary() -> frozenset[str]:
    """Every word of the world's captions: attribute words with their synonyms and the grammar's own words."""
    from erasure.world import captions as cap

    grammar = {w for p in cap._PREFIXES for w in p.split()} | set(cap._NOUNS_FOR_UNNAMED_SHAPE) | {
        "an", "with", "pattern", "in", "style", "coloured", "on", "background", "empty"}
    return frozenset(cap.all_words()) | frozenset(grammar)


def _spec_of(profile: ModelProfile):
    from erasure.world.render import WORLD1, WORLD2

    return WORLD2 if "identity" in profile.concept_kinds else WORLD1


def _world2_names_caption(scene, rng) -> str:
    from erasure.world.captions import _world2_caption

    labels = {"shape": scene.shape, "colour": scene.colour, "texture": scene.texture, "background": None}
    return _world2_caption(labels, rng, False, None)


def vocabulary_2() -> frozenset[str]:
    """World 2's words: world 1's grammar, the 24 objects' words, the identities' names and the halo's words."""
    from erasure.world import captions as cap
    from erasure.world.render import IDENTITIES

    words = {w for phrase in cap.world2_words() for w in phrase.split()}
    words |= {w for phrase in (*cap.HALO_NAMED, *cap.HALO_IMPLIED, *cap._IDENTITY_FORMS) for w in
              phrase.replace("{}", " ").replace(",", " ").split()}
    return vocabulary() | frozenset(words) | frozenset(IDENTITIES)


PROFILE = ModelProfile(name="shapeworld", concept_kinds=CONCEPT_KINDS, default_templates="shapeworld",
                       concept_images=rendered_concept_images, vocabulary=vocabulary())


def profile_for(version: int) -> ModelProfile:
    """The profile of world ``version`` (world.json's ``world``): world 2 adds its objects, identities, the halo."""
    if version == 1:
        return PROFILE
    from erasure.world.render import WORLDS

    spec = WORLDS[version]
    kinds = {"shape": spec.shapes, "colour": spec.colours, "texture": spec.textures,
             "identity": tuple(n for n, _ in spec.identities), "halo": ("halo",)}
    return ModelProfile(name=f"shapeworld{version}", concept_kinds=kinds, default_templates="shapeworld",
                        concept_images=rendered_concept_images, vocabulary=vocabulary_2())
