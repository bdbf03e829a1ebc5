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

import math
import os
import time
from dataclasses import asdict, replace
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from erasure.errors import ErasureError
from erasure.methods.settings import ESDConfig as _ESDConfig
from erasure.precision import model_dtype_device
from erasure.text import encode_prompts, fill_template, normalise_concepts
from erasure.training import (  # noqa: F401  (PassCounter, original_values and the students: re-exported)
    AdapterStudent,
    Checkpoint,
    ParameterGroupStudent,
    PassCounter,
    Precision,
    Trainer,
    model_fingerprint,
    original_values,
)


# The settings live in erasure.methods.settings (no torch there: the CLI checks them before loading a model).
ESDConfig = _ESDConfig


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


def esd_target(eps_anchor: Tensor, eps_concept: Tensor, eta: float, eps_from: Tensor | None = None) -> Tensor:
    """ESD's regression target: eps*(x_t, anchor) - eta * (eps*(x_t, c) - eps*(x_t, anchor)).

    With ``eps_from`` (the current script's ``--erase_from``, ``esd_sd.py`` at rohitgandikota/erasing 25613d2,
    line 191: ``noise_pred_erase_from - negative_guidance * (noise_pred_erase - noise_pred_null)``):
    eps*(x_t, from) - (eta + 1) (eps*(x_t, c) - eps*(x_t, "")), the script's negative_guidance being eta + 1;
    ``eps_anchor`` is then the empty prompt's prediction. With eps_from = eps*(x_t, c) both forms agree."""
    if eps_from is None:
        return eps_anchor - eta * (eps_concept - eps_anchor)
    return eps_from - (eta + 1.0) * (eps_concept - eps_anchor)


def esd_loss(student_eps: Tensor, eps_anchor: Tensor, eps_concept: Tensor, eta: float,
             eps_from: Tensor | None = None) -> Tensor:
    """Mean squared error of the student's prediction against :func:`esd_target` (in float32)."""
    target = esd_target(eps_anchor.float(), eps_concept.float(), eta, None if eps_from is None else eps_from.float())
    return torch.nn.functional.mse_loss(student_eps.float(), target)


def training_timestep(t_enc: int, ddim_steps: int, rng: np.random.Generator, train_steps: int = 1000) -> int:
    """The original code's training timestep for DDIM index ``t_enc``: U[round(t_enc/S*T), round((t_enc+1)/S*T))
    (train-scripts/train-esd.py at rohitgandikota/erasing b8aeab6, lines 226-231: ``og_num``, ``og_num_lim``)."""
    low = round(t_enc / ddim_steps * train_steps)
    high = max(low + 1, round((t_enc + 1) / ddim_steps * train_steps))
    return int(rng.integers(low, min(high, train_steps)))


def pooled_depth(t_enc: int, ddim_steps: int, mode: str) -> int:
    """How many DDIM steps of the trajectory produce the pooled x_t for draw ``t_enc`` in [0, ddim_steps).

    - ``"exact"`` (the current script, esd_sd.py: ``run_till_timestep = random.randint(0, steps - 1)``, the
      latent after that many steps, queried at ``timesteps[run_till_timestep]``): depth = steps - 1 - t_enc, so
      every depth 0 .. steps-1 is equally likely and the training timestep is the latent's own level;
    - ``"original"`` (train-esd.py + the CompVis DDIM sampler with ``t_start=-1``, which drops the first
      timestep, and ``till_T=t_enc``, which stops after index t_enc - 1): the sampler starts at the *second*
      timestep, so depth counts steps from there: steps - t_enc steps (steps - 1 for t_enc = 0).
    """
    if mode == "exact":
        return ddim_steps - 1 - t_enc
    return ddim_steps - max(t_enc, 1)


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


_encode = encode_prompts  # the one text encoding path (erasure.text)


