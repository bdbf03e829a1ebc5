"""Gradient-free probes of an erased model: Ring-A-Bell's concept vector in embedding space, diffusion completion
and the noise probe. Each tries a few variants per prompt and stops at the first success.

- **Ring-A-Bell** (``chiayi-hsu/Ring-A-Bell`` ``Get_Concept_Vector.ipynb``; the no-search variant of
  ``CharlesGong12/RECE`` ``attack_methods/RingABell.py``): ``v = mean_i(E(with_i) - E(without_i))`` over the full
  77 x d last hidden state of the text encoder, for prompt pairs with and without the concept; the UNet is
  conditioned on ``E(prompt) + eta v`` for each eta in turn.
- **Diffusion completion** (``kevinlu4588/WhenAreConceptsErased`` ``src/probes``): the original model runs the
  first k sampler steps, the erased model (its UNet and its text encoder) finishes.
- **Noise probe** (same repository): DDIM eta x initial-noise scale, one sample each.
"""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import torch

from erasure.attacks.core import Attempt, AttackContext, encode, initial_latents, sample_from_embeddings
from erasure.attacks.settings import GENERIC_TEMPLATES, number_list
from erasure.errors import ErasureError


def concept_vector(pipe, with_concept: Sequence[str], without_concept: Sequence[str]) -> torch.Tensor:
    """Ring-A-Bell's concept vector: the mean over pairs of E(with) - E(without), (77, d), float32."""
    if len(with_concept) != len(without_concept) or not with_concept:
        raise ErasureError(f"concept vector needs pairs: got {len(with_concept)} prompts with the concept and "
                           f"{len(without_concept)} without")
    return (encode(pipe, list(with_concept)).float() - encode(pipe, list(without_concept)).float()).mean(0)


def concept_pairs(pipe, concept: str, *, templates: Sequence[str] = (), anchor: str = "",
                  pairs_file: str | None = None) -> tuple[list[str], list[str]]:
    """(with, without) prompts: from ``pairs_file`` (CSV with columns with, without), or ``templates`` (default:
    the model profile's template set, else generic ones) filled with the concept and with ``anchor``."""
    from erasure.text import concept_template_set, fill_template

    if pairs_file is not None:
        path = Path(pairs_file)
        if not path.is_file():
            raise ErasureError(f"pairs file {pairs_file} not found; give a CSV with columns with, without")
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows or not {"with", "without"} <= set(rows[0]):
            raise ErasureError(f"pairs file {pairs_file} needs the columns with, without (one pair per row)")
        return [r["with"] for r in rows], [r["without"] for r in rows]
    if not templates:
        from erasure.profiles import profile_of

        profile = profile_of(pipe)
        make = concept_template_set(profile.default_templates) if profile is not None else None
        templates = make(concept) if make is not None else GENERIC_TEMPLATES
    return [fill_template(t, concept) for t in templates], [fill_template(t, anchor) for t in templates]


class RingABell:
    def __init__(self, config) -> None:
        self.config = config
        self.etas = number_list("etas", config.etas)

    def prepare(self, context: AttackContext) -> None:
        c = self.config
        pipe = context.models.use(c.vector_from)
        with_, without = concept_pairs(pipe, context.concept, templates=c.templates, anchor=c.anchor,
                                       pairs_file=c.pairs_file)
        self.pairs = len(with_)
        self.vector = concept_vector(pipe, with_, without)

    def attack_prompt(self, context: AttackContext, index: int) -> Attempt:
        pipe = context.models.use("erased")
        prompt, seed = context.prompts[index], context.seeds[index]
        base = encode(pipe, [prompt]).float()
        image = None
        for j, eta in enumerate(self.etas):
            image = sample_from_embeddings(pipe, base + eta * self.vector.to(base.device), [seed], context.settings)[0]
            if context.decide(image[None])[0]:
                return Attempt(True, f"{prompt} + {eta:g} v", image, step=j, tries=j + 1,
                               details={"eta": eta, "pairs": self.pairs})
        return Attempt(False, f"{prompt} + {self.etas[-1]:g} v", image, None, len(self.etas), {"pairs": self.pairs})


