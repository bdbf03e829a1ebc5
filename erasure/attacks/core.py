"""What every attack shares: the original/erased model pair, UNet pass counting, sampling from embeddings,
and the per-prompt :class:`Attempt` an attack returns.

An attack sees one :class:`AttackContext`: the pipeline with the erasure result (an Edit or Adapter, applied
and restored exactly as needed), the judge (any object with ``decide(images, concept) -> bool array``), the
concept, the sampler settings, the prompts and seeds. "Success" on a prompt means the judge says the erased
concept is present in the image the *erased* model generates.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from erasure.errors import ErasureError
from erasure.generation import SamplerSettings


@dataclass
class Attempt:
    """What an attack did on one prompt (after the unmodified prompt failed).

    ``prompt``: the adversarial prompt as text (for embedding-space probes, a description such as
    ``"<prompt> + 3.0 v"``); ``image``: the erased model's image of the last try (the successful one if any);
    ``step``: the try (UnlearnDiffAtk: the timestep block, 0-based) that succeeded, None if none did.
    """

    success: bool
    prompt: str
    image: np.ndarray | None
    step: int | None = None
    tries: int = 0
    details: dict[str, Any] = field(default_factory=dict)


class PassCounter:
    """Counts UNet rows: ``forward`` (no gradient) and ``forward_backward`` (a forward with gradients
    recorded, which the attack then back-propagates). A batch of B rows counts B; a CFG step counts 2."""

    def __init__(self) -> None:
        self.forward = 0
        self.forward_backward = 0
        self._handles: list[Any] = []

    def attach(self, unet: torch.nn.Module) -> "PassCounter":
        def hook(module, args, kwargs, output):
            sample = args[0] if args else kwargs.get("sample")
            rows = int(sample.shape[0]) if sample is not None else 1
            if torch.is_grad_enabled() and _requires_grad(output):
                self.forward_backward += rows
            else:
                self.forward += rows

        self._handles.append(unet.register_forward_hook(hook, with_kwargs=True))
        return self

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def snapshot(self) -> tuple[int, int]:
        return self.forward, self.forward_backward


def _requires_grad(output: Any) -> bool:
    sample = getattr(output, "sample", output[0] if isinstance(output, tuple) else output)
    return bool(getattr(sample, "requires_grad", False))


class ModelPair:
    """The original and the erased model as one pipeline with the result applied or restored, or as two
    pipelines. ``use("erased")`` / ``use("original")`` switch (idempotent); :meth:`pipe` gives the pipeline to run."""

    def __init__(self, pipe, result=None, *, original_pipe=None) -> None:
        if result is not None and getattr(result, "kind", None) == "edit" and result.originals is None:
            # an edit loaded from a file: keep the base values it replaces, so that restoring is exact
            import dataclasses

            from erasure.edit import pipeline_parameter

            result.check_base(pipe)
            originals = {name: pipeline_parameter(pipe, name).detach().clone() for name in result.tensors}
            result = dataclasses.replace(result, originals=originals)
        self.result = result
        self._pipe = pipe
        self._original_pipe = original_pipe
        self.state = "erased" if result is None else "original"
        if result is None and original_pipe is None:
            self.has_original = False
        else:
            self.has_original = True

    def use(self, which: str):
        """The pipeline that is now ``which`` ("original" or "erased")."""
        if which not in ("original", "erased"):
            raise ValueError(which)
        if self.result is None:
            if which == "original":
                if self._original_pipe is None:
                    raise ErasureError("this attack needs the original model too: pass the erasure result (edit=) "
                                       "with the unedited pipeline, or original_pipe=")
                return self._original_pipe
            return self._pipe
        if which != self.state:
            if which == "erased":
                self.result.apply(self._pipe, check=False)
            else:
                self.result.restore(self._pipe)
            self.state = which
        return self._pipe

    def finish(self) -> None:
        """Leave the pipeline as it was given (the result not applied)."""
        if self.result is not None and self.state == "erased":
            self.result.restore(self._pipe)
            self.state = "original"

    @property
    def erased_pipe(self):
        return self.use("erased")


@dataclass
class AttackContext:
    """Everything an attack needs for one run (see the module docstring)."""

    models: ModelPair
    judge: Any
    concept: str
    settings: SamplerSettings
    prompts: Sequence[str]
    seeds: Sequence[int]
    seed: int = 0
    counter: PassCounter = field(default_factory=PassCounter)
    original_images: dict[int, np.ndarray] = field(default_factory=dict)  # prompt index -> original's image
    extra: dict[str, Any] = field(default_factory=dict)
    # image_cache: shared by runs on the same models (run_attack's image_cache); weights: which -> fingerprint
    image_cache: dict | None = None
    weights: dict[str, Any] = field(default_factory=dict)
    reused: dict[int, set] = field(default_factory=dict)  # prompt index -> which images came from image_cache

    def decide(self, images: np.ndarray) -> np.ndarray:
        out = np.asarray(self.judge.decide(images, self.concept), dtype=bool).reshape(-1)
        if out.shape[0] != len(images):
            raise ErasureError(f"the judge returned {out.shape[0]} decisions for {len(images)} images")
        return out

    def generate(self, prompts: Sequence[str], seeds: Sequence[int], *, which: str = "erased",
                 settings: SamplerSettings | None = None) -> np.ndarray:
        from erasure.generation import generate_images

        pipe = self.models.use(which)
        return generate_images(pipe, list(prompts), [int(s) for s in seeds], settings or self.settings, progress=False)

    def original_image(self, index: int) -> np.ndarray:
        """The original model's image of prompt ``index`` at its seed (cached: UDA's target, the grid's column)."""
        if index not in self.original_images:
            self.original_images[index] = self.plain_image(index, "original")
        return self.original_images[index]

    def plain_image(self, index: int, which: str = "erased") -> np.ndarray:
        """``which`` model's image of prompt ``index`` unmodified, at its seed and the run's sampler; from
        ``image_cache`` when another run on the same weights made it (deterministic generation: the same
        pixels), else generated (and stored there)."""
        if self.image_cache is None:
            return self.generate([self.prompts[index]], [self.seeds[index]], which=which)[0]
        import dataclasses
        import json

        key = json.dumps([which, self.weights[which], self.prompts[index], int(self.seeds[index]),
                          dataclasses.asdict(self.settings)], sort_keys=True, default=str)
        if key in self.image_cache:
            self.reused.setdefault(index, set()).add(which)
        else:
            self.image_cache[key] = self.generate([self.prompts[index]], [self.seeds[index]], which=which)[0]
        return self.image_cache[key]

    def random(self, index: int, salt: int = 0) -> torch.Generator:
        """A CPU generator for prompt ``index``: the attack's randomness depends on (seed, prompt, salt) only,
        so a prompt's result does not depend on which process or in which order it ran."""
        return torch.Generator("cpu").manual_seed((int(self.seed) * 1_000_003 + index * 7919 + salt) % (2**63))