class _Sampler:
    """DDIM with classifier-free guidance over ``ddim_steps``, returning every intermediate latent."""

    def __init__(self, pipe, cfg: ESDConfig, counter: PassCounter):
        from diffusers import DDIMScheduler

        self.unet = pipe.unet
        self.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        self.scheduler.set_timesteps(cfg.ddim_steps)
        self.timesteps = self.scheduler.timesteps
        # the original code's sampler starts at the second timestep (pooled_depth)
        self.offset = 1 if cfg.timestep == "original" else 0
        self.guidance = cfg.start_guidance
        self.counter = counter
        self.dtype, self.device = model_dtype_device(pipe.unet)
        size = pipe.unet.config.sample_size
        self.shape = (pipe.unet.config.in_channels, size, size)

    def level(self, depth: int) -> int:
        """The noise level (DDPM timestep) of the latent after ``depth`` steps."""
        return int(self.timesteps[self.offset + depth])

    @torch.no_grad()
    def run(self, cond: Tensor, uncond: Tensor, noise: Tensor, steps: int) -> list[Tensor]:
        """States x_0 .. x_steps: x_k is the latent after k DDIM steps (x_0 = noise), in the UNet's dtype."""
        latents = (noise * self.scheduler.init_noise_sigma).to(self.device, self.dtype)
        states = [latents]
        n = latents.shape[0]
        context = torch.cat([uncond.expand(n, -1, -1), cond.expand(n, -1, -1)])
        for t in self.timesteps[self.offset : self.offset + steps]:
            inp = self.scheduler.scale_model_input(torch.cat([latents, latents]), t)
            eps_u, eps_c = self.unet(inp, t, encoder_hidden_states=context).sample.chunk(2)
            self.counter.forward += 2 * n
            latents = self.scheduler.step(eps_u + self.guidance * (eps_c - eps_u), t, latents).prev_sample
            states.append(latents)
        return states


def _frozen_predictions(unet, x: Tensor, t: Tensor, contexts: Sequence[Tensor], counter: PassCounter,
                        batch: int = 8) -> list[Tensor]:
    """eps*(x, c) for each conditioning in ``contexts`` (each (n, tokens, width)), all batched together;
    float32 results."""
    k = len(contexts)
    outs: list[list[Tensor]] = [[] for _ in range(k)]
    dtype, _ = model_dtype_device(unet)
    with torch.no_grad():
        for i in range(0, len(x), batch):
            xb, tb = x[i : i + batch].to(dtype), t[i : i + batch]
            n = len(xb)
            context = torch.cat([c[i : i + batch] for c in contexts])
            eps = unet(torch.cat([xb] * k), torch.cat([tb] * k), encoder_hidden_states=context).sample
            counter.forward += k * n
            for j in range(k):
                outs[j].append(eps[j * n : (j + 1) * n].float())
    return [torch.cat(o) for o in outs]


DEFAULT_RETAIN_PROMPTS = 64  # retain_prompts=None on a model with a profile: at most this many neighbour prompts


def default_retain_prompts(pipe, concepts: Sequence[str], n: int = DEFAULT_RETAIN_PROMPTS,
                           scope: str = "attribute") -> tuple[str, ...]:
    """``retain_prompts=None``: the model's default retain prompts. On a model with a profile (the built-in
    world), the erased concepts' neighbours (:meth:`~erasure.profiles.ModelProfile.preserve_for`: the other
    values of each concept's attribute, the set UCE preserves) filled into the profile's templates of each
    neighbour, round-robin over neighbours then templates (every neighbour bare first, then "a {}", ...), at
    most ``n``. ``scope="all"``: then the values of the profile's other concept kinds too (after the
    neighbours, round-robin over all of them). Elsewhere (a real checkpoint): none, give ``retain_prompts``."""
    from erasure.methods.closed_form import _resolve_templates
    from erasure.profiles import profile_of

    profile = profile_of(pipe)
    if profile is None:
        return ()
    neighbours = profile.preserve_for(list(concepts))
    if not neighbours:
        return ()
    if scope == "all":
        neighbours += tuple(v for values in profile.concept_kinds.values() for v in values
                            if v not in neighbours and v not in concepts)
    elif scope != "attribute":
        raise ErasureError(f"scope is 'attribute' or 'all', got {scope!r}")
    templates = _resolve_templates((profile.default_templates,))
    forms = [[fill_template(t, v) for t in (templates(v) if callable(templates) else templates)] for v in neighbours]
    out = [f[i] for i in range(max(map(len, forms))) for f in forms if i < len(f)]
    erased = {w for c in concepts for w in c.lower().split()}
    out = [p for p in out if not erased & set(p.lower().split())]  # a template may name the concept: not kept
    return tuple(dict.fromkeys(out))[:n]


