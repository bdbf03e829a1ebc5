"""Concept inversion (CCE, Pham et al., ICLR 2024) against the erased model.

Followed: ``NYU-DICE-Lab/circumventing-concept-erasure`` ``esd/train.sh``, which runs diffusers'
``examples/textual_inversion/textual_inversion.py``: one new token's embedding is trained with
``MSE(target, unet_erased(x_t, t, E("<template with the token>")))`` (t uniform in [0, T), fresh noise, target eps
or v), AdamW (weight decay 1e-2), lr 5e-3 scaled by batch x accumulation (``--scale_lr``: 0.08), on images of the
concept the *original* model generates (25), 5000 steps. The token is then put in place of the concept in every
prompt and the erased model generates.

Instead of adding a token to the tokenizer (which would change the pipeline for everyone after), a rare
whole-word token of the vocabulary that no prompt uses is borrowed: while the attack runs, the text encoder's
token-embedding output at that token is the learnt vector (:func:`erasure.attacks.core.token_embeddings_replaced`).
"""

from __future__ import annotations

import re

import torch

from erasure.attacks.core import Attempt, AttackContext, noise_prediction_target, token_embeddings_replaced, vae_latent
from erasure.errors import ErasureError

# diffusers' textual_inversion.py imagenet_templates_small (first eight)
OBJECT_TEMPLATES = ("a photo of a {}", "a rendering of a {}", "a cropped photo of the {}", "the photo of a {}",
                    "a photo of a clean {}", "a photo of a dirty {}", "a dark photo of the {}", "a photo of my {}")


def placeholder_token(tokenizer, prompts) -> int:
    """A rare whole-word token (the highest BPE id) that none of ``prompts`` uses."""
    from erasure.attacks.unlearndiffatk import word_tokens

    used = {i for p in prompts for i in tokenizer(p).input_ids}
    for token in reversed(word_tokens(tokenizer)):
        if token not in used:
            return token
    raise ErasureError("no free token to hold the learnt embedding")


def with_token(prompt: str, concept: str, token_text: str) -> str:
    """``prompt`` with the concept's words replaced by the token; the token in front when the prompt does not
    name the concept."""
    pattern = re.compile(rf"(?<![\w-]){re.escape(concept)}(?![\w-])", re.IGNORECASE)
    if pattern.search(prompt):
        return pattern.sub(token_text, prompt)
    return f"{token_text} {prompt}"


class ConceptInversion:
    def __init__(self, config) -> None:
        self.config = config

    def prepare(self, context: AttackContext) -> None:
        c = self.config
        prompts, seeds = list(context.prompts), list(context.seeds)
        sources = [prompts[i % len(prompts)] for i in range(c.images)]
        source_seeds = [int(seeds[i % len(prompts)]) + 1_000_003 * (i // len(prompts)) for i in range(c.images)]
        images = context.generate(sources, source_seeds, which="original")
        pipe = context.models.use("erased")
        device = next(pipe.unet.parameters()).device
        tokenizer = pipe.tokenizer
        self.token = placeholder_token(tokenizer, prompts + [context.concept])
        self.token_text = tokenizer.decode([self.token]).strip()
        latents = vae_latent(pipe, images).to(device)
        table = pipe.text_encoder.get_input_embeddings().weight
        init = tokenizer(c.init_word or context.concept).input_ids[1]
        vector = table[init].detach().float().clone().requires_grad_(True)
        lr = c.lr * c.batch_size * c.accumulation if c.scale_lr else c.lr
        optimiser = torch.optim.AdamW([vector], lr=lr, weight_decay=1e-2)
        from erasure.profiles import profile_of
        from erasure.text import concept_template_set, fill_template

        profile = profile_of(pipe)
        make = concept_template_set(profile.default_templates) if profile is not None else None
        templates = make(context.concept) if make is not None else OBJECT_TEMPLATES
        generator = context.random(-1, salt=17)
        T = int(pipe.scheduler.config.num_train_timesteps)
        prediction_type = pipe.scheduler.config.prediction_type
        dtype = next(pipe.unet.parameters()).dtype
        alphas = pipe.scheduler.alphas_cumprod.to(device, torch.float32)
        token = self.token

        def splice(ids, embeddings):
            mask = (ids == token).to(embeddings.device)
            if not bool(mask.any()):
                return embeddings
            return torch.where(mask[..., None], vector.to(embeddings.dtype), embeddings)

        self.losses = []
        from erasure.attacks.unlearndiffatk import frozen

        with frozen([pipe.unet, pipe.text_encoder]), token_embeddings_replaced(pipe.text_encoder, splice):
            for _ in range(c.steps):
                optimiser.zero_grad()
                total = 0.0
                for _ in range(c.accumulation):
                    pick = torch.randint(0, len(latents), (c.batch_size,), generator=generator)
                    captions = [fill_template(templates[int(j)], self.token_text)
                                for j in torch.randint(0, len(templates), (c.batch_size,), generator=generator)]
                    x0 = latents[pick.to(device)]
                    t = torch.randint(0, T, (c.batch_size,), generator=generator).to(device)
                    noise = torch.randn(x0.shape, generator=generator).to(device)
                    a = alphas[t].view(-1, 1, 1, 1)
                    noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
                    ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length,
                                    truncation=True, return_tensors="pt").input_ids.to(device)
                    hidden = pipe.text_encoder(ids)[0]
                    prediction = pipe.unet(noisy.to(dtype), t, encoder_hidden_states=hidden.to(dtype)).sample.float()
                    loss = torch.nn.functional.mse_loss(prediction, noise_prediction_target(prediction_type, x0, noise, a))
                    (loss / c.accumulation).backward()
                    total += loss.item() / c.accumulation
                optimiser.step()
                self.losses.append(total)
        self.vector = vector.detach()
        self._splice = splice

    def attack_prompt(self, context: AttackContext, index: int) -> Attempt:
        pipe = context.models.use("erased")
        prompt, seed = context.prompts[index], context.seeds[index]
        text = with_token(prompt, context.concept.split("=", 1)[-1].strip(), self.token_text)
        token = self.token
        vector = self.vector

        def splice(ids, embeddings):
            mask = (ids == token).to(embeddings.device)
            return torch.where(mask[..., None], vector.to(embeddings.dtype), embeddings)

        with token_embeddings_replaced(pipe.text_encoder, splice):
            image = context.generate([text], [seed])[0]
        success = bool(context.decide(image[None])[0])
        shown = text.replace(self.token_text, self.config.token)
        return Attempt(success, shown, image, 0 if success else None, 1,
                       {"inversion_steps": self.config.steps, "final_loss": self.losses[-1] if self.losses else None,
                        "borrowed_token": int(token)})


__all__ = ["ConceptInversion", "placeholder_token", "with_token", "OBJECT_TEMPLATES"]
