"""ESD: Erasing Concepts from Diffusion Models (Gandikota et al., ICCV 2023), exactly, and cheaply.

The objective (one source of truth: :func:`esd_target`): the student's prediction eps_theta(x_t, c) is
regressed (MSE) onto

    eps*(x_t, anchor) - eta * (eps*(x_t, c) - eps*(x_t, anchor))

where eps* is the original (frozen) model, c the concept prompt, anchor the empty prompt (or a user's
anchor concept) and eta the negative guidance. x_t comes from DDIM sampling of the concept prompt with
classifier-free guidance ``start_guidance`` for 50 - t_enc of ``ddim_steps`` steps, t_enc ~ U{0..49},
and t ~ U[t_enc/50*1000, (t_enc+1)/50*1000) is the matching training timestep (the reference code).

Where the cost goes, and what we do instead of the reference loop:

- ``sampling="frozen"`` (the current diffusers reference): x_t does not depend on training, so the whole
  schedule of (trajectory, t_enc, t) is drawn from the seed up front. One 50-step trajectory yields the
  x_t of every t_enc, so ~50 training samples cost one trajectory instead of 50 partial ones; the frozen
  predictions for concept and anchor are computed once, batched, before training starts. The student then
  trains on cached targets: no teacher UNet in memory, no teacher passes during training.
- ``sampling="student"`` (the original paper code): x_t is sampled from the model being trained, fresh
  every iteration, as the paper did; frozen predictions swap the original values of the trainable
  parameters in and out (no second UNet either).

Parameter groups (``esd-x``, ``esd-x-strict``, ``esd-u``, ``full``) come from
:func:`erasure.modules.parameter_group`. The student goes through ``accelerate`` (mixed precision,
multi-GPU with ``accelerate launch``); ``gradient_checkpointing`` trades compute for memory.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from erasure.edit import Edit, make_edit
from erasure.errors import ErasureError
from erasure.modules import PARAMETER_GROUPS, parameter_group


@dataclass(frozen=True)
class ESDConfig:
    """ESD settings. Defaults are tuned on the built-in world (see the README); the paper used
    lr 1e-5 x 1000 iterations and eta 1, the current diffusers script lr 5e-5 x 200 and eta 2."""

    group: str = "esd-x"
    anchor: str = ""
    templates: tuple[str, ...] | str = ("{}",)  # prompts per concept ({} = concept; the anchor fills the same slot)
    eta: float = 1.0
    iterations: int = 200
    lr: float = 3e-4  # with an anchor concept this meets the shape bars on the built-in world (README)
    batch_size: int = 4
    start_guidance: float = 3.0
    ddim_steps: int = 50
    sampling: str = "frozen"  # or "student" (the original paper code)
    pool_reuse: int = 1  # frozen sampling: how many times each cached (x_t, t, targets) sample is reused
    seed: int = 0
    # "auto": on for UNets of SD size (>= SD_SIZED_UNET_PARAMS parameters), where activations dominate
    # the training step's memory; off for small ones such as the built-in world, where time matters more
    gradient_checkpointing: bool | str = "auto"
    mixed_precision: str = "no"  # "no", "fp16", "bf16" (accelerate)
    checkpoint_every: int = 0  # with checkpoint_dir: save trainable state every N iterations (0: only at the end)
    # samples per no-grad UNet call while building the pool (sets its peak memory; the frozen predictions run
    # anchor and concept together, so their UNet batch is twice this); "auto": 2 for UNets of SD size (a
    # no-grad batch of 4 stays under the training step's peak), 8 for small ones
    frozen_batch: int | str = "auto"
    # adapters instead of a parameter group: a peft LoRA on these target modules is what trains
    adapter: str = ""  # "" = train `group`; else a target pattern of erasure.modules.ADAPTER_TARGETS
    rank: int = 4
    alpha: float | None = None  # None = rank (scale 1)
    # latent anchoring (SPM): the student must match the frozen model on anchor embeddings
    latent_anchors: int = 0  # random text-embedding directions per iteration (scaled like real ones)
    latent_anchor_prompts: tuple[str, ...] = ()  # real anchor prompts, one drawn per iteration each
    latent_anchor_weight: float = 0.0
    extra: dict = field(default_factory=dict)

    def validate(self) -> None:
        if self.group not in PARAMETER_GROUPS:
            raise ErasureError(f"unknown parameter group {self.group!r}; choose one of {', '.join(PARAMETER_GROUPS)}")
        if self.sampling not in ("frozen", "student"):
            raise ErasureError(f"sampling must be 'frozen' or 'student' (got {self.sampling!r})")
        if self.frozen_batch != "auto" and (not isinstance(self.frozen_batch, int) or self.frozen_batch < 1):
            raise ErasureError(f"frozen_batch must be an integer >= 1 or auto (got {self.frozen_batch!r})")
        if min(self.iterations, self.batch_size, self.ddim_steps, self.pool_reuse) < 1:
            raise ErasureError("iterations, batch_size, ddim_steps and pool_reuse must be >= 1")
        if self.pool_reuse > self.iterations * self.batch_size:
            raise ErasureError(f"pool_reuse {self.pool_reuse} exceeds the number of training samples "
                               f"({self.iterations * self.batch_size}); lower it")
        if self.lr <= 0:
            raise ErasureError(f"lr must be > 0 (got {self.lr})")
        if self.gradient_checkpointing not in (True, False, "auto"):
            raise ErasureError(f"gradient_checkpointing must be true, false or auto "
                               f"(got {self.gradient_checkpointing!r})")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ErasureError(f"mixed_precision must be no, fp16 or bf16 (got {self.mixed_precision!r})")
        if self.adapter:
            from erasure.modules import ADAPTER_TARGETS

            if self.adapter not in ADAPTER_TARGETS:
                raise ErasureError(f"unknown adapter target pattern {self.adapter!r}; choose one of "
                                   f"{', '.join(ADAPTER_TARGETS)}")
            if self.rank < 1 or (self.alpha is not None and self.alpha <= 0):
                raise ErasureError(f"rank must be >= 1 and alpha > 0 (got rank {self.rank}, alpha {self.alpha})")
        if self.latent_anchors < 0 or self.latent_anchor_weight < 0:
            raise ErasureError("latent_anchors and latent_anchor_weight must be >= 0")


SD_SIZED_UNET_PARAMS = 100_000_000  # SD 1.x/2.x UNets have ~860M; the built-in world's ~1.5M


def is_sd_sized(unet: nn.Module) -> bool:
    """Whether the "auto" memory settings treat ``unet`` as SD-sized (activations dominate memory)."""
    return sum(p.numel() for p in unet.parameters()) >= SD_SIZED_UNET_PARAMS


def use_gradient_checkpointing(setting: bool | str, unet: nn.Module) -> bool:
    """Resolve ``gradient_checkpointing``: True/False as given; "auto" = on for SD-sized UNets
    (:func:`is_sd_sized`). On SD 1.5's shape it takes one training step's peak memory from
    0.66x to 0.57x of the reference loop's at ~30% more step time (``scripts/bench_esd.py --memory-only``)."""
    if setting == "auto":
        return is_sd_sized(unet)
    return bool(setting)