def unet_dtype_device(pipe) -> tuple[torch.dtype, torch.device]:
    p = next(pipe.unet.parameters())
    return p.dtype, p.device


def encode(pipe, prompts: Sequence[str]) -> torch.Tensor:
    """Text-encoder outputs (the pipeline's conditioning) of ``prompts``, in the UNet's dtype."""
    from erasure.text import encode_prompts

    return encode_prompts(pipe, list(prompts))


def initial_latents(pipe, seeds: Sequence[int], settings: SamplerSettings, scale: float = 1.0) -> torch.Tensor:
    """The initial noise the pipeline would draw for each seed (one generator per image, as
    :func:`erasure.generation.generate_images`), times ``scale``."""
    from diffusers.utils.torch_utils import randn_tensor

    dtype, device = unet_dtype_device(pipe)
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    h = (settings.height or size) // pipe.vae_scale_factor
    w = (settings.width or size) // pipe.vae_scale_factor
    gen_device = "cuda" if device.type == "cuda" else "cpu"
    rows = [randn_tensor((1, pipe.unet.config.in_channels, h, w), generator=torch.Generator(gen_device).manual_seed(int(s)),
                         device=device, dtype=dtype) for s in seeds]
    return torch.cat(rows) * scale


@torch.no_grad()
def sample_from_embeddings(pipe, prompt_embeds: torch.Tensor, seeds: Sequence[int], settings: SamplerSettings, *,
                           latents: torch.Tensor | None = None, eta: float | None = None,
                           callback: Callable | None = None) -> np.ndarray:
    """Images (uint8) from conditioning ``prompt_embeds`` (N, 77, d), one seed each; the negative is the
    sampler's negative prompt (or ""). ``callback`` is diffusers' ``callback_on_step_end``."""
    n = prompt_embeds.shape[0]
    if len(seeds) != n:
        raise ErasureError(f"got {n} embeddings but {len(seeds)} seeds")
    negative = encode(pipe, [settings.negative_prompt or ""] * n)
    if latents is None:
        latents = initial_latents(pipe, seeds, settings)
    pipe.set_progress_bar_config(disable=True)
    kwargs: dict[str, Any] = {}
    if callback is not None:
        kwargs["callback_on_step_end"] = callback
    images = pipe(prompt_embeds=prompt_embeds.to(negative.dtype), negative_prompt_embeds=negative,
                  num_inference_steps=settings.steps, guidance_scale=settings.guidance,
                  eta=settings.eta if eta is None else eta, latents=latents, height=settings.height,
                  width=settings.width, output_type="np", **kwargs).images
    return np.clip(np.rint(images * 255), 0, 255).astype(np.uint8)


@contextlib.contextmanager
def token_embeddings_replaced(text_encoder, replace: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """While active, the text encoder's token-embedding output ``e`` (B, L, d) for ids ``ids`` becomes
    ``replace(ids, e)``; position embeddings, the causal mask and the rest of the encoder run as usual. This is
    UnlearnDiffAtk's ``CustomTextEncoder`` (embeddings in, hidden states out) without copying the encoder's
    forward, so it works with every transformers version."""
    embedding = text_encoder.get_input_embeddings()

    def hook(module, args, output):
        return replace(args[0], output)

    handle = embedding.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def vae_latent(pipe, images: np.ndarray) -> torch.Tensor:
    """The VAE posterior mean of uint8 images, times the VAE's scaling factor (the diffusion model's x0)."""
    dtype = next(pipe.vae.parameters()).dtype
    device = next(pipe.vae.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1)
    with torch.no_grad():
        latent = pipe.vae.encode(x.to(device, dtype)).latent_dist.mean
    return latent.float() * float(pipe.vae.config.scaling_factor)


def noise_prediction_target(prediction_type: str, x0: torch.Tensor, noise: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """What the UNet is trained to predict at x_t = sqrt(a) x0 + sqrt(1-a) noise: the noise (epsilon) or
    v = sqrt(a) noise - sqrt(1-a) x0 (v-prediction, SD 2.x)."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * x0
    raise ErasureError(f"prediction type {prediction_type!r} is not supported by the attacks (epsilon or v_prediction)")
