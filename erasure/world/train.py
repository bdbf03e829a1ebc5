"""Training of the built-in world's models, stage by stage, seeded, logged and resumable.

Stages: ``clip`` (dual encoder), ``vae``, ``classifier`` (need nothing), then ``unet`` (needs
the CLIP text tower and the VAE), then ``assemble`` (writes the diffusers folder and the
instruments into the package). Each stage checkpoints to ``<run>/<stage>/checkpoint.safetensors``
(model, optimizer and EMA state; no pickle) every ``checkpoint_every`` steps and resumes from it.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from erasure.world import captions as cap
from erasure.world import models
from erasure.world.instruments import images_to_tensor
from erasure.world.render import ATTRIBUTES, WORLD1, WORLDS, Scene, WorldSpec, render_batch, sample_empty_scene, sample_world_scene


@dataclass
class StageConfig:
    steps: int
    batch_size: int
    lr: float
    warmup: int = 100
    seed: int = 0
    checkpoint_every: int = 250
    log_every: int = 50
    extra: dict = field(default_factory=dict)
    world: int = 1  # which world's scenes (erasure.world.render.WORLDS)

    @property
    def spec(self) -> WorldSpec:
        return WORLDS[self.world]


DEFAULT_STAGES: dict[str, StageConfig] = {
    "clip": StageConfig(steps=1500, batch_size=128, lr=5e-4, seed=1),
    "clip_image": StageConfig(steps=600, batch_size=128, lr=3e-4, warmup=50, seed=6),
    "vae": StageConfig(steps=1700, batch_size=32, lr=1e-3, seed=2, extra={"kl_weight": 1e-6, "edge_weight": 1.0}),
    "classifier": StageConfig(steps=1200, batch_size=128, lr=2e-3, seed=3),
    "unet": StageConfig(
        steps=10000, batch_size=64, lr=4e-4, warmup=200, seed=4,
        extra={"pool": 100_000, "caption_dropout": 0.1, "ema": 0.999, "snr_gamma": 5.0, "empty_fraction": 0.04},
    ),
}


# World 2 (24 objects, identities, the halo): longer stages for the richer captions and images, and a more
# varied unconditional distribution (10% empty scenes in the UNet's pool). The UNet's 11,000 steps fit the
# 2.5-hour budget on 2 cores (about 0.6 s a step on one thread while lane A runs, 0.5 s on two after).
WORLD2_STAGES: dict[str, StageConfig] = {
    "clip": StageConfig(steps=2500, batch_size=128, lr=5e-4, seed=21, world=2),
    "clip_image": StageConfig(steps=900, batch_size=128, lr=3e-4, warmup=50, seed=26, world=2),
    "vae": StageConfig(steps=2000, batch_size=32, lr=1e-3, seed=22, world=2,
                       extra={"kl_weight": 1e-6, "edge_weight": 1.0}),
    "classifier": StageConfig(steps=2000, batch_size=128, lr=2e-3, seed=23, world=2),
    "unet": StageConfig(
        steps=11000, batch_size=64, lr=4e-4, warmup=200, seed=24, world=2,
        extra={"pool": 150_000, "caption_dropout": 0.1, "ema": 0.999, "snr_gamma": 5.0, "empty_fraction": 0.1},
    ),
}
STAGES: dict[int, dict[str, StageConfig]] = {1: DEFAULT_STAGES, 2: WORLD2_STAGES}


# ----------------------------------------------------------------------------- utilities


def _lr_at(step: int, cfg: StageConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], str]:
    sd = opt.state_dict()
    tensors = {}
    for idx, state in sd["state"].items():
        for k, v in state.items():
            tensors[f"opt.{idx}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    return tensors, json.dumps(sd["param_groups"])


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], groups: str) -> dict:
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = v
    return {"state": state, "param_groups": json.loads(groups)}


def save_checkpoint(path: Path, step: int, model: torch.nn.Module, opt, ema: torch.nn.Module | None, rng_state: dict) -> None:
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v.detach().contiguous() for k, v in ema.state_dict().items()})
    opt_tensors, groups = _flatten_optimizer(opt)
    tensors.update(opt_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {"step": str(step), "param_groups": groups, "rng": json.dumps(rng_state)}
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)


def load_checkpoint(path: Path, model, opt, ema=None) -> tuple[int, dict]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        t = {k: f.get_tensor(k) for k in f.keys()}
    model.load_state_dict({k[6:]: v for k, v in t.items() if k.startswith("model.")})
    if ema is not None:
        ema.load_state_dict({k[4:]: v for k, v in t.items() if k.startswith("ema.")})
    opt.load_state_dict(_unflatten_optimizer({k: v for k, v in t.items() if k.startswith("opt.")}, meta["param_groups"]))
    rng = json.loads(meta["rng"])
    if "rng.torch" in t:
        rng["torch"] = t["rng.torch"]
    return int(meta["step"]), rng


class Logger:
    def __init__(self, folder: Path):
        self.path = folder / "log.jsonl"
        self.t0 = time.time()

    def __call__(self, **row) -> None:
        row["elapsed_s"] = round(time.time() - self.t0, 1)
        line = json.dumps(row)
        print(line, flush=True)
        with open(self.path, "a") as f:
            f.write(line + "\n")


def _sample_scenes(rng: np.random.Generator, n: int, empty_fraction: float = 0.0, spec: WorldSpec = WORLD1) -> list[Scene]:
    return [sample_empty_scene(rng) if rng.random() < empty_fraction else sample_world_scene(rng, spec)
            for _ in range(n)]


def _run_loop(name: str, run: Path, cfg: StageConfig, model, step_fn, ema_decay: float | None = None) -> torch.nn.Module:
    """The loop every stage shares: lr schedule, logging, checkpoint/resume, EMA."""
    import copy

    folder = run / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
    torch.manual_seed(cfg.seed)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=0.0)
    ema = copy.deepcopy(model).requires_grad_(False) if ema_decay else None
    ckpt = folder / "checkpoint.safetensors"
    step = 0
    rng = np.random.default_rng(cfg.seed)
    if ckpt.exists():
        step, rng_state = load_checkpoint(ckpt, model, opt, ema)
        rng.bit_generator.state = rng_state["numpy"]
        if "torch" in rng_state:  # exact resumption: the run continues as if never interrupted
            torch.set_rng_state(rng_state["torch"])
        else:
            torch.manual_seed(cfg.seed + step)
        print(f"[{name}] resumed at step {step}", flush=True)
    log = Logger(folder)
    running: dict[str, float] = {}
    model.train()
    while step < cfg.steps:
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, cfg)
        losses = step_fn(rng, step)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if ema is not None:
            with torch.no_grad():
                d = min(ema_decay, (1 + step) / (10 + step))
                for pe, pm in zip(ema.parameters(), model.parameters()):
                    pe.lerp_(pm, 1 - d)
                for be, bm in zip(ema.buffers(), model.buffers()):
                    be.copy_(bm)
        step += 1
        for k, v in losses.items():
            running[k] = running.get(k, 0.0) + float(v.detach())
        if step % cfg.log_every == 0 or step == cfg.steps:
            n = cfg.log_every if step % cfg.log_every == 0 else step % cfg.log_every
            log(stage=name, step=step, lr=round(_lr_at(step - 1, cfg), 7), **{k: round(v / n, 5) for k, v in running.items()})
            running = {}
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            save_checkpoint(ckpt, step, model, opt, ema, {"numpy": rng.bit_generator.state})
    final = ema if ema is not None else model
    final.eval()
    return final


# ----------------------------------------------------------------------------- stages


def _tokenize(tokenizer, texts: list[str], padding: str = "longest") -> torch.Tensor:
    return tokenizer(texts, padding=padding, max_length=77, truncation=True, return_tensors="pt").input_ids


def _caption_matches(scenes: list[Scene], names: list[dict], spec: WorldSpec = WORLD1) -> torch.Tensor:
    """(captions x images) boolean: caption i is true of image j (every attribute it names agrees).

    In world 2 a caption's identity and halo must agree too, and a caption naming neither is not true of an
    identity or a haloed object (the training captions always name them)."""
    keys = list(ATTRIBUTES)
    codes = {k: {v: i for i, v in enumerate(vals)} for k, vals in spec.attributes.items() if k in keys}
    labels = torch.tensor([[codes[k].get(s.labels()[k], -2) for k in keys] for s in scenes])
    named = torch.tensor([[codes[k][nm[k]] if nm.get(k) is not None else -1 for k in keys] for nm in names])
    agree = ((named[:, None, :] == -1) | (named[:, None, :] == labels[None, :, :])).all(dim=2)
    if spec.version > 1:
        for key in ("identity", "halo"):
            image_values = [s.world_labels()[key] for s in scenes]
            agree &= torch.tensor([[nm.get(key) == v for v in image_values] for nm in names])
    return agree


def _clip_step_fn(model, tokenizer, cfg: StageConfig, caption=None):
    """Contrastive dual-encoder loss. Since we know which captions are true of which images, the
    targets are that (captions x images) truth table, normalised: "a red shape" matches every
    red object in the batch instead of being pushed away from all but one of them.

    ``caption(scene, rng) -> (text, names)`` captions each scene (default: the world's training caption)."""
    if caption is None:
        def caption(scene, rng):
            return cap.world_training_caption(scene, rng, cfg.world)

    def step_fn(rng, step):
        scenes = _sample_scenes(rng, cfg.batch_size, empty_fraction=0.03, spec=cfg.spec)
        images, _ = render_batch(scenes)
        names = []
        texts = []
        for s in scenes:
            text, nm = caption(s, rng)
            texts.append(text)
            names.append(nm)
        # an empty scene's caption names "no object": it matches only empty scenes of its background
        truth = _caption_matches(scenes, names, cfg.spec)
        for i, s in enumerate(scenes):
            if s.shape is None:
                truth[i] = torch.tensor([t.shape is None and t.background == s.background for t in scenes])
        for j, s in enumerate(scenes):
            if s.shape is None:
                truth[:, j] &= torch.tensor([scenes[i].shape is None for i in range(len(scenes))])
        truth[range(len(scenes)), range(len(scenes))] = True
        pixels = images_to_tensor(images) * 2 - 1
        out = model(input_ids=_tokenize(tokenizer, texts), pixel_values=pixels)
        logits = out.logits_per_text  # (captions, images)
        t = truth.float()
        loss_t = -(F.log_softmax(logits, 1) * (t / t.sum(1, keepdim=True))).sum(1).mean()
        loss_i = -(F.log_softmax(logits.T, 1) * (t.T / t.T.sum(1, keepdim=True))).sum(1).mean()
        return {"loss": (loss_t + loss_i) / 2}

    return step_fn


def train_clip(run: Path, cfg: StageConfig, tokenizer):
    """Stage 1: the whole dual encoder. Its text tower becomes the pipeline's text encoder."""
    torch.manual_seed(cfg.seed)  # seeded initialisation
    model = models.build_clip()
    return _run_loop("clip", run, cfg, model, _clip_step_fn(model, tokenizer, cfg))


def train_clip_image(run: Path, cfg: StageConfig, tokenizer, clip):
    """Stage 2, alongside the UNet: only the image tower and the two projections keep learning.

    The text transformer is frozen because it *is* the pipeline's text encoder (the UNet is
    trained on its outputs); the text projection is not part of the pipeline, so it may move.
    """
    clip.requires_grad_(False)
    for part in (clip.vision_model, clip.visual_projection, clip.text_projection):
        part.requires_grad_(True)
    clip.logit_scale.requires_grad_(True)
    return _run_loop("clip_image", run, cfg, clip, _clip_step_fn(clip, tokenizer, cfg))


def train_vae(run: Path, cfg: StageConfig):
    torch.manual_seed(cfg.seed)
    model = models.build_vae()
    kl_weight = cfg.extra.get("kl_weight", 1e-6)
    extra_edge = cfg.extra.get("edge_weight", 0.0)

    def step_fn(rng, step):
        images, _ = render_batch(_sample_scenes(rng, cfg.batch_size, empty_fraction=0.03, spec=cfg.spec))
        x = images_to_tensor(images) * 2 - 1
        post = model.encode(x).latent_dist
        rec = model.decode(post.sample()).sample
        l1 = (rec - x).abs().mean()
        kl = post.kl().mean()
        # L1 on image gradients: textures are high-frequency, and plain L1 learns them last
        edges = sum(((torch.diff(rec, dim=d) - torch.diff(x, dim=d)).abs().mean() for d in (2, 3)))
        loss = l1 + extra_edge * edges + kl_weight * kl
        return {"loss": loss, "l1": l1.detach(), "edges": edges.detach(), "kl": kl.detach()}

    return _run_loop("vae", run, cfg, model, step_fn)


def degrade(images: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Augment renders toward what a generator produces: blur, noise, small colour shifts."""
    n = images.shape[0]
    out = images.clone()
    blur = torch.tensor([1.0, 2.0, 1.0]) / 4
    k = (blur[:, None] * blur[None, :]).expand(3, 1, 3, 3)
    which = torch.from_numpy(rng.random(n) < 0.4)
    if which.any():
        out[which] = F.conv2d(F.pad(out[which], (1, 1, 1, 1), mode="replicate"), k, groups=3)
    noise = torch.from_numpy(rng.uniform(0, 0.05, (n, 1, 1, 1))).float()
    out = out + noise * torch.randn_like(out)
    shift = torch.from_numpy(rng.uniform(-0.04, 0.04, (n, 3, 1, 1))).float()
    return (out + shift).clamp(0, 1)


def _with_extras(scene: Scene, rng: np.random.Generator, spec: WorldSpec) -> Scene:
    import dataclasses

    mark = scene.mark or rng.random() < 0.08
    halo = scene.halo or rng.random() < 0.06
    identity = spec.identity_of(scene.shape, scene.colour, scene.texture, "mark" if mark else None)
    return dataclasses.replace(scene, mark=mark, halo=halo, identity=identity)


def train_classifier(run: Path, cfg: StageConfig):
    torch.manual_seed(cfg.seed)
    spec = cfg.spec
    model = models.AttributeClassifier(width=32, attributes=spec.attributes)
    index = {a: {v: i for i, v in enumerate(c)} for a, c in model.classes.items()}

    def step_fn(rng, step):
        # held-out combinations are rendered too: the instrument must know every combination
        scenes = [
            sample_empty_scene(rng) if rng.random() < 0.06 else sample_world_scene(rng, spec, allow_held_out=True)
            for _ in range(cfg.batch_size)
        ]
        if spec.version > 1:  # the mark and the halo anywhere, alone or together: an erased model may misplace them
            scenes = [_with_extras(s, rng, spec) if s.shape is not None else s for s in scenes]
        images, _ = render_batch(scenes)
        x = degrade(images_to_tensor(images), rng)
        logits = model(x)
        losses = {}
        for a in model.classes:
            y = torch.tensor([index[a][s.world_labels()[a] or "none"] for s in scenes])
            losses[a] = F.cross_entropy(logits[a], y)
        losses["loss"] = sum(losses.values())
        return losses

    return _run_loop("classifier", run, cfg, model, step_fn)


@torch.no_grad()
def build_latent_pool(run: Path, vae, n: int, seed: int, empty_fraction: float,
                      spec: WorldSpec = WORLD1) -> tuple[torch.Tensor, list[Scene]]:
    """Encode a fixed pool of renders once (mean and std of the posterior); the UNet stage then
    samples latents from it without running the VAE encoder every step."""
    path = run / "unet" / "latent_pool.safetensors"
    rng = np.random.default_rng(seed)
    scenes = _sample_scenes(rng, n, empty_fraction, spec)
    made_with = {"seed": str(seed), "n": str(n), "empty_fraction": str(empty_fraction)}
    if spec.version != 1:
        made_with["world"] = str(spec.version)
    if path.exists():
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            moments = f.get_tensor("moments")
        # the scenes (and so the captions) are re-drawn from the seed: a pool made with other settings
        # would pair latents with wrong labels (pools written before this check carry no metadata)
        if meta and any(meta.get(k) != v for k, v in made_with.items()):
            raise RuntimeError(f"{path} was encoded with {meta}, this stage wants {made_with}; "
                               "delete it to re-encode")
        if not meta and len(moments) != n:
            raise RuntimeError(f"{path} holds {len(moments)} latents, this stage wants {n}; delete it to re-encode")
        return moments, scenes
    path.parent.mkdir(parents=True, exist_ok=True)
    moments = []
    for i in range(0, n, 256):
        images, _ = render_batch(scenes[i : i + 256])
        x = images_to_tensor(images) * 2 - 1
        moments.append(vae.encode(x).latent_dist.parameters.half())
    moments = torch.cat(moments)
    moments = moments.contiguous()
    save_file({"moments": moments}, str(path), metadata=made_with)
    return moments, scenes


def folder_sha256(folder: Path) -> str:
    """One hash over every file of a folder (sorted relative paths and their bytes)."""
    import hashlib

    h = hashlib.sha256()
    for p in sorted(Path(folder).rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def latent_scaling_factor(moments: torch.Tensor) -> float:
    mean = moments[:, : models.LATENT_CHANNELS].float()
    return float(1.0 / mean.std())


def train_unet(run: Path, cfg: StageConfig, tokenizer, text_encoder, vae):
    from diffusers import DDPMScheduler

    extra = cfg.extra
    moments, scenes = build_latent_pool(run, vae, extra["pool"], cfg.seed, extra["empty_fraction"], cfg.spec)
    scaling = latent_scaling_factor(moments)
    if extra.get("init"):  # continue from a trained UNet: its latent scale must stay the same
        vae_config = Path(extra["init"]).parent / "vae" / "config.json"
        scaling = float(json.loads(vae_config.read_text())["scaling_factor"])
    (run / "unet" / "scaling_factor.json").write_text(json.dumps({"scaling_factor": scaling}))
    noise_sched = DDPMScheduler(**models.noise_scheduler_config())
    alphas = noise_sched.alphas_cumprod
    snr = alphas / (1 - alphas)
    text_encoder.requires_grad_(False).eval()
    torch.manual_seed(cfg.seed)
    model = models.build_unet()
    if extra.get("init"):
        from diffusers import UNet2DConditionModel

        model.load_state_dict(UNet2DConditionModel.from_pretrained(extra["init"]).state_dict())

    def step_fn(rng, step):
        idx = rng.integers(len(scenes), size=cfg.batch_size)
        m = moments[torch.from_numpy(idx)].float()
        mean, logvar = m.chunk(2, dim=1)
        latents = (mean + torch.exp(0.5 * logvar.clamp(-30, 20)) * torch.randn_like(mean)) * scaling
        texts = ["" if rng.random() < extra["caption_dropout"] else cap.world_training_caption(scenes[i], rng, cfg.world)[0]
                 for i in idx]
        with torch.no_grad():
            ctx = text_encoder(_tokenize(tokenizer, texts, padding="max_length"))[0]
        noise = torch.randn_like(latents)
        t = torch.randint(0, 1000, (cfg.batch_size,))
        noisy = noise_sched.add_noise(latents, noise, t)
        pred = model(noisy, t, ctx).sample
        # min-SNR-gamma weighting (Hang et al. 2023) for epsilon prediction: faster convergence
        w = torch.clamp(snr[t], max=extra["snr_gamma"]) / snr[t]
        mse = ((pred - noise) ** 2).mean(dim=(1, 2, 3))
        return {"loss": (w * mse).mean(), "mse": mse.mean().detach()}

    return _run_loop("unet", run, cfg, model, step_fn, ema_decay=extra["ema"]), scaling
