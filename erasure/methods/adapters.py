"""Adapter-based erasure: LoRA-ESD, SPM-style membranes, MACE-style multi-concept fusion.

- ``lora-esd``: the ESD trainer (:func:`erasure.methods.esd.esd_edit`) with a peft LoRA on the
  cross-attention projections as its trainable part (ESD-x as an adapter; ``adapter="attn2-kv"`` for
  ESD-x-strict).
- ``spm`` (Lyu et al., CVPR 2024): rank-1 adapters on every Linear / 1x1 Conv of every transformer block,
  the ESD loss plus latent anchoring (the same trainer with ``latent_anchors``); at inference
  :func:`erasure.adapters.facilitated_transport` scales each adapter by the prompt's similarity to its
  erased concept.
- ``mace`` (Lu et al., CVPR 2024): optionally first a closed-form refinement (``cfr``: the concept's
  residue in the surrounding tokens is sent to an anchor's, with the closed-form solver and token
  selection ``residual``), then per concept a rank-1 LoRA on cross-attention k/v trained to remove the
  attention of the concept's tokens inside the concept's region (:func:`train_attention_lora`), then all
  LoRAs fused in closed form (:func:`fuse_in_closed_form`, the closed-form solver of UCE) with
  preservation terms. Without the refinement the fused change of K rank-1 LoRAs has rank <= K per layer,
  so the result is an exact rank-K adapter; with it, the adapter's rank is the change's numerical rank
  (still exact).

All three return an :class:`~erasure.adapters.Adapter`.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from erasure.adapters import Adapter, lora_config_dict, make_adapter
from erasure.edit import svd_factors
from erasure.errors import ErasureError
from erasure.methods.closed_form import (
    _normalise,
    _resolve_templates,
    closed_form_edit,
    default_preserve,
    solve_closed_form,
)
from erasure.methods.esd import _encode, esd_edit
from erasure.methods.settings import MACEConfig
from erasure.precision import model_dtype_device
from erasure.profiles import profile_of
from erasure.modules import cross_attention_kv, cross_attention_layers, target_layer
from erasure.training import AdapterStudent, Precision, Trainer

# lora-esd's defaults (in its MethodSpec, erasure/methods/__init__.py): a rank-4 LoRA on every cross-attention
# projection (ESD-x's parameters, as an adapter). A one-concept closed-form k/v edit has rank <= its few token
# rows, so a few ranks suffice; rank 4 is 4x SPM's and still ~1% of ESD-x's dense size on SD 1.x. lr 1e-3 (3x
# ESD-x's 3e-4) because B starts at zero and carries the whole change: on the world (circle, anchor square,
# 200 x 4) k/v only left the circle at 35-40% (lr 1e-3, 3e-3); all of attn2 at 3e-3 erased it but cost 15
# points of in-domain retain, at 1.5e-3 7 points, at 1e-3 2.5 points with the target at 10% (docs, adapter table).
# SPM's: rank 1 (alpha 1), every transformer-block layer, 4 random anchors per iteration; the reference weights
# anchoring by 1000 over 3000 iterations at lr 1e-4; with our 200 iterations we raise the lr.


def _with_defaults(method: str, settings: dict) -> dict:
    from erasure.methods import METHODS

    return {**METHODS.get(method).defaults, **settings}


def lora_esd(pipe, concepts, *, method: str = "lora-esd", **settings) -> Adapter:
    """ESD with a LoRA as the trainable part (defaults: the lora-esd spec's)."""
    return esd_edit(pipe, concepts, method=method, **_with_defaults("lora-esd", settings))


def spm(pipe, concepts, *, method: str = "spm", **settings) -> Adapter:
    """SPM-style erasure: ESD + latent anchoring on rank-1 adapters everywhere (defaults: the spm spec's)."""
    settings = _with_defaults("spm", settings)
    if not settings.get("adapter"):
        raise ErasureError("spm trains an adapter; give a target pattern, not adapter=''")
    return esd_edit(pipe, concepts, method=method, **settings)


# --------------------------------------------------------------------------- MACE


def importance_timesteps(n: int, rng: np.random.Generator, train_steps: int = 1000) -> np.ndarray:
    """MACE's p(t) ~ sigmoid(0.05 (t - 200)) - sigmoid(0.05 (t - 400)): mostly t in [200, 400]."""
    t = np.arange(train_steps)
    p = 1 / (1 + np.exp(-0.05 * (t - 200))) - 1 / (1 + np.exp(-0.05 * (t - 400)))
    return rng.choice(train_steps, size=n, p=p / p.sum())


class _AttentionRecorder:
    """An attn2 processor that computes attention explicitly and keeps the probabilities (for the loss)."""

    def __init__(self, store: list):
        self.store = store

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs):
        residual = hidden_states
        ndim = hidden_states.ndim
        if ndim == 4:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        key, value = attn.to_k(context), attn.to_v(context)
        query, key, value = attn.head_to_batch_dim(query), attn.head_to_batch_dim(key), attn.head_to_batch_dim(value)
        probs = attn.get_attention_scores(query, key, None)
        self.store.append(probs.reshape(-1, attn.heads, *probs.shape[1:]))  # (batch, heads, pixels, tokens)
        out = attn.batch_to_head_dim(torch.bmm(probs, value))
        out = attn.to_out[1](attn.to_out[0](out))
        if ndim == 4:
            out = out.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def _token_mask(pipe, prompts: Sequence[str], concept: str, mode: str) -> Tensor:
    """(n, 77) 1 where a prompt's token belongs to the concept's word(s) (last occurrence), plus its EOS
    (``concept+eos``) or plus every later token (``concept-to-end``)."""
    tok = pipe.tokenizer
    special = set(tok.all_special_ids)
    words = [i for i in tok(concept).input_ids if i not in special]
    out = torch.zeros(len(prompts), tok.model_max_length)
    for row, p in enumerate(prompts):
        ids = tok(p, truncation=True, max_length=tok.model_max_length).input_ids
        for start in range(len(ids) - len(words), -1, -1):
            if ids[start : start + len(words)] == words:
                out[row, start : (None if mode == "concept-to-end" else start + len(words))] = 1
                break
        else:
            raise ErasureError(f"prompt {p!r} does not contain the concept {concept!r}")
        if mode == "concept+eos":
            out[row, len(ids) - 1] = 1
    return out