def completion_images(models, prompt: str, seed: int, settings, k: int):
    """The image whose first ``k`` sampler steps the original model runs and the rest the erased one (its UNet
    and its text encoder): one pipeline with the erasure result switched mid-run, or two pipelines (the original's
    runs, its UNet swapped for the erased pipeline's at step k and restored after; the VAE is the original's)."""
    if models.result is None and models.has_original and models.use("original") is models.use("erased"):
        # the unedited model attacked as it is: original and erased are one model, completion is plain sampling
        pipe = models.use("erased")
        return sample_from_embeddings(pipe, encode(pipe, [prompt]), [seed], settings)
    two = models.result is None  # two pipelines: the original's runs, its UNet swapped for the erased one's
    pipe = models.use("original")
    own_unet = pipe.unet
    conditioning = encode(pipe, [prompt])

    def switch(pipeline, step: int, timestep, tensors):
        if step == k - 1:
            erased = models.use("erased")
            if two:
                pipeline.unet = erased.unet
            positive = encode(erased, [prompt])
            if pipeline.do_classifier_free_guidance:
                positive = torch.cat([encode(erased, [settings.negative_prompt or ""]), positive])
            tensors["prompt_embeds"] = positive
        return tensors

    latents = initial_latents(pipe, [seed], settings)
    negative = encode(pipe, [settings.negative_prompt or ""])
    pipe.set_progress_bar_config(disable=True)
    try:
        images = pipe(prompt_embeds=conditioning, negative_prompt_embeds=negative, num_inference_steps=settings.steps,
                      guidance_scale=settings.guidance, eta=settings.eta, latents=latents, height=settings.height,
                      width=settings.width, output_type="np", callback_on_step_end=switch,
                      callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"]).images
    finally:
        pipe.unet = own_unet
    models.use("erased")
    import numpy as np

    return np.clip(np.rint(images * 255), 0, 255).astype(np.uint8)


class Completion:
    def __init__(self, config) -> None:
        self.config = config
        self.steps = number_list("steps", config.steps, minimum=1, integer=True)

    def prepare(self, context: AttackContext) -> None:
        too_many = [k for k in self.steps if k >= context.settings.steps]
        if too_many:
            raise ErasureError(f"completion step {too_many[0]} is not below the sampler's {context.settings.steps} steps; "
                               "the erased model would run no step")

    def attack_prompt(self, context: AttackContext, index: int) -> Attempt:
        prompt, seed = context.prompts[index], context.seeds[index]
        image = None
        with torch.no_grad():
            for j, k in enumerate(self.steps):
                image = completion_images(context.models, prompt, seed, context.settings, k)[0]
                if context.decide(image[None])[0]:
                    return Attempt(True, f"{prompt} (original model's first {k} steps)", image, j, j + 1, {"k": k})
        return Attempt(False, f"{prompt} (original model's first {self.steps[-1]} steps)", image, None,
                       len(self.steps), {})


class NoiseProbe:
    def __init__(self, config) -> None:
        self.config = config
        self.grid = [(e, s) for e in number_list("etas", config.etas, minimum=0)
                     for s in number_list("scales", config.scales, minimum=0)]

    def prepare(self, context: AttackContext) -> None:
        pass

    def attack_prompt(self, context: AttackContext, index: int) -> Attempt:
        pipe = context.models.use("erased")
        prompt, seed = context.prompts[index], context.seeds[index]
        conditioning = encode(pipe, [prompt])
        scheduler = type(pipe.scheduler).__name__
        image = None
        for j, (eta, scale) in enumerate(self.grid):
            latents = initial_latents(pipe, [seed], context.settings, scale=scale)
            image = sample_from_embeddings(pipe, conditioning, [seed], replace(context.settings, eta=eta),
                                           latents=latents)[0]
            if context.decide(image[None])[0]:
                return Attempt(True, f"{prompt} (eta {eta:g}, noise x{scale:g})", image, j, j + 1,
                               {"eta": eta, "scale": scale, "scheduler": scheduler})
        return Attempt(False, f"{prompt} (eta/noise sweep)", image, None, len(self.grid), {"scheduler": scheduler})