NOISE_CHUNK = 4  # trajectories per noise draw in the pool (the world's frozen_batch 8 // 2, as measured before)


def resolve_frozen_batch(setting: int | str, unet: nn.Module) -> int:
    """``frozen_batch``: as given, or "auto" = 2 for SD-sized UNets (:func:`is_sd_sized`; on SD 1.5's shape a
    no-grad forward at batch 4 peaks at 0.55x the reference loop's training step, ``scripts/bench_esd.py``),
    else 8."""
    if setting == "auto":
        return 2 if is_sd_sized(unet) else 8
    return int(setting)


def esd_target(eps_anchor: Tensor, eps_concept: Tensor, eta: float) -> Tensor:
    """ESD's regression target: eps*(x_t, anchor) - eta * (eps*(x_t, c) - eps*(x_t, anchor))."""
    return eps_anchor - eta * (eps_concept - eps_anchor)


def esd_loss(student_eps: Tensor, eps_anchor: Tensor, eps_concept: Tensor, eta: float) -> Tensor:
    """Mean squared error of the student's prediction against :func:`esd_target`."""
    return torch.nn.functional.mse_loss(student_eps.float(), esd_target(eps_anchor, eps_concept, eta).float())


def training_timestep(t_enc: int, ddim_steps: int, rng: np.random.Generator, train_steps: int = 1000) -> int:
    """The DDPM timestep matching DDIM index ``t_enc``: U[round(t_enc/S*T), round((t_enc+1)/S*T))."""
    low = round(t_enc / ddim_steps * train_steps)
    high = max(low + 1, round((t_enc + 1) / ddim_steps * train_steps))
    return int(rng.integers(low, min(high, train_steps)))