def concept_data(pipe, concept: str, n: int, rng: np.random.Generator) -> tuple[Tensor, Tensor, list[str]]:
    """(latents, masks in [0, 1] at image resolution, prompts) of ``n`` images of ``concept``.

    On the built-in world the renderer draws the images and knows each object's exact mask; elsewhere
    the model's own samples are used with the whole image as the region (MACE's choice for concepts that
    have no mask)."""
    profile = profile_of(pipe)
    if profile is not None and profile.concept_images is not None:
        data = profile.concept_images(pipe, concept, n, rng)
        if data is not None:
            return data
    prompts = [concept] * n
    with torch.no_grad():
        gens = [torch.Generator().manual_seed(int(rng.integers(2**31))) for _ in range(n)]
        latents = pipe(prompts, num_inference_steps=10, generator=gens, output_type="latent").images
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    return latents.float(), torch.ones(n, 1, size, size), prompts


def train_attention_lora(pipe, concept: str, cfg: MACEConfig, rng: np.random.Generator) -> tuple[Adapter, list[float]]:
    """MACE stage 2 for one concept: a rank-``cfg.rank`` LoRA on cross-attention k/v, trained so the
    concept's tokens get no attention inside the concept's region (sum over attn2 layers of the
    Frobenius norm of those attention probabilities). Returns the LoRA (an Adapter) and the losses."""
    from diffusers import DDPMScheduler

    unet = pipe.unet
    latents, masks, prompts = concept_data(pipe, concept, cfg.images, rng)
    emb = _encode(pipe, prompts).to(unet.device)
    tokens = _token_mask(pipe, prompts, concept, cfg.tokens).to(unet.device)
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    student = AdapterStudent(pipe, "attn2-kv", cfg.rank, None)
    store: list[Tensor] = []
    layers = cross_attention_layers(unet)
    processors = {name: attn.processor for name, attn in layers.items()}
    gen = torch.Generator().manual_seed(cfg.seed)
    dtype, device = model_dtype_device(unet)

    def step_loss(it: int) -> Tensor:
        idx = torch.as_tensor(rng.integers(0, len(latents), size=cfg.batch_size))
        t = torch.as_tensor(importance_timesteps(cfg.batch_size, rng) if cfg.importance_sampling
                            else rng.integers(0, noise_scheduler.config.num_train_timesteps, size=cfg.batch_size))
        x0 = latents[idx].to(unet.device)
        noisy = noise_scheduler.add_noise(x0, torch.randn(x0.shape, generator=gen).to(x0.device), t)
        store.clear()
        unet(noisy.to(dtype), t.to(unet.device), encoder_hidden_states=emb[idx]).sample
        loss = torch.zeros((), device=unet.device)
        for probs in store:  # (batch, heads, pixels, tokens)
            side = int(round(probs.shape[2] ** 0.5))
            region = torch.nn.functional.interpolate(masks[idx], size=(side, side), mode="area")
            region = (region > 0.5).float().flatten(1).to(probs.device)  # (batch, pixels)
            selected = probs * region[:, None, :, None] * tokens[idx][:, None, None, :]
            # Frobenius norm; the epsilon keeps its gradient finite where a region is empty
            loss = loss + (selected.float().pow(2).sum(dim=(1, 2, 3)) + 1e-12).sqrt().mean()
        return loss

    trainer = Trainer(
        student=student, loss=step_loss, iterations=cfg.iterations,
        optimizer=lambda params: torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01),
        precision=Precision(student.params, "no", device, dtype), clip_grad_norm=1.0,
        diverged=lambda it, value: (f"mace diverged on {concept!r} at iteration {it + 1}: attention loss {value}; "
                                    f"lower lr (now {cfg.lr:g})"),
        non_finite=lambda name: f"mace diverged on {concept!r}: {name} is not finite; lower lr (now {cfg.lr:g})")
    try:
        for attn in layers.values():
            attn.set_processor(_AttentionRecorder(store))
        outcome = trainer.run()
    except BaseException:
        student.close()  # (the trainer closes it on its own errors; closing twice is harmless)
        raise
    finally:
        store.clear()
        for name, attn in layers.items():
            attn.set_processor(processors[name])
    adapter = student.result(pipe, "mace-lora", [concept], asdict(cfg), {"losses": outcome.losses}, outcome.values)
    return adapter, outcome.losses


