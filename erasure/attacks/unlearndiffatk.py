"""UnlearnDiffAtk (Zhang et al., ECCV 2024), for any concept, pipeline and judge.

Followed: ``OPTML-Group/Diffusion-MU-Attack``, ``src/attackers/text_grad_.py`` (the optimiser: ``TextGrad``,
``STERandSelect``, ``bisection``/``projection``, ``construct_embd``/``construct_id``, ``run``) and
``src/tasks/classifier_.py`` (``ClassifierTask.get_loss``, the schedule ``sampled_t``, ``eval``).

The erased model is used as a diffusion classifier. For ``k`` adversarial token slots a distribution over the
vocabulary per slot (``[k, V]``, initialised uniform) is optimised: each step draws a one-hot sample per row
(straight-through: the backward pass is ``hardtanh`` of the incoming gradient), splices ``one_hot @ E`` (E: the
token-embedding matrix) into the prompt's token embeddings at the slots, and minimises

    MSE(eps, eps_erased(sqrt(a_t) x0 + sqrt(1 - a_t) eps, t, c_adv))

with fresh ``eps`` each step, ``x0`` the VAE latent (posterior mean times the VAE's scaling factor) of the image
the *original* model generates from the same prompt and seed, Adam (lr 0.01, weight decay 0.1) and a
projection of every row onto the probability simplex after each step. The schedule is the reference's: for t
in 10, 30, ..., 990 (``timesteps`` blocks: ``range(T/(2n), T, T/n)``), ``steps_per_timestep`` (40) steps each;
after each block the argmax tokens are decoded to text, the text is generated once by the erased model
(re-tokenised, as the reference's ``eval`` does) and judged, and the attack stops at the first success.

Where this differs from the reference, and why:

- the projection is the exact sort-based one (Duchi et al. 2008) instead of bisection to 1e-5; the two agree
  to the bisection's tolerance (tested), and the exact one is ~20 times fewer passes over the 49408 columns;
- the layout keeps the prompt's end token and pads with the tokenizer's pad token (the reference drops the k
  tokens after the prompt, which for SD 1.x are end tokens, so the two agree there; for SD 2.x, which pads with
  "!", the reference would lose the end token);
- the start, end and pad tokens are never candidates (decoding drops them, so choosing one would silently
  shorten the prompt);
- for a v-prediction model the target is v, not eps (the reference is SD 1.4 only);
- ``vocabulary="words"`` restricts the candidates to whole-word tokens that re-tokenise to themselves, so the
  decoded prompt re-tokenises to exactly the optimised ids (with ``"all"``, the reference's choice, it may not:
  each result records whether it did).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np
import torch

from erasure.attacks.core import Attempt, AttackContext, noise_prediction_target, token_embeddings_replaced, vae_latent
from erasure.errors import ErasureError
from erasure.attacks.settings import PLACEMENTS, VOCABULARIES, UnlearnDiffAtkConfig

# --- the optimiser's pieces, each tested against a formula -------------------------------------------

def project_onto_simplex(v: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of each row of ``v`` onto {x >= 0, sum x = 1}, exactly (sort-based)."""
    n = v.shape[-1]
    u, _ = torch.sort(v, dim=-1, descending=True)
    cumulative = u.cumsum(-1) - 1
    index = torch.arange(1, n + 1, device=v.device, dtype=v.dtype)
    positive = (u - cumulative / index) > 0
    rho = positive.to(v.dtype).mul(index).argmax(-1, keepdim=True)  # the last index where positive holds
    theta = cumulative.gather(-1, rho) / (rho + 1).to(v.dtype)
    return (v - theta).clamp_min(0)


def project_onto_simplex_bisection(v: torch.Tensor, xi: float = 1e-5) -> torch.Tensor:
    """The reference's projection (``TextGrad.bisection``, eps=1, ub=1): bisection on mu until the bracket is
    narrower than ``xi``; kept to test :func:`project_onto_simplex` against."""
    rows = []
    for a in v.reshape(-1, v.shape[-1]):
        clipped = a.clamp(0, 1)
        if abs(clipped.sum().item() - 1) <= xi:
            rows.append(clipped)
            continue
        low, high = (a - 1).min().item(), a.max().item()
        mid = (low + high) / 2
        while abs(high - low) > xi:
            mid = (low + high) / 2
            g = (a - mid).clamp(0, 1).sum().item() - 1
            if g == 0:
                break
            if g > 0:
                low = mid
            else:
                high = mid
        rows.append((a - mid).clamp(0, 1))
    return torch.stack(rows).reshape(v.shape)


