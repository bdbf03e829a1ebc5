"""Quality bars of the built-in world: is every concept there, reliably, before anything is erased?

- the classifier recognises each attribute of fresh renders (>= 99%);
- CLIP zero-shot recognises each attribute of fresh renders (>= 95%);
- images generated from captions show the named shape and colour (>= 90%) and texture (>= 80%),
  for seen and held-out (never trained on) shape/colour combinations separately.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from erasure.world import captions as cap
from erasure.world.render import ATTRIBUTES, COLOURS, HELD_OUT, SHAPES, TEXTURES, render_batch, sample_scene

BARS = {
    "classifier_renders": 0.99,
    "clip_zero_shot_renders": 0.95,
    "generated_shape": 0.90,
    "generated_colour": 0.90,
    "generated_texture": 0.80,
}


def fresh_renders(n: int, seed: int):
    rng = np.random.default_rng(seed)
    scenes = [sample_scene(rng, allow_held_out=True) for _ in range(n)]
    images, _ = render_batch(scenes)
    return scenes, images


def classifier_accuracy(classifier, n: int = 2000, seed: int = 12345) -> dict[str, float]:
    from erasure.world.instruments import predict_labels

    scenes, images = fresh_renders(n, seed)
    pred = predict_labels(classifier, images)
    return {a: float(np.mean([p == s.labels()[a] for p, s in zip(pred[a], scenes)])) for a in ATTRIBUTES}


def zero_shot_prompts(attribute: str, value: str) -> list[str]:
    """Prompt ensemble for one attribute value: several templates, every synonym."""
    names = {a: None for a in ATTRIBUTES}
    names[attribute] = value
    return sorted({cap.caption(names, np.random.default_rng(k)) for k in range(12)})


@torch.no_grad()
def clip_zero_shot_accuracy(clip, tokenizer, n: int = 1000, seed: int = 23456) -> dict[str, float]:
    from erasure.world.instruments import clip_embed_images, clip_embed_texts

    scenes, images = fresh_renders(n, seed)
    img = clip_embed_images(clip, images)
    acc = {}
    for a, values in ATTRIBUTES.items():
        class_emb = []
        for v in values:
            e = clip_embed_texts(clip, tokenizer, zero_shot_prompts(a, v)).mean(0)
            class_emb.append(torch.nn.functional.normalize(e, dim=0))
        pred = (img @ torch.stack(class_emb).T).argmax(-1).tolist()
        acc[a] = float(np.mean([values[p] == s.labels()[a] for p, s in zip(pred, scenes)]))
    return acc


@dataclass(frozen=True)
class GenerationCase:
    shape: str
    colour: str
    texture: str
    prompt: str

    @property
    def held_out(self) -> bool:
        return (self.shape, self.colour) in HELD_OUT


def generation_cases(synonyms: bool = False, seed: int = 0) -> list[GenerationCase]:
    """Every shape x colour x texture, captioned 'a {texture} {colour} {shape}' (canonical words),
    or with random synonyms and templates when ``synonyms``."""
    rng = np.random.default_rng(seed)
    cases = []
    for s in SHAPES:
        for c in COLOURS:
            for t in TEXTURES:
                if synonyms:
                    prompt = cap.caption({"shape": s, "colour": c, "texture": t}, rng)
                else:
                    prompt = f"a {t} {c} {s}"
                cases.append(GenerationCase(s, c, t, prompt))
    return cases


def generation_recognition(
    pipe, classifier, cases: list[GenerationCase], seeds: list[int], settings, batch_size: int = 32
) -> tuple[dict[str, dict[str, float]], np.ndarray]:
    """Fraction of generated images whose named attributes the classifier recognises, for seen and
    held-out combinations separately; and the generated images (uint8, case-major, then seeds)."""
    from erasure.generation import generate_images
    from erasure.world.instruments import predict_labels

    prompts = [c.prompt for c in cases for _ in seeds]
    all_seeds = [s for _ in cases for s in seeds]
    images = generate_images(pipe, prompts, all_seeds, settings, batch_size=batch_size)
    pred = predict_labels(classifier, images)
    rows = [c for c in cases for _ in seeds]
    result: dict[str, dict[str, float]] = {}
    for group, keep in (("seen", lambda c: not c.held_out), ("held-out", lambda c: c.held_out)):
        idx = [i for i, c in enumerate(rows) if keep(c)]
        result[group] = {
            a: float(np.mean([pred[a][i] == getattr(rows[i], a) for i in idx])) for a in ("shape", "colour", "texture")
        }
        result[group]["n"] = len(idx)
    return result, images