def fuse_in_closed_form(pipe, loras: Sequence[Adapter], prompts: Sequence[Sequence[str]], preserve_prompts: Sequence[str],
                        *, preserve_scale: float, lamb: float, token_masks: Sequence[Tensor] | None = None
                        ) -> dict[str, Tensor]:
    """MACE stage 3: the k/v weights W minimising, per layer,

        sum_i sum_{k in tokens of prompts[i]} |W k - (W0 + dW_i) k|^2 + s_p sum_{k in preserve} |W k - W0 k|^2
        + lamb |W - W0|^2,

    i.e. every concept's LoRA reproduced on its own prompts (all 77 tokens), the preserved prompts kept,
    solved jointly by :func:`~erasure.methods.closed_form.solve_closed_form`. Returns the change
    ``unet.<m>.weight`` -> W - W0 (float64).

    The solution is linear in (W0, targets), so the change is solved directly (weights 0, targets dW_i k):
    no cancellation of W0 against W, and the change is exactly in the span of the LoRAs' up factors.

    With ``token_masks`` (per concept, (prompts, 77)), only the selected tokens of a concept's prompts
    carry its LoRA; the others (the prompt's other words, BOS) join the preserved rows."""
    layers = {f"unet.{m}.weight": target_layer(pipe.unet, m).weight.detach() for m in cross_attention_kv(pipe.unet)}
    inputs, targets, kept = [], {name: [] for name in layers}, []
    for i, (lora, texts) in enumerate(zip(loras, prompts)):
        k = _encode(pipe, list(texts)).flatten(0, 1).to(torch.float64).cpu()
        if token_masks is not None:
            selected = token_masks[i].flatten().bool().cpu()
            kept.append(k[~selected])
            k = k[selected]
        inputs.append(k)
        deltas = lora.deltas()
        for name, w in layers.items():
            d_i = deltas.get(name, torch.zeros(w.shape)).to(torch.float64).cpu()
            targets[name].append(k @ d_i.T)
    preserve = _encode(pipe, list(preserve_prompts)).flatten(0, 1).to(torch.float64).cpu() if preserve_prompts else None
    if kept:
        preserve = torch.cat([x for x in (preserve, *kept) if x is not None])
    zeros = {n: torch.zeros(w.shape, dtype=torch.float64) for n, w in layers.items()}
    return solve_closed_form(zeros, torch.cat(inputs), {n: torch.cat(v) for n, v in targets.items()}, preserve,
                             preserve_scale=preserve_scale, lamb=lamb)


def to_rank_k(changes: dict[str, Tensor], rank: int | None) -> tuple[dict[str, Tensor], float, int]:
    """Each change as peft LoRA factors (exact SVD, :func:`~erasure.edit.svd_factors`) of ``rank``, or with
    ``rank=None`` of the largest numerical rank any change needs; zero-padded to that one rank (peft wants
    one rank for every module). Returns the factors, the largest relative residual and the rank."""
    factors = {name: svd_factors(delta, rank) for name, delta in changes.items()}
    rank = rank if rank is not None else max(down.shape[0] for _, down in factors.values())
    state, worst = {}, 0.0
    for name, delta in changes.items():
        m = name[len("unet."):-len(".weight")]
        up, down = factors[name]
        worst = max(worst, float((up @ down - delta).norm() / delta.norm().clamp_min(1e-30)))
        if up.shape[1] < rank:
            up = torch.cat([up, up.new_zeros(up.shape[0], rank - up.shape[1])], 1)
            down = torch.cat([down, down.new_zeros(rank - down.shape[0], down.shape[1])], 0)
        state[f"{m}.lora_A.weight"], state[f"{m}.lora_B.weight"] = down.float(), up.float()
    return state, worst, rank