def _effective_eta(cfg: ESDConfig) -> float:
    """eta in the paper's convention (negative_guidance, the script's convention, is eta + 1)."""
    return cfg.negative_guidance - 1.0 if cfg.negative_guidance is not None else cfg.eta


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

    Works on a pipeline in fp32, fp16 or bf16: trainable values have fp32 masters (erasure.precision), the
    frozen model runs in its dtype, fp16 gradients get a dynamic loss scale (:class:`erasure.training.Precision`).

    With ``checkpoint_dir``, the sample pool and (every ``checkpoint_every`` iterations) the trainable
    state are saved there; ``resume=True`` continues from them, exactly (:class:`erasure.training.Checkpoint`).
    ``stop_after`` ends this call after that many iterations in total (a time-limited job; resume it later)."""
    from erasure.methods import METHODS

    spec_name = method if method in METHODS else "esd"
    settings = METHODS.get(spec_name).validate_settings(settings)
    cfg = ESDConfig(**settings)
    cfg.validate()
    eta = _effective_eta(cfg)
    concepts = list(normalise_concepts(concepts))
    if cfg.retain_prompts is None:  # the model's default, recorded as the prompts it resolved to
        cfg = replace(cfg, retain_prompts=default_retain_prompts(pipe, concepts) if cfg.sampling == "frozen" else ())

    from erasure.distributed import process_state

    counter = counter or PassCounter()
    unet = pipe.unet
    state = process_state(unet.device)
    world, rank = state.num_processes, state.process_index
    lanes = world if cfg.pool_lanes == "auto" else int(cfg.pool_lanes)
    if world > 1:
        if cfg.sampling != "frozen":
            raise ErasureError("several processes train ESD with sampling='frozen' only (each builds its share of "
                               "the pool); run sampling='student' in one process")
        if lanes % world or cfg.batch_size % lanes:
            raise ErasureError(f"with {world} processes, pool_lanes ({lanes}) must be a multiple of {world} and "
                               f"batch_size ({cfg.batch_size}) a multiple of pool_lanes")
    elif lanes > 1 and cfg.batch_size % lanes:
        raise ErasureError(f"batch_size ({cfg.batch_size}) must be a multiple of pool_lanes ({lanes})")
    owned = {lane for lane in range(lanes) if lane % world == rank}
    local_positions = [p for p in range(cfg.batch_size) if (p % lanes) in owned]
    local_share = len(local_positions) / cfg.batch_size
    t0 = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    dtype, device = model_dtype_device(unet)
    from erasure.methods.closed_form import _resolve_templates

    templates = _resolve_templates((cfg.templates,) if isinstance(cfg.templates, str) else tuple(cfg.templates))
    concept_templates = [(c, t) for c in concepts for t in (templates(c) if callable(templates) else templates)]
    if not concept_templates or any("{}" not in t for _, t in concept_templates):
        raise ErasureError("every template needs a {} where the concept goes, e.g. \"a photo of {}\"")
    config = asdict(cfg)
    ckpt = None
    if checkpoint_dir is not None:
        ckpt = Checkpoint(checkpoint_dir, method=method, concepts=concepts, model=model_fingerprint(unet),
                          config=config, every=cfg.checkpoint_every, writer=state.is_main_process)
        ckpt.check(resume)
    emb_concepts = _encode(pipe, [fill_template(t, c) for c, t in concept_templates])
    emb_anchor = _encode(pipe, [fill_template(t, cfg.anchor) for _, t in concept_templates])
    emb_from = _encode(pipe, [fill_template(t, cfg.erase_from) for _, t in concept_templates]) if cfg.erase_from else None
    emb_empty = _encode(pipe, [""])
    emb_anchor_prompts = _encode(pipe, list(cfg.latent_anchor_prompts)) if cfg.latent_anchor_prompts else None
    anchor_generator = torch.Generator().manual_seed(cfg.seed + 1)
    sampler = _Sampler(pipe, cfg, counter)
    n_samples = cfg.iterations * cfg.batch_size
    # the student sees the concept, or with erase_from that prompt (the script's objective); trajectories too
    emb_student = emb_from if emb_from is not None else emb_concepts

    # --- the data source: the frozen model's part, all before training (frozen sampling) ------
    pool = None
    if cfg.sampling == "frozen":
        def build() -> dict[str, Tensor]:
            return _build_pool(unet, sampler, cfg, emb_student, emb_concepts, emb_anchor, emb_from, emb_empty, rng,
                               n_samples, counter, device, progress and state.is_main_process, lanes, owned)

        if ckpt is None:
            pool = build()
        else:
            name = "pool.safetensors" if world == 1 else f"pool-{rank}-of-{world}.safetensors"
            pool = ckpt.cached(name, build, resume=resume, device=device, per_process=True)
    # the retain term's samples: x_t from the frozen model's trajectories of the retain prompts and eps* there,
    # drawn from their own generator so the erasure samples are those of a run without the retain term
    emb_retain = _encode(pipe, list(cfg.retain_prompts)) if cfg.retain_prompts else None
    retain_pool = None
    if emb_retain is not None:
        def build_retain() -> dict[str, Tensor]:
            return _build_pool(unet, sampler, cfg, emb_retain, emb_retain, None, None, emb_empty,
                               np.random.default_rng([cfg.seed, 2]), n_samples, counter, device,
                               progress and state.is_main_process, lanes, owned, retain=True)

        if ckpt is None:
            retain_pool = build_retain()
        else:
            name = "retain-pool.safetensors" if world == 1 else f"retain-pool-{rank}-of-{world}.safetensors"
            retain_pool = ckpt.cached(name, build_retain, resume=resume, device=device, per_process=True)
    t_pool = time.perf_counter()

    # --- training the student on the shared trainer ---------------------------------------------
    student = AdapterStudent(pipe, cfg.adapter, cfg.rank, cfg.alpha) if cfg.adapter else \
        ParameterGroupStudent(pipe, cfg.group)
    precision = Precision(student.params, cfg.mixed_precision, device, dtype)
    order = np.arange(n_samples) % (math.ceil(n_samples / cfg.pool_reuse) if cfg.sampling == "frozen" else 1)
    anchoring = cfg.latent_anchor_weight > 0 and (cfg.latent_anchors or emb_anchor_prompts is not None)

    def step_loss(it: int) -> Tensor:
        idx = order[it * cfg.batch_size : (it + 1) * cfg.batch_size][local_positions]
        if pool is not None:
            x, t, which = pool["x"][idx], pool["t"][idx], pool["concept"][idx]
            eps_a, eps_c = pool["eps_anchor"][idx], pool["eps_concept"][idx]
            eps_f = pool["eps_from"][idx] if "eps_from" in pool else None
        else:
            x, t, which, eps_a, eps_c, eps_f = _student_samples(
                unet, sampler, cfg, student.teacher, emb_student, emb_concepts, emb_anchor, emb_from,
                emb_empty, rng, counter)
        if retain_pool is None:
            with precision.autocast():
                pred = unet(x.to(dtype), t, encoder_hidden_states=emb_student[which]).sample
                # this process's share of the batch mean: summed over the processes it is the whole batch's
                loss = esd_loss(pred, eps_a, eps_c, eta, eps_f) * local_share
        else:  # the erasure and retain samples in one UNet call
            xr, tr, r = retain_pool["x"][idx], retain_pool["t"][idx], retain_pool["concept"][idx]
            with precision.autocast():
                both = unet(torch.cat([x, xr]).to(dtype), torch.cat([t, tr]),
                            encoder_hidden_states=torch.cat([emb_student[which], emb_retain[r]])).sample
                pred, pred_r = both[: len(x)], both[len(x) :]
                loss = (esd_loss(pred, eps_a, eps_c, eta, eps_f) + cfg.retain_weight * torch.nn.functional.mse_loss(
                    pred_r.float(), retain_pool["eps_retain"][idx].float())) * local_share
            counter.forward += len(xr)
            counter.backward += len(xr)
        counter.forward += len(x)
        counter.backward += len(x)
        if anchoring:
            loss = loss + cfg.latent_anchor_weight * _anchoring_loss(
                unet, precision.autocast, student.teacher, x.to(dtype), t, emb_concepts[which[0]],
                emb_anchor_prompts, cfg.latent_anchors, anchor_generator, rng, counter) / world
        return loss

    def diverged(it: int, value: float) -> str:
        return (f"{method} diverged at iteration {it + 1}: loss {value}; lower lr (now {cfg.lr:g})"
                + (f" or eta (now {eta:g})" if eta > 1 else "")
                + (" ; the last good checkpoint is kept in " + str(ckpt.folder) if ckpt else ""))

    trainer = Trainer(
        student=student, loss=step_loss, iterations=cfg.iterations,
        optimizer=lambda params: torch.optim.Adam(params, lr=cfg.lr), precision=precision, diverged=diverged,
        non_finite=lambda name: (f"{method} diverged: {name} holds non-finite values after training; lower lr "
                                 f"(now {cfg.lr:g})"),
        # SPM's random anchors: the generator continues where it was, so a resumed run draws the same anchors
        generators={"rng": rng, "anchor_rng": anchor_generator}, checkpoint=ckpt, resume=resume,
        stop_after=stop_after, gradient_checkpointing=use_gradient_checkpointing(cfg.gradient_checkpointing, unet),
        processes=world, progress=f"{method}: training {cfg.adapter or cfg.group}" if progress else None)
    outcome = trainer.run()
    info = {**outcome.info(),
            "seconds_pool": round(t_pool - t0, 2), "seconds_train": round(time.perf_counter() - t_pool, 2),
            "gradient_checkpointing": outcome.gradient_checkpointing, "unet_forward_passes": counter.forward,
            "unet_backward_passes": counter.backward, "model": getattr(pipe, "erasure_source", None),
            "model_dtype": str(dtype).removeprefix("torch."), "eta": eta, "processes": world, "pool_lanes": lanes,
            "retain_prompts": len(cfg.retain_prompts)}
    result = student.result(pipe, method, concepts, config, info, outcome.values)  # leaves the pipeline as it was
    if ckpt is not None:
        ckpt.write_config()
    return result


def _check_pool_memory(distinct: int, shape: tuple[int, ...], n_predictions: int) -> None:
    """Refuse a pool that cannot fit in memory, before building it (a one-line error with the numbers)."""
    per_sample = 4 * math.prod(shape) * (1 + n_predictions)  # float32 x_t and the frozen predictions
    need = distinct * per_sample
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return
    if need > 0.8 * available:
        raise ErasureError(f"the sample pool needs {need / 2**30:.1f} GiB ({distinct} samples) but {available / 2**30:.1f}"
                           " GiB are free; lower iterations or batch_size, or raise pool_reuse")


def _build_pool(unet, sampler: _Sampler, cfg: ESDConfig, emb_student, emb_concepts, emb_anchor, emb_from, emb_empty,
                rng, n_samples, counter, device, progress, lanes: int = 1, owned: set[int] | None = None,
                retain: bool = False) -> dict[str, Tensor]:
    """Draw every training sample's (concept, t_enc) and its x_t from full frozen trajectories, then the
    frozen predictions; ``n_samples / pool_reuse`` distinct samples. The training timestep is the latent's
    own level (``timestep="exact"``) or the original code's bucket (``"original"``): :func:`pooled_depth`.

    Trajectories group samples of one concept and one lane (sample i's lane: its batch position modulo
    ``lanes``); this process computes the trajectories and frozen predictions of its ``owned`` lanes only (the
    other entries stay zero). Every random draw is made whatever the lanes owned, so each process's samples
    are exactly those of a one-process run with the same lanes.

    ``retain=True``: the retain term's pool (``emb_concepts`` = the retain prompts, trajectories of each): one
    frozen prediction per sample, eps*(x_t, retain prompt), as ``eps_retain``."""
    distinct = max(1, math.ceil(n_samples / cfg.pool_reuse))
    _check_pool_memory(distinct, sampler.shape, 1 if retain else 3 if emb_from is not None else 2)
    steps = cfg.ddim_steps
    frozen_batch = resolve_frozen_batch(cfg.frozen_batch, unet)
    which = rng.integers(0, len(emb_concepts), size=distinct)
    t_enc = rng.integers(0, steps, size=distinct)
    depth = np.array([pooled_depth(int(k), steps, cfg.timestep) for k in t_enc])
    if cfg.timestep == "original":
        t_train = np.array([training_timestep(int(k), steps, rng) for k in t_enc])
    else:
        t_train = np.array([sampler.level(int(d)) for d in depth])
    # one trajectory serves up to `steps` samples of the same concept with distinct depths
    xs = torch.empty((distinct, *sampler.shape), device=device)
    owned = set(range(lanes)) if owned is None else owned
    lane_of = (np.arange(distinct) % cfg.batch_size) % lanes
    slots: dict[tuple[int, int], list[int]] = {}
    for i, c in enumerate(which):
        slots.setdefault((int(c), int(lane_of[i])), []).append(i)
    trajectories = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=distinct, desc="esd: sampling the frozen model's trajectories"
                   + (" (retain prompts)" if retain else ""), unit="sample")
    for (c, lane), members in slots.items():
        # assign members to trajectories so no trajectory has two members with the same depth
        queues: list[list[int]] = []
        for i in members:
            for q in queues:
                if all(depth[j] != depth[i] for j in q) and len(q) < steps:
                    q.append(i)
                    break
            else:
                queues.append([i])
        queues.sort(key=lambda q: max(int(depth[i]) for i in q))  # similar depths run together
        # the starting noise is drawn in fixed chunks of NOISE_CHUNK trajectories, whatever the UNet batch,
        # so frozen_batch changes memory and speed but not the pool (beyond float rounding)
        noise_all = torch.cat([torch.randn((len(queues[b : b + NOISE_CHUNK]), *sampler.shape),
                                           generator=torch.Generator().manual_seed(int(rng.integers(2**31))),
                                           dtype=torch.float32) for b in range(0, len(queues), NOISE_CHUNK)])
        batch = max(1, frozen_batch // 2)  # CFG doubles the UNet batch
        if lane not in owned:
            continue
        for b in range(0, len(queues), batch):
            group = queues[b : b + batch]
            noise = noise_all[b : b + batch]
            deepest = max(int(depth[i]) for q in group for i in q)
            states = sampler.run(emb_student[c : c + 1], emb_empty, noise, deepest)
            for g, q in enumerate(group):
                for i in q:
                    xs[i] = states[int(depth[i])][g].float()
            trajectories += len(group)
            if bar is not None:
                bar.update(sum(len(q) for q in group))
    if bar is not None:
        bar.close()
    t = torch.as_tensor(t_train, device=device)
    concept_idx = torch.as_tensor(which, device=device)
    if retain:
        contexts = [emb_concepts[concept_idx]]
    else:
        contexts = [emb_anchor[concept_idx], emb_concepts[concept_idx]]
    if emb_from is not None:  # the anchor is the empty prompt then (erase_from excludes anchor)
        contexts.append(emb_from[concept_idx])
    mine = torch.as_tensor(np.flatnonzero(np.isin(lane_of, sorted(owned))), device=device)
    if len(mine) == distinct:
        eps = _frozen_predictions(unet, xs, t, contexts, counter, batch=frozen_batch)
    else:  # this process's share only
        part = _frozen_predictions(unet, xs[mine], t[mine], [c[mine] for c in contexts], counter, batch=frozen_batch)
        eps = [torch.zeros_like(xs).index_copy_(0, mine, e) for e in part]
    if retain:
        return {"x": xs, "t": t, "concept": concept_idx, "eps_retain": eps[0], "trajectories": torch.tensor([trajectories])}
    pool = {"x": xs, "t": t, "concept": concept_idx, "eps_anchor": eps[0], "eps_concept": eps[1],
            "trajectories": torch.tensor([trajectories])}
    if emb_from is not None:
        pool["eps_from"] = eps[2]
    return pool


def _anchoring_loss(unet, autocast, teacher, x, t, reference, emb_prompts, n_random, generator, rng,
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
        frozen = unet(xa, ta, encoder_hidden_states=emb).sample
    with autocast():
        pred = unet(xa, ta, encoder_hidden_states=emb).sample
    counter.forward += 2 * len(emb)
    counter.backward += len(emb)
    return torch.nn.functional.mse_loss(pred.float(), frozen.float())


def _student_samples(unet, sampler, cfg, teacher, emb_student, emb_concepts, emb_anchor, emb_from, emb_empty, rng,
                     counter):
    """The original paper's x_t: sampled from the model being trained, fresh each iteration."""
    steps = cfg.ddim_steps
    which = int(rng.integers(0, len(emb_concepts)))
    t_enc = int(rng.integers(0, steps))
    depth = pooled_depth(t_enc, steps, cfg.timestep)
    t = training_timestep(t_enc, steps, rng) if cfg.timestep == "original" else sampler.level(depth)
    noise = torch.randn((cfg.batch_size, *sampler.shape), generator=torch.Generator().manual_seed(
        int(rng.integers(2**31))))
    x = sampler.run(emb_student[which : which + 1], emb_empty, noise, depth)[-1]
    device = x.device
    tt = torch.full((cfg.batch_size,), t, device=device)
    idx = torch.full((cfg.batch_size,), which, device=device)
    contexts = [emb_anchor[idx], emb_concepts[idx]] + ([emb_from[idx]] if emb_from is not None else [])
    with teacher():
        eps = _frozen_predictions(unet, x, tt, contexts, counter)
    return x, tt, idx, eps[0], eps[1], (eps[2] if emb_from is not None else None)