class StraightThroughSample(torch.autograd.Function):
    """Forward: one multinomial one-hot sample per row of the distribution; backward: ``hardtanh`` of the
    incoming gradient (the reference's ``STERandSelect``)."""

    @staticmethod
    def forward(ctx, probabilities: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        picks = torch.multinomial(probabilities, 1, generator=generator).view(-1)
        return torch.nn.functional.one_hot(picks, probabilities.shape[-1]).to(probabilities.dtype)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        return torch.nn.functional.hardtanh(grad_output), None


def timestep_schedule(n: int, train_timesteps: int = 1000) -> list[int]:
    """The reference's ``sampled_t``: ``range(T // n // 2, T, T // n)[:n]`` (n = 50: 10, 30, ..., 990)."""
    if n > train_timesteps:
        raise ErasureError(f"timesteps {n} is more than the model's {train_timesteps} training timesteps")
    return list(range(train_timesteps // n // 2, train_timesteps, train_timesteps // n))[:n]


@dataclass(frozen=True)
class SlotLayout:
    """The 77 ids of the adversarial prompt with the slots at ``slots`` (their ids are placeholders)."""

    ids: tuple[int, ...]
    slots: tuple[int, ...]

    def with_tokens(self, tokens: Sequence[int]) -> list[int]:
        ids = list(self.ids)
        for position, token in zip(self.slots, tokens):
            ids[position] = int(token)
        return ids


def slot_layout(tokenizer, prompt: str, k: int, placement: str) -> SlotLayout:
    """Where ``k`` slots go around the prompt's tokens (the reference's ``construct_id``): ``prefix`` =
    [start, slots, prompt, end, pad...], ``suffix`` = [start, prompt, slots, end, pad...], ``insert`` = the
    slots spread through the prompt at intervals of ``len // (k + 1)`` tokens."""
    length = int(getattr(tokenizer, "model_max_length", 77) or 77)
    words = tokenizer(prompt, truncation=False).input_ids[1:-1]
    if len(words) + k + 2 > length:
        raise ErasureError(f"prompt {prompt[:50]!r} has {len(words)} tokens; with {k} adversarial tokens it is over "
                           f"the text encoder's {length}: shorten it or use fewer tokens")
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    slot = -1
    if placement == "prefix":
        body = [slot] * k + words
    elif placement == "suffix":
        body = words + [slot] * k
    elif placement == "insert":
        step = len(words) // (k + 1)
        body = []
        for i in range(k):
            body += words[step * i: step * (i + 1)] + [slot]
        body += words[step * k:]
    else:
        raise ErasureError(f"placement {placement!r} is not one of {', '.join(PLACEMENTS)}")
    ids = [bos, *body, eos] + [pad] * (length - len(body) - 2)
    slots = tuple(i for i, t in enumerate(ids) if t == slot)
    return SlotLayout(tuple(eos if t == slot else t for t in ids), slots)


def decode_prompt(tokenizer, ids: Sequence[int]) -> str:
    """The text of ``ids`` between the start token and the first end token (the reference decodes
    ``ids[1:]`` without end tokens)."""
    ids = list(ids)[1:]
    eos = tokenizer.eos_token_id
    if eos in ids:
        ids = ids[: ids.index(eos)]
    return tokenizer.decode(ids).strip()


_WORD_TOKENS: "weakref.WeakKeyDictionary[Any, tuple[int, ...]]" = weakref.WeakKeyDictionary()


def word_tokens(tokenizer) -> tuple[int, ...]:
    """Ids of whole-word tokens (``...</w>``) whose decoded text tokenises back to exactly that id
    (34,301 of CLIP's 49,408); a sequence of them decodes to a prompt that re-tokenises to the same ids."""
    try:
        cached = _WORD_TOKENS.get(tokenizer)
    except TypeError:
        cached = None
    if cached is not None:
        return cached
    special = set(tokenizer.all_special_ids)
    names = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    candidates = [i for i, name in enumerate(names) if name.endswith("</w>") and i not in special]
    texts = [tokenizer.decode([i]) for i in candidates]
    encoded = tokenizer(texts).input_ids
    out = tuple(i for i, e in zip(candidates, encoded) if e[1:-1] == [i])
    try:
        _WORD_TOKENS[tokenizer] = out
    except TypeError:
        pass
    return out


def candidate_tokens(pipe, vocabulary: str, exclude_words: Sequence[str] = ()) -> torch.Tensor:
    """The token ids the distribution ranges over (sorted)."""
    tokenizer = pipe.tokenizer
    special = set(tokenizer.all_special_ids)
    if vocabulary == "all":
        ids = [i for i in range(len(tokenizer)) if i not in special]
    elif vocabulary == "words":
        ids = list(word_tokens(tokenizer))
    elif vocabulary == "model":
        from erasure.profiles import profile_of

        profile = profile_of(pipe)
        if profile is None or profile.vocabulary is None:
            raise ErasureError("vocabulary 'model' needs a model whose words are known (the built-in world); "
                               "use 'all' or 'words'")
        ids = sorted({t[1] for w in profile.vocabulary if len(t := tokenizer(w).input_ids) == 3} - special)
    else:
        raise ErasureError(f"vocabulary {vocabulary!r} is not one of {', '.join(VOCABULARIES)}")
    banned = {t for w in exclude_words for t in tokenizer(w).input_ids[1:-1]}
    ids = sorted(set(ids) - banned)
    if not ids:
        raise ErasureError("no candidate tokens are left; exclude fewer words")
    return torch.tensor(ids, dtype=torch.long)


def adversarial_loss(pipe, probabilities: torch.Tensor, candidates: torch.Tensor, layout: SlotLayout,
                     x0: torch.Tensor, t: int, noise: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One evaluation of the objective (the reference's ``get_loss`` on ``construct_embd``'s embeddings):
    a straight-through one-hot sample of ``probabilities`` (k, V') over ``candidates``, spliced at the layout's
    slots, through the text encoder and the (erased) UNet at timestep ``t`` with ``noise``."""
    text_encoder, unet = pipe.text_encoder, pipe.unet
    table = text_encoder.get_input_embeddings().weight
    one_hot = StraightThroughSample.apply(probabilities, generator)
    slot_embeddings = one_hot @ table[candidates.to(table.device)].detach().float()
    ids = torch.tensor([layout.ids], device=table.device)
    slots = torch.tensor(layout.slots, device=table.device)

    def splice(_ids, embeddings):
        embeddings = embeddings.clone()
        embeddings[:, slots] = slot_embeddings.to(embeddings.dtype)
        return embeddings

    with token_embeddings_replaced(text_encoder, splice):
        hidden = text_encoder(ids)[0]
    dtype = next(unet.parameters()).dtype
    alpha_bar = pipe.scheduler.alphas_cumprod[t].to(x0.device, torch.float32)
    noisy = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise
    prediction = unet(noisy.to(dtype), t, encoder_hidden_states=hidden.to(dtype)).sample.float()
    target = noise_prediction_target(pipe.scheduler.config.prediction_type, x0, noise, alpha_bar)
    return torch.nn.functional.mse_loss(prediction, target)


def optimisation_step(pipe, probabilities: torch.Tensor, optimiser: torch.optim.Optimizer, candidates: torch.Tensor,
                      layout: SlotLayout, x0: torch.Tensor, t: int, generator: torch.Generator | None) -> float:
    """One step of the reference's inner loop: fresh noise (drawn first), the loss, its gradient through the
    straight-through sample, an Adam step, the projection of every row onto the simplex. Returns the loss."""
    optimiser.zero_grad()
    noise = torch.randn(x0.shape, generator=generator, device=x0.device)
    loss = adversarial_loss(pipe, probabilities, candidates, layout, x0, t, noise, generator)
    probabilities.grad = torch.autograd.grad(loss, [probabilities])[0]
    optimiser.step()
    with torch.no_grad():
        probabilities.copy_(project_onto_simplex(probabilities))
    return loss.item()


def target_image_files(folder: str) -> list:
    """The images of ``folder`` in the natural order of their names (``2_0.png`` before ``10_0.png``, as the
    reference's ``{case_number}_0.png`` files sort by case); a one-line error for a missing or empty folder."""
    import re
    from pathlib import Path

    from erasure.evaluation.evaluate import IMAGE_SUFFIXES

    path = Path(folder).expanduser()
    if not path.is_dir():
        raise ErasureError(f"target_images: {folder} is not a folder; give a folder of PNG/JPEG images of the concept")
    files = [p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise ErasureError(f"target_images: {folder} holds no PNG/JPEG/WebP image; put images of the concept there")
    return sorted(files, key=lambda p: [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.name)])


def image_size(pipe, settings) -> tuple[int, int]:
    """(height, width) the pipeline generates at: the sampler settings' or the UNet's sample size x VAE scale."""
    default = int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)
    return int(settings.height or default), int(settings.width or default)


def target_image(path, size: tuple[int, int]) -> np.ndarray:
    """One target image as uint8 (H, W, 3), resized (bicubic) to ``size`` = (height, width)."""
    from PIL import Image

    try:
        image = Image.open(path).convert("RGB")
    except OSError as e:
        raise ErasureError(f"target_images: cannot read {path} ({e}); remove it or replace it with a PNG/JPEG") from None
    if image.size != (size[1], size[0]):
        image = image.resize((size[1], size[0]), Image.BICUBIC)
    return np.array(image)  # writable (torch.from_numpy warns on a read-only array)


def frozen(modules: Sequence[torch.nn.Module]):
    """Parameters frozen while the attack runs (gradients flow to the distribution only), flags restored."""
    import contextlib

    @contextlib.contextmanager
    def manager():
        saved = [(p, p.requires_grad) for m in modules for p in m.parameters()]
        for p, _ in saved:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p, flag in saved:
                p.requires_grad_(flag)

    return manager()


class UnlearnDiffAtk:
    """The attack (see the module docstring); ``attack_prompt`` runs it on one prompt of the context."""

    def __init__(self, config: UnlearnDiffAtkConfig) -> None:
        self.config = config

    def prepare(self, context: AttackContext) -> None:
        pipe = context.models.use("erased")
        self.candidates = candidate_tokens(pipe, self.config.vocabulary, self.config.exclude_words)
        self.target_files = target_image_files(self.config.target_images) if self.config.target_images else None

    def attack_prompt(self, context: AttackContext, index: int) -> Attempt:
        c = self.config
        prompt, seed = context.prompts[index], int(context.seeds[index])
        if self.target_files:
            pipe = context.models.use("erased")
            image = target_image(self.target_files[index % len(self.target_files)], image_size(pipe, context.settings))
        elif c.target_steps is not None and context.models.has_original:
            image = context.generate([prompt], [seed], which="original",
                                     settings=replace(context.settings, steps=c.target_steps))[0]
        else:
            image = context.original_image(index)
        pipe = context.models.use("erased")
        device = next(pipe.unet.parameters()).device
        x0 = vae_latent(pipe, image[None]).to(device)
        layout = slot_layout(pipe.tokenizer, prompt, c.tokens, c.placement)
        candidates = self.candidates
        generator = torch.Generator(device.type if device.type == "cuda" else "cpu").manual_seed(
            int(context.random(index).initial_seed()))
        probabilities = torch.full((c.tokens, len(candidates)), 1.0 / len(candidates), device=device)
        probabilities = project_onto_simplex(probabilities).requires_grad_(True)
        optimiser = torch.optim.Adam([probabilities], lr=c.lr, weight_decay=c.weight_decay)
        check = replace(context.settings, steps=c.check_steps) if c.check_steps else context.settings
        schedule = timestep_schedule(c.timesteps, int(pipe.scheduler.config.num_train_timesteps))
        history: list[dict[str, Any]] = []
        text, last_image, tries = prompt, None, 0
        with frozen([pipe.unet, pipe.text_encoder]):
            for block, t in enumerate(schedule):
                total = 0.0
                for _ in range(c.steps_per_timestep):
                    total += optimisation_step(pipe, probabilities, optimiser, candidates, layout, x0, t, generator)
                if (block + 1) % c.check_every and block != len(schedule) - 1:
                    continue
                tokens = candidates[probabilities.detach().argmax(-1).cpu()].tolist()
                ids = layout.with_tokens(tokens)
                text = decode_prompt(pipe.tokenizer, ids)
                retokenised = pipe.tokenizer(text, padding="max_length", max_length=len(ids), truncation=True).input_ids
                last_image = context.generate([text], [seed], settings=check)[0]
                tries += 1
                success = bool(context.decide(last_image[None])[0])
                entry = {"block": block, "t": t, "loss": total / c.steps_per_timestep, "prompt": text, "success": success}
                if success and c.confirm and check.steps != context.settings.steps:
                    last_image = context.generate([text], [seed])[0]  # the run's sampler: the reference's check
                    tries += 1
                    success = entry["confirmed"] = bool(context.decide(last_image[None])[0])
                history.append(entry)
                if success:
                    return Attempt(True, text, last_image, step=block, tries=tries,
                                   details={"tokens": tokens, "ids_exact": list(retokenised) == ids, "history": history})
        return Attempt(False, text, last_image, step=None, tries=tries,
                       details={"tokens": tokens if history else [], "ids_exact": bool(history) and list(retokenised) == ids,
                                "history": history})


__all__ = ["UnlearnDiffAtk", "UnlearnDiffAtkConfig", "project_onto_simplex", "project_onto_simplex_bisection",
           "StraightThroughSample", "slot_layout", "decode_prompt", "word_tokens", "candidate_tokens",
           "adversarial_loss", "optimisation_step", "timestep_schedule"]