class PassCounter:
    """Counts UNet forward passes (one per sample in a batch), for the benchmark's compute ratios."""

    def __init__(self) -> None:
        self.forward = 0
        self.backward = 0

    @property
    def total(self) -> int:
        """Forward passes, a backward counted as two."""
        return self.forward + 2 * self.backward


@contextlib.contextmanager
def original_values(params: dict[str, nn.Parameter], originals: dict[str, Tensor]) -> Iterator[None]:
    """Temporarily swap the trainable parameters' original values in (the frozen model, no second UNet)."""
    current = {n: p.data for n, p in params.items()}
    try:
        for n, p in params.items():
            p.data = originals[n]
        yield
    finally:
        for n, p in params.items():
            p.data = current[n]


class ParameterGroupStudent:
    """The student is a parameter group of the UNet; the teacher swaps their original values back in."""

    def __init__(self, pipe, group: str):
        self.params = parameter_group(pipe.unet, group)
        self.originals = {n: p.detach().clone() for n, p in self.params.items()}

    def teacher(self):
        return original_values(self.params, self.originals)

    def result(self, pipe, method, concepts, config, info) -> Edit:
        new_values = {f"unet.{n}": p.detach().clone() for n, p in self.params.items()}
        self.close()
        return make_edit(pipe, method, concepts, config, new_values, info=info)

    @torch.no_grad()
    def close(self) -> None:
        """Leave the pipeline as it was (the result carries the change)."""
        for n, p in self.params.items():
            p.copy_(self.originals[n])


class AdapterStudent:
    """The student is a peft LoRA on ``pattern``'s modules; the teacher is the same UNet with adapters
    disabled (no second UNet, no copy of any weight)."""

    NAME = "erasure-training"

    def __init__(self, pipe, pattern: str, rank: int, alpha: float | None):
        from peft import LoraConfig

        from erasure.adapters import lora_config_dict
        from erasure.modules import adapter_target_modules

        self.unet = pipe.unet
        if getattr(self.unet, "_hf_peft_config_loaded", False) and self.unet.peft_config:
            raise ErasureError("the pipeline already has adapters attached; restore them before training another")
        self.lora_config = lora_config_dict(adapter_target_modules(self.unet, pattern), rank, alpha)
        self.unet.add_adapter(LoraConfig(**self.lora_config), adapter_name=self.NAME)
        self.params = {n: p for n, p in self.unet.named_parameters() if f".{self.NAME}." in n}

    @contextlib.contextmanager
    def teacher(self):
        self.unet.disable_adapters()
        try:
            yield
        finally:
            self.unet.enable_adapters()

    def result(self, pipe, method, concepts, config, info):
        from peft import get_peft_model_state_dict

        from erasure.adapters import make_adapter

        state = get_peft_model_state_dict(self.unet, adapter_name=self.NAME)
        self.close()
        return make_adapter(pipe, method, concepts, config, state, self.lora_config, info=info)

    def close(self) -> None:
        from erasure.adapters import _remove_peft_layers

        if self.NAME in getattr(self.unet, "peft_config", {}):
            self.unet.delete_adapters(self.NAME)
        if not getattr(self.unet, "peft_config", None):
            _remove_peft_layers(self.unet)


def random_anchor_embeddings(reference: Tensor, count: int, generator: torch.Generator) -> Tensor:
    """SPM's latent anchors: Gaussian directions shaped like ``reference`` (one prompt embedding,
    tokens x width), each scaled to ``reference``'s norm times U(0.8, 1.2) and kept with probability
    1 - cosine(anchor, reference), so directions close to the erased concept are rare."""
    out = []
    flat_ref = reference.flatten().float().cpu()
    while len(out) < count:
        a = torch.randn(flat_ref.shape, generator=generator)
        cos = float(torch.nn.functional.cosine_similarity(a, flat_ref, dim=0))
        if float(torch.rand((), generator=generator)) > 1 - cos:
            continue
        scale = flat_ref.norm() * (0.8 + 0.4 * float(torch.rand((), generator=generator)))
        out.append((a / a.norm() * scale).reshape(reference.shape))
    return torch.stack(out).to(reference.device, reference.dtype)