def mace(pipe, concepts, *, method: str = "mace", progress: bool = True, **settings) -> Adapter:
    """MACE-style mass erasure: one attention-suppressing rank-1 LoRA per concept, fused in closed form
    with preservation of the other concepts' prompts; returns the fused change as one rank-K adapter."""
    from erasure.methods import METHODS

    settings = METHODS.get("mace").validate_settings(settings)
    if isinstance(settings.get("anchor"), list):
        settings["anchor"] = tuple(settings["anchor"])
    for key in ("templates", "preserve"):
        if isinstance(settings.get(key), (list, str)):
            settings[key] = tuple([settings[key]] if isinstance(settings[key], str) else settings[key])
    cfg = MACEConfig(**settings)
    if cfg.tokens not in ("concept", "concept+eos", "concept-to-end"):
        raise ErasureError(f"tokens must be 'concept', 'concept+eos' or 'concept-to-end' (got {cfg.tokens!r})")
    if cfg.fuse_tokens not in ("all", "trained"):
        raise ErasureError(f"fuse_tokens must be 'all' or 'trained' (got {cfg.fuse_tokens!r})")
    if min(cfg.iterations, cfg.batch_size, cfg.images, cfg.rank) < 1 or cfg.lr <= 0:
        raise ErasureError("iterations, batch_size, images and rank must be >= 1 and lr > 0")
    concepts = _normalise(concepts)
    profile = profile_of(pipe)
    templates = _resolve_templates(cfg.templates or ((profile.default_templates,) if profile else ("{}",)))
    preserve = cfg.preserve if cfg.preserve is not None else default_preserve(pipe, concepts)
    clash = sorted(set(preserve) & set(concepts))
    if clash:
        raise ErasureError(f"{clash[0]!r} is both erased and preserved; remove it from the preserve set")
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    refinement = None
    if cfg.cfr:  # stage 1, on the pipeline while the LoRAs train (restored below)
        anchor = list(cfg.anchor) if isinstance(cfg.anchor, (tuple, list)) else cfg.anchor
        refinement = closed_form_edit(pipe, concepts, method="mace-cfr", guide=anchor, preserve=tuple(preserve),
                                      templates=cfg.templates, tokens="residual",
                                      preserve_scale=cfg.cfr_preserve_scale, lamb=cfg.lamb)
        refinement.apply(pipe)
    loras, losses = [], {}
    try:
        for c in concepts:
            lora, curve = train_attention_lora(pipe, c, cfg, rng)
            loras.append(lora)
            losses[c] = [round(curve[0], 5), round(float(np.mean(curve[-5:])), 5)]
            if progress:
                print(f"mace: {c}: attention loss {losses[c][0]:.4g} -> {losses[c][1]:.4g}", flush=True)
        t1 = time.perf_counter()

        def fill(c):
            return [t.replace("{}", c) for t in (templates(c) if callable(templates) else templates)]

        prompts = [fill(c) for c in concepts]
        masks = ([_token_mask(pipe, p, c, cfg.tokens) for c, p in zip(concepts, prompts)]
                 if cfg.fuse_tokens == "trained" else None)
        changes = fuse_in_closed_form(pipe, loras, prompts, [p for c in preserve for p in fill(c)],
                                      preserve_scale=cfg.preserve_scale, lamb=cfg.lamb, token_masks=masks)
    finally:
        if refinement is not None:
            refinement.restore(pipe)
    rank = len(concepts) * cfg.rank  # K rank-1 LoRAs fuse to rank <= K
    if refinement is not None:  # the whole change, relative to the original weights, at its numerical rank
        for name, d in refinement.deltas().items():
            changes[name] = changes[name] + d.to(torch.float64).cpu()
        rank = None
    state, residual, rank = to_rank_k(changes, rank)
    config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()}
    config["preserve"] = list(preserve)
    info = {"attention_loss_first_last": losses, "seconds_train": round(t1 - t0, 2),
            "seconds_fuse": round(time.perf_counter() - t1, 2), "lora_rank_residual": residual,
            "cfr_rows": ({"erase": refinement.info["erase_rows"], "preserve": refinement.info["preserve_rows"]}
                         if refinement is not None else None),
            "model": getattr(pipe, "erasure_source", None)}
    targets = sorted({k.rsplit(".lora_", 1)[0] for k in state})
    return make_adapter(pipe, method, concepts, config, state, lora_config_dict(targets, rank), info=info)


PRESETS = {"lora-esd": lora_esd, "spm": spm, "mace": mace}