def _encode(pipe, prompts: Sequence[str]) -> Tensor:
    tok = pipe.tokenizer(list(prompts), padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt")
    with torch.no_grad():
        return pipe.text_encoder(tok.input_ids.to(pipe.text_encoder.device))[0]


class _Sampler:
    """DDIM with classifier-free guidance over ``ddim_steps``, returning every intermediate latent."""

    def __init__(self, pipe, cfg: ESDConfig, counter: PassCounter):
        from diffusers import DDIMScheduler

        self.unet = pipe.unet
        self.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        self.scheduler.set_timesteps(cfg.ddim_steps)
        self.timesteps = self.scheduler.timesteps
        self.guidance = cfg.start_guidance
        self.counter = counter
        size = pipe.unet.config.sample_size
        self.shape = (pipe.unet.config.in_channels, size, size)

    @torch.no_grad()
    def run(self, cond: Tensor, uncond: Tensor, noise: Tensor, steps: int) -> list[Tensor]:
        """States x_0 .. x_steps: x_k is the latent after k DDIM steps (x_0 = noise)."""
        latents = noise * self.scheduler.init_noise_sigma
        states = [latents]
        n = latents.shape[0]
        context = torch.cat([uncond.expand(n, -1, -1), cond.expand(n, -1, -1)])
        for t in self.timesteps[:steps]:
            inp = self.scheduler.scale_model_input(torch.cat([latents, latents]), t)
            eps_u, eps_c = self.unet(inp, t, encoder_hidden_states=context).sample.chunk(2)
            self.counter.forward += 2 * n
            latents = self.scheduler.step(eps_u + self.guidance * (eps_c - eps_u), t, latents).prev_sample
            states.append(latents)
        return states


def _frozen_predictions(unet, x: Tensor, t: Tensor, anchor: Tensor, concept: Tensor, counter: PassCounter,
                        batch: int = 8) -> tuple[Tensor, Tensor]:
    """eps*(x, anchor) and eps*(x, concept), concept and anchor batched together."""
    outs_a, outs_c = [], []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            xb, tb = x[i : i + batch], t[i : i + batch]
            n = len(xb)
            context = torch.cat([anchor[i : i + batch], concept[i : i + batch]])
            eps = unet(torch.cat([xb, xb]), torch.cat([tb, tb]), encoder_hidden_states=context).sample
            counter.forward += 2 * n
            outs_a.append(eps[:n])
            outs_c.append(eps[n:])
    return torch.cat(outs_a), torch.cat(outs_c)


def esd_edit(
    pipe,
    concepts: Sequence[str] | str,
    *,
    method: str = "esd",
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
    counter: PassCounter | None = None,
    stop_after: int | None = None,
    **settings,
):
    """Train ESD on ``pipe.unet`` for ``concepts`` and return the result (the pipeline is left unchanged):
    an :class:`~erasure.edit.Edit` when a parameter group trains, an :class:`~erasure.adapters.Adapter`
    when ``adapter=<target pattern>`` (a peft LoRA of ``rank``) trains instead.

    With ``checkpoint_dir``, the sample pool and (every ``checkpoint_every`` iterations) the trainable
    state are saved there; ``resume=True`` continues from them, exactly. ``stop_after`` ends this call
    after that many iterations in total (a time-limited job; resume it later)."""
    unknown = set(settings) - set(ESDConfig.__dataclass_fields__)
    if unknown:
        raise ErasureError(f"unknown setting(s) {sorted(unknown)} for {method}; "
                           f"known: {', '.join(sorted(ESDConfig.__dataclass_fields__))}")
    for key in ("templates", "latent_anchor_prompts"):
        if isinstance(settings.get(key), list):
            settings[key] = tuple(settings[key])
    cfg = ESDConfig(**settings)
    cfg.validate()
    if isinstance(concepts, str):
        concepts = [concepts]
    concepts = [" ".join(c.split()) for c in concepts]
    if not concepts or any(not c for c in concepts):
        raise ErasureError("an empty concept was given; name the concept to erase (e.g. --concept \"circle\")")
    from accelerate import Accelerator

    counter = counter or PassCounter()
    unet = pipe.unet
    was_training = unet.training
    requires = {n: p.requires_grad for n, p in unet.named_parameters()}
    t0 = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    device = unet.device
    from erasure.methods.closed_form import _fill, _resolve_templates

    templates = _resolve_templates((cfg.templates,) if isinstance(cfg.templates, str) else tuple(cfg.templates))
    pairs = [(_fill(t, c), _fill(t, cfg.anchor)) for c in concepts
             for t in (templates(c) if callable(templates) else templates)]
    if not pairs or any("{}" not in t for c in concepts for t in (templates(c) if callable(templates) else templates)):
        raise ErasureError("every template needs a {} where the concept goes, e.g. \"a photo of {}\"")
    emb_concepts = _encode(pipe, [p[0] for p in pairs]).to(device)
    emb_anchor = _encode(pipe, [p[1] for p in pairs]).to(device)
    emb_empty = _encode(pipe, [""]).to(device)
    emb_anchor_prompts = _encode(pipe, list(cfg.latent_anchor_prompts)).to(device) if cfg.latent_anchor_prompts else None
    anchor_generator = torch.Generator().manual_seed(cfg.seed + 1)
    sampler = _Sampler(pipe, cfg, counter)
    n_samples = cfg.iterations * cfg.batch_size

    # --- the frozen model's part, all before training (frozen sampling) ---------------------
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    pool = None
    if cfg.sampling == "frozen":
        pool_file = ckpt / "pool.safetensors" if ckpt else None
        if resume and pool_file is not None and pool_file.exists():
            from safetensors.torch import load_file

            saved = json.loads((ckpt / "config.json").read_text())["config"] if (ckpt / "config.json").exists() else None
            if saved is not None and saved != json.loads(json.dumps(asdict(cfg), default=str)):
                raise ErasureError(f"{ckpt} holds a run with other settings; resume with the same settings or "
                                   "choose another checkpoint folder")

            pool = {k: v.to(device) for k, v in load_file(str(pool_file)).items()}
        else:
            pool = _build_pool(unet, sampler, cfg, emb_concepts, emb_anchor, emb_empty, rng, n_samples, counter,
                               device, progress)
            if pool_file is not None:
                from safetensors.torch import save_file

                pool_file.parent.mkdir(parents=True, exist_ok=True)
                (ckpt / "config.json").write_text(json.dumps({"method": method, "concepts": concepts,
                                                             "config": asdict(cfg)}, indent=1, default=str))
                save_file({k: v.detach().cpu().contiguous() for k, v in pool.items()}, str(pool_file))
    t_pool = time.perf_counter()

    # --- training the student ------------------------------------------------------------------
    student_part = AdapterStudent(pipe, cfg.adapter, cfg.rank, cfg.alpha) if cfg.adapter else \
        ParameterGroupStudent(pipe, cfg.group)
    params = student_part.params
    unet.requires_grad_(False)
    for p in params.values():
        p.requires_grad_(True)
    checkpointing = use_gradient_checkpointing(cfg.gradient_checkpointing, unet)
    if checkpointing:
        unet.enable_gradient_checkpointing()
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision, cpu=device.type == "cpu")
    optimizer = torch.optim.Adam(list(params.values()), lr=cfg.lr)
    student, optimizer = accelerator.prepare(unet, optimizer)
    start = 0
    if resume and ckpt is not None and (ckpt / "state.safetensors").exists():
        start = _load_state(ckpt, params, optimizer, rng)
        anchor_generator.manual_seed(cfg.seed + 1 + start)
    losses: list[float] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.iterations, initial=start, desc=f"{method} {cfg.adapter or cfg.group}", unit="it")
    order = np.arange(n_samples) % (math.ceil(n_samples / cfg.pool_reuse) if cfg.sampling == "frozen" else 1)
    student.train()
    try:
        for it in range(start, cfg.iterations if stop_after is None else min(stop_after, cfg.iterations)):
            idx = order[it * cfg.batch_size : (it + 1) * cfg.batch_size]
            if cfg.sampling == "frozen":
                x, t, which = pool["x"][idx], pool["t"][idx], pool["concept"][idx]
                eps_a, eps_c = pool["eps_anchor"][idx], pool["eps_concept"][idx]
            else:
                x, t, which, eps_a, eps_c = _student_samples(unet, sampler, cfg, student_part.teacher, emb_concepts,
                                                              emb_anchor, emb_empty, rng, counter, device)
            with accelerator.autocast():
                pred = student(x, t, encoder_hidden_states=emb_concepts[which]).sample
                loss = esd_loss(pred, eps_a, eps_c, cfg.eta)
            counter.forward += len(x)
            counter.backward += len(x)
            if cfg.latent_anchor_weight > 0 and (cfg.latent_anchors or emb_anchor_prompts is not None):
                loss = loss + cfg.latent_anchor_weight * _anchoring_loss(
                    student, accelerator, student_part.teacher, x, t, emb_concepts[which[0]], emb_anchor_prompts,
                    cfg.latent_anchors, anchor_generator, rng, counter)
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)  # here, not before backward: no stale gradients under the next forward
            losses.append(float(loss.detach()))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4g}")
            if ckpt is not None and cfg.checkpoint_every and (it + 1) % cfg.checkpoint_every == 0:
                _save_state(ckpt, it + 1, params, optimizer, rng, cfg)
    except BaseException:
        student_part.close()
        raise
    finally:
        if bar is not None:
            bar.close()
        unet.train(was_training)
        for n, p in unet.named_parameters():
            if n in requires:
                p.requires_grad_(requires[n])
        if checkpointing:
            unet.disable_gradient_checkpointing()
    info = {"losses": [float(f"{x:.6g}") for x in losses[:: max(1, len(losses) // 100)]],
            "final_loss": float(np.mean(losses[-20:])) if losses else None,
            "seconds_pool": round(t_pool - t0, 2), "seconds_train": round(time.perf_counter() - t_pool, 2),
            "gradient_checkpointing": checkpointing, "unet_forward_passes": counter.forward, "unet_backward_passes": counter.backward,
            "model": getattr(pipe, "erasure_source", None)}
    config = asdict(cfg)
    edit = student_part.result(pipe, method, concepts, config, info)  # also leaves the pipeline as it was
    if ckpt is not None:
        ckpt.mkdir(parents=True, exist_ok=True)
        (ckpt / "config.json").write_text(json.dumps({"method": method, "concepts": concepts, "config": config},
                                                     indent=1, default=str))
    return edit


def _build_pool(unet, sampler: _Sampler, cfg: ESDConfig, emb_concepts, emb_anchor, emb_empty, rng, n_samples,
                counter, device, progress) -> dict[str, Tensor]:
    """Draw every training sample's (concept, t_enc, t) and its x_t from full frozen trajectories, then
    the frozen predictions; ``n_samples / pool_reuse`` distinct samples."""
    distinct = max(1, math.ceil(n_samples / cfg.pool_reuse))
    steps = cfg.ddim_steps
    frozen_batch = resolve_frozen_batch(cfg.frozen_batch, unet)
    which = rng.integers(0, len(emb_concepts), size=distinct)
    t_enc = rng.integers(0, steps, size=distinct)
    t_train = np.array([training_timestep(int(k), steps, rng) for k in t_enc])
    # one trajectory serves up to `steps` samples of the same concept with distinct t_enc
    xs = torch.empty((distinct, *sampler.shape), device=device)
    slots: dict[int, list[int]] = {}
    for i, c in enumerate(which):
        slots.setdefault(int(c), []).append(i)
    trajectories = 0
    for c, members in slots.items():
        # assign members to trajectories so no trajectory has two members with the same t_enc
        queues: list[list[int]] = []
        for i in members:
            for q in queues:
                if all(t_enc[j] != t_enc[i] for j in q) and len(q) < steps:
                    q.append(i)
                    break
            else:
                queues.append([i])
        queues.sort(key=lambda q: max(steps - int(t_enc[i]) for i in q))  # similar depths run together
        # the starting noise is drawn in fixed chunks of NOISE_CHUNK trajectories, whatever the UNet batch,
        # so frozen_batch changes memory and speed but not the pool (beyond float rounding)
        noise_all = torch.cat([torch.randn((len(queues[b : b + NOISE_CHUNK]), *sampler.shape),
                                           generator=torch.Generator().manual_seed(int(rng.integers(2**31))),
                                           dtype=torch.float32) for b in range(0, len(queues), NOISE_CHUNK)])
        batch = max(1, frozen_batch // 2)  # CFG doubles the UNet batch
        for b in range(0, len(queues), batch):
            group = queues[b : b + batch]
            noise = noise_all[b : b + batch].to(device)
            deepest = max(steps - int(t_enc[i]) for q in group for i in q)
            states = sampler.run(emb_concepts[c : c + 1], emb_empty, noise, deepest)
            for g, q in enumerate(group):
                for i in q:
                    xs[i] = states[steps - int(t_enc[i])][g]
            trajectories += len(group)
    t = torch.as_tensor(t_train, device=device)
    concept_idx = torch.as_tensor(which, device=device)
    eps_a, eps_c = _frozen_predictions(unet, xs, t, emb_anchor[concept_idx], emb_concepts[concept_idx], counter,
                                       batch=frozen_batch)
    return {"x": xs, "t": t, "concept": concept_idx, "eps_anchor": eps_a, "eps_concept": eps_c,
            "trajectories": torch.tensor([trajectories])}


def _anchoring_loss(student, accelerator, teacher, x, t, reference, emb_prompts, n_random, generator, rng,
                    counter) -> Tensor:
    """SPM's latent anchoring: MSE between the student and the frozen model on anchor embeddings (random
    directions scaled like ``reference`` and/or one real anchor prompt), each paired with one of the
    batch's (x_t, t)."""
    anchors = []
    if n_random:
        anchors.append(random_anchor_embeddings(reference, n_random, generator))
    if emb_prompts is not None:
        anchors.append(emb_prompts[int(rng.integers(len(emb_prompts)))][None])
    emb = torch.cat(anchors)
    pick = torch.arange(len(emb)) % len(x)
    xa, ta = x[pick], t[pick]
    with torch.no_grad(), teacher():
        frozen = student(xa, ta, encoder_hidden_states=emb).sample
    with accelerator.autocast():
        pred = student(xa, ta, encoder_hidden_states=emb).sample
    counter.forward += 2 * len(emb)
    counter.backward += len(emb)
    return torch.nn.functional.mse_loss(pred.float(), frozen.float())


def _student_samples(unet, sampler, cfg, teacher, emb_concepts, emb_anchor, emb_empty, rng, counter, device):
    """The original paper's x_t: sampled from the model being trained, fresh each iteration."""
    steps = cfg.ddim_steps
    which = int(rng.integers(0, len(emb_concepts)))
    t_enc = int(rng.integers(0, steps))
    t = training_timestep(t_enc, steps, rng)
    noise = torch.randn((cfg.batch_size, *sampler.shape), generator=torch.Generator().manual_seed(
        int(rng.integers(2**31)))).to(device)
    x = sampler.run(emb_concepts[which : which + 1], emb_empty, noise, steps - t_enc)[-1]
    tt = torch.full((cfg.batch_size,), t, device=device)
    idx = torch.full((cfg.batch_size,), which, device=device)
    with teacher():
        eps_a, eps_c = _frozen_predictions(unet, x, tt, emb_anchor[idx], emb_concepts[idx], counter)
    return x, tt, idx, eps_a, eps_c


def _save_state(folder: Path, step: int, params, optimizer, rng, cfg: ESDConfig) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"param.{n}": p.detach().cpu().contiguous() for n, p in params.items()}
    state = optimizer.state_dict()
    for idx, s in state["state"].items():
        for k, v in s.items():
            tensors[f"opt.{idx}.{k}"] = (v if torch.is_tensor(v) else torch.tensor(v)).detach().cpu().contiguous()
    meta = {"step": str(step), "rng": json.dumps(rng.bit_generator.state),
            "torch_rng": json.dumps(torch.get_rng_state().tolist()), "config": json.dumps(asdict(cfg), default=str)}
    tmp = folder / "state.safetensors.tmp"
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, folder / "state.safetensors")


def _load_state(folder: Path, params, optimizer, rng) -> int:
    from safetensors import safe_open

    with safe_open(str(folder / "state.safetensors"), framework="pt") as f:
        meta = f.metadata()
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(f.get_tensor(f"param.{n}"))
        state = optimizer.state_dict()
        for key in f.keys():
            if key.startswith("opt."):
                _, idx, name = key.split(".", 2)
                state["state"].setdefault(int(idx), {})[name] = f.get_tensor(key)
        optimizer.load_state_dict(state)
    rng.bit_generator.state = json.loads(meta["rng"])
    torch.set_rng_state(torch.tensor(json.loads(meta["torch_rng"]), dtype=torch.uint8))
    return int(meta["step"])


PRESETS: dict[str, dict] = {
    "esd": {},
    "esd-x": {"group": "esd-x"},
    "esd-x-strict": {"group": "esd-x-strict"},
    "esd-u": {"group": "esd-u"},
    "esd-full": {"group": "full"},
}
