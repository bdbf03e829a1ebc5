"""The result of an adapter-based erasure: an :class:`Adapter`, a frozen set of LoRA factors.

An adapter holds peft LoRA factors (``<module>.lora_A.weight`` / ``.lora_B.weight``, keyed exactly as
``peft.get_peft_model_state_dict`` returns them), the ``LoraConfig`` they need, the sha256 of every
base weight they target (so another base model is refused), and the method, concepts and config that
made them. It is attached to a pipeline as a named peft adapter, so several stack, each with its own
scale, and switch on and off at run time; ``fuse`` writes it into the weights instead.

    adapter = erasure.erase(pipe, "lora-esd", "circle")
    adapter.apply(pipe, scale=1.0)        # a peft adapter named adapter.default_name
    adapter.restore(pipe)                 # detach it (exact)
    adapter.save("circle-lora")           # a folder pipe.load_lora_weights(...) reads
    edit = adapter.to_edit(pipe)          # dense fused weights, an Edit
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from erasure.edit import Edit, _config_key
from erasure.errors import ErasureError
from erasure.modules import target_layer
from erasure.precision import base_matches

ADAPTER_FORMAT = "erasure.adapter/1"
LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
SCALE_RANGE = (0.0, 4.0)  # beyond 4x an erasure adapter only degrades the model; negative scales un-erase
_STATE = "erasure_adapters"  # attribute on the UNet: name -> {"adapter", "scale", "fused" (originals or None)}


def _frozen(d: Mapping) -> Mapping:
    return MappingProxyType(dict(d))


def lora_config_dict(target_modules: Sequence[str], rank: int, alpha: float | None = None, *,
                     rank_pattern: Mapping[str, int] | None = None,
                     alpha_pattern: Mapping[str, float] | None = None) -> dict[str, Any]:
    """The ``LoraConfig`` keyword arguments of an erasure adapter (``alpha`` defaults to ``rank``: scale 1,
    which every LoRA loader, kohya's included, reads the same way)."""
    out = {"r": int(rank), "lora_alpha": float(rank if alpha is None else alpha),
           "target_modules": sorted(target_modules), "init_lora_weights": True}
    if rank_pattern:
        out["rank_pattern"] = dict(rank_pattern)
    if alpha_pattern:
        out["alpha_pattern"] = dict(alpha_pattern)
    return out


def check_scale(scale: float) -> float:
    scale = float(scale)
    if not (SCALE_RANGE[0] <= scale <= SCALE_RANGE[1]) or math.isnan(scale):
        raise ErasureError(f"adapter scale {scale} is out of range; use {SCALE_RANGE[0]:g} to {SCALE_RANGE[1]:g} "
                           "(1 = as trained, 0 = off)")
    return scale


def attached(pipe) -> dict[str, dict]:
    """The erasure adapters attached to ``pipe`` (name -> state); empty if none."""
    return getattr(pipe.unet, _STATE, None) or {}


@dataclass(frozen=True)
class Adapter:
    """LoRA factors that erase ``concepts`` from a model, and how they were made."""

    method: str
    concepts: tuple[str, ...]
    config: Mapping[str, Any]
    peft_state_dict: Mapping[str, Tensor]
    lora_config: Mapping[str, Any]
    base_hashes: Mapping[str, str]  # "unet.<module>.weight" -> sha256 of the base weight
    info: Mapping[str, Any] = field(default_factory=dict, compare=False)
    # as Edit: the base model's load dtype and the base weights' hashes rounded to fp16 / bf16
    base_dtype: str | None = None
    base_hashes_rounded: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    kind = "adapter"  # the result protocol (erasure.results)

    def __eq__(self, other: object) -> bool:
        """Same method, concepts, config, LoRA config, base and factors (tensors compared exactly)."""
        if not isinstance(other, Adapter):
            return NotImplemented
        return (self.method == other.method and self.concepts == other.concepts
                and _config_key(self.config) == _config_key(other.config) and dict(self.lora_config) == dict(other.lora_config)
                and dict(self.base_hashes) == dict(other.base_hashes)
                and set(self.peft_state_dict) == set(other.peft_state_dict)
                and all(torch.equal(v.cpu(), other.peft_state_dict[k].cpu()) for k, v in self.peft_state_dict.items()))

    __hash__ = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        object.__setattr__(self, "concepts", tuple(self.concepts))
        # the config as it is saved (JSON: tuples become lists), so a loaded adapter has the same config
        object.__setattr__(self, "config", json.loads(json.dumps(dict(self.config), default=str)))
        for name in ("config", "peft_state_dict", "lora_config", "base_hashes", "info"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))
        object.__setattr__(self, "base_hashes_rounded", _frozen({k: _frozen(v) for k, v in
                                                                 self.base_hashes_rounded.items()}))
        modules = self.modules
        missing = [m for m in modules if f"unet.{m}.weight" not in self.base_hashes]
        if missing:
            raise ValueError(f"adapter has no base hash for {missing[:3]}")
        for m in modules:
            if f"{m}.lora_A.weight" not in self.peft_state_dict or f"{m}.lora_B.weight" not in self.peft_state_dict:
                raise ValueError(f"adapter lacks lora_A or lora_B for {m}")
        bad = next((k for k, v in self.peft_state_dict.items() if not torch.isfinite(v).all()), None)
        if bad is not None:
            raise ErasureError(f"the adapter's {bad} holds non-finite values (NaN or inf): training diverged; "
                               "make it again with a lower lr")

    # --- what it is -------------------------------------------------------------------------

    @property
    def modules(self) -> tuple[str, ...]:
        """The UNet modules it targets."""
        return tuple(sorted({k.rsplit(".lora_", 1)[0] for k in self.peft_state_dict}))

    @property
    def default_name(self) -> str:
        """A name for the attached peft adapter: method, concepts and a content hash."""
        h = hashlib.sha256()
        for k in sorted(self.peft_state_dict):
            h.update(k.encode())
            h.update(self.peft_state_dict[k].detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        words = "-".join(c.replace(" ", "_") for c in self.concepts)[:40]
        return f"{self.method}-{words}-{h.hexdigest()[:8]}"

    def scaling(self, module: str) -> float:
        """peft's lora_alpha / r for ``module`` (rank_pattern / alpha_pattern keys match name suffixes)."""
        cfg = self.lora_config

        def pick(pattern: Mapping | None, default):
            for key, value in (pattern or {}).items():
                if module == key or module.endswith(f".{key}"):
                    return value
            return default

        r = pick(cfg.get("rank_pattern"), cfg["r"])
        alpha = pick(cfg.get("alpha_pattern"), cfg["lora_alpha"])
        return float(alpha) / float(r)

    def deltas(self, scale: float = 1.0) -> dict[str, Tensor]:
        """``unet.<module>.weight`` -> scale * (alpha/r) * B @ A, float32 (1x1 convolutions in conv shape)."""
        out = {}
        for m in self.modules:
            a, b = self.peft_state_dict[f"{m}.lora_A.weight"], self.peft_state_dict[f"{m}.lora_B.weight"]
            if a.ndim == 4 and a.shape[2:] != (1, 1):
                raise ErasureError(f"{m}: only 1x1 convolution adapters can be fused (kernel {tuple(a.shape[2:])})")
            d = b.float().flatten(1) @ a.float().flatten(1) * (scale * self.scaling(m))
            out[f"unet.{m}.weight"] = d.reshape(b.shape[0], a.shape[1], *a.shape[2:])
        return out

    @property
    def size_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.peft_state_dict.values())

    # --- checks -------------------------------------------------------------------------------

    def check_base(self, pipe, *, hashes: bool = True) -> None:
        """ErasureError unless ``pipe`` has every targeted layer, of the right shape (and, with ``hashes``,
        the same base weights this adapter was made from)."""
        fused = [s["fused"] for s in attached(pipe).values() if s["fused"] is not None]
        for m in self.modules:
            layer = target_layer(pipe.unet, m)
            a, b = self.peft_state_dict[f"{m}.lora_A.weight"], self.peft_state_dict[f"{m}.lora_B.weight"]
            expected = (b.shape[0], a.shape[1], *a.shape[2:])
            if tuple(layer.weight.shape) != tuple(expected):
                raise ErasureError(f"{m} has shape {tuple(layer.weight.shape)} but the adapter expects {expected}; "
                                   "it was made for another base model")
            # the base is the weight before any erasure adapter was fused into it
            base = next((f[m] for f in fused if m in f), layer.weight)
            if not hashes:
                continue
            key = f"unet.{m}.weight"
            match = base_matches(base, {"exact": self.base_hashes[key], **self.base_hashes_rounded.get(key, {})},
                                 self.base_dtype)
            if match is None:
                raise ErasureError(f"this adapter was made on a {self.base_dtype} load and the pipeline is "
                                   f"{base.dtype}; load the model in fp32 or in the adapter's dtype")
            if not match:
                raise ErasureError(f"{m} differs from the weights this adapter was made from; use the same base "
                                   "model (or pass check=False)")

    # --- attaching ----------------------------------------------------------------------------

    def _attachable(self, pipe, scale: float, name: str | None, check: bool) -> tuple[float, str, dict]:
        """Checked (scale, name, attached-state copy) for attaching or fusing: a valid scale, a free name,
        the right base model."""
        scale = check_scale(scale)
        name = name or self.default_name
        state = dict(attached(pipe))
        if name in state:
            raise ErasureError(f"an adapter named {name!r} is already attached; restore it first or pass another name")
        self.check_base(pipe, hashes=check)
        return scale, name, state

    def apply(self, pipe, scale: float = 1.0, name: str | None = None, *, check: bool = True):
        """Attach as the peft adapter ``name`` (default :attr:`default_name`) with ``scale``; adapters
        already attached stay active with their own scales (stacking). Returns ``pipe``."""
        from peft import LoraConfig, get_peft_model_state_dict, set_peft_model_state_dict

        scale, name, state = self._attachable(pipe, scale, name, check)
        unet = pipe.unet
        # peft freezes every base parameter when it injects an adapter; restore() puts the flags back
        requires_grad = {n: p.requires_grad for n, p in unet.named_parameters()}
        unet.add_adapter(LoraConfig(**dict(self.lora_config)), adapter_name=name)
        try:
            expected = get_peft_model_state_dict(unet, adapter_name=name)
            if set(expected) != set(self.peft_state_dict):
                extra = sorted(set(self.peft_state_dict) - set(expected))
                lacking = sorted(set(expected) - set(self.peft_state_dict))
                raise ErasureError(f"adapter keys do not match the model: {len(extra)} unexpected (e.g. "
                                   f"{extra[:1]}), {len(lacking)} missing (e.g. {lacking[:1]})")
            for k, v in expected.items():
                if v.shape != self.peft_state_dict[k].shape:
                    raise ErasureError(f"{k} has shape {tuple(v.shape)} in the model but "
                                       f"{tuple(self.peft_state_dict[k].shape)} in the adapter")
            result = set_peft_model_state_dict(unet, dict(self.peft_state_dict), adapter_name=name)
            if getattr(result, "unexpected_keys", None):
                raise ErasureError(f"loading dropped {len(result.unexpected_keys)} adapter keys, e.g. "
                                   f"{result.unexpected_keys[0]}")
            loaded = get_peft_model_state_dict(unet, adapter_name=name)
            if any(not torch.equal(loaded[k].cpu(), v.to(loaded[k].dtype).cpu()) for k, v in self.peft_state_dict.items()):
                raise ErasureError("the adapter's values did not load into the model exactly")
        except BaseException:
            unet.delete_adapters(name)
            if not getattr(unet, "peft_config", None):
                _remove_peft_layers(unet)
            restore_requires_grad(unet, requires_grad)
            raise
        state[name] = {"adapter": self, "scale": scale, "fused": None, "requires_grad": requires_grad}
        _set_state(pipe, state)
        return pipe

    def restore(self, pipe, name: str | None = None):
        """Detach this adapter (or undo its fusion, exactly). Returns ``pipe``."""
        state = dict(attached(pipe))
        names = [name] if name else [n for n, s in state.items() if s["adapter"] is self or s["adapter"] == self]
        if not names or names[0] not in state:
            raise ErasureError("this adapter is not attached to the pipeline")
        for n in names:
            later = list(state)[list(state).index(n) + 1:]
            if state[n]["fused"] is not None and any(state[x]["fused"] is not None and set(state[x]["fused"]) &
                                                     set(state[n]["fused"]) for x in later):
                raise ErasureError(f"adapters fused after {n!r} change the same weights; restore them first "
                                   "(fused adapters come off in reverse order)")
            entry = state.pop(n)
            if entry["fused"] is not None:
                with torch.no_grad():
                    for m, original in entry["fused"].items():
                        target_layer(pipe.unet, m).weight.copy_(original)
            else:
                pipe.unet.delete_adapters(n)
        _set_state(pipe, state)
        if not any(s["fused"] is None for s in state.values()) and not getattr(pipe.unet, "peft_config", None):
            _remove_peft_layers(pipe.unet)
            if entry.get("requires_grad"):
                restore_requires_grad(pipe.unet, entry["requires_grad"])
        return pipe

    @torch.no_grad()
    def fuse(self, pipe, scale: float = 1.0, name: str | None = None, *, check: bool = True):
        """Add ``scale`` times the adapter's change into the weights (no peft wrapper); ``restore`` undoes
        it exactly (the original values are kept). Returns ``pipe``."""
        scale, name, state = self._attachable(pipe, scale, name, check)
        originals = {}
        for key, delta in self.deltas(scale).items():
            m = key[len("unet."):-len(".weight")]
            w = target_layer(pipe.unet, m).weight
            originals[m] = w.detach().clone()
            w.add_(delta.to(w.device, w.dtype))
        state[name] = {"adapter": self, "scale": scale, "fused": originals}
        _set_state(pipe, state)
        return pipe

    def to_edit(self, pipe, scale: float = 1.0) -> Edit:
        """The fused weights as a dense :class:`~erasure.edit.Edit` (base values read from ``pipe``)."""
        from erasure.edit import make_edit

        self.check_base(pipe, hashes=False)
        new = {}
        for key, delta in self.deltas(scale).items():
            w = target_layer(pipe.unet, key[len("unet."):-len(".weight")]).weight.detach()
            new[key] = (w.float() + delta.to(w.device)).to(w.dtype)
        return make_edit(pipe, self.method, self.concepts, dict(self.config), new,
                         info={**dict(self.info), "from_adapter": True})

    # --- files ---------------------------------------------------------------------------------

    def metadata(self) -> dict[str, str]:
        from erasure.versions import package_versions

        return {
            "erasure_format": ADAPTER_FORMAT,
            "erasure_method": self.method,
            "erasure_concepts": json.dumps(list(self.concepts)),
            "erasure_config": json.dumps(dict(self.config), default=str),
            "erasure_lora_config": json.dumps(dict(self.lora_config)),
            "erasure_base_hashes": json.dumps(dict(self.base_hashes)),
            "erasure_base_dtype": json.dumps(self.base_dtype),
            "erasure_base_hashes_rounded": json.dumps({k: dict(v) for k, v in self.base_hashes_rounded.items()}),
            "erasure_info": json.dumps(dict(self.info), default=str),
            "erasure_versions": json.dumps(package_versions()),
        }

    def save(self, path: str | os.PathLike, *, force: bool = False) -> Path:
        """A diffusers LoRA folder (``pytorch_lora_weights.safetensors``, written by
        ``StableDiffusionPipeline.save_lora_weights``) that ``pipe.load_lora_weights(path)`` reads; our
        metadata rides in the same safetensors header. Atomic; refuses to overwrite without ``force``."""
        from diffusers import StableDiffusionPipeline

        from erasure.files import atomic_folder, read_safetensors, write_safetensors

        with atomic_folder(path, force=force) as tmp:
            layers = {k: v.detach().to("cpu").contiguous() for k, v in self.peft_state_dict.items()}
            StableDiffusionPipeline.save_lora_weights(tmp, unet_lora_layers=layers,
                                                      unet_lora_adapter_metadata=dict(self.lora_config))
            file = tmp / LORA_WEIGHT_NAME
            tensors, meta = read_safetensors(file)
            # our metadata and the tensors' checksum, in the file diffusers wrote (the folder is new: force)
            write_safetensors(file, tensors, {**meta, **self.metadata()}, force=True)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Adapter":
        """Read a folder (or its ``.safetensors`` file) written by :meth:`save`."""
        from erasure.files import read_safetensors

        path = Path(path)
        file = path / LORA_WEIGHT_NAME if path.is_dir() else path
        if not file.is_file():
            raise ErasureError(f"no adapter at {path} (expected a folder with {LORA_WEIGHT_NAME})")
        tensors, meta = read_safetensors(file)
        if meta.get("erasure_format") != ADAPTER_FORMAT:
            raise ErasureError(f"{file} is not an erasure adapter (format {meta.get('erasure_format')!r}, "
                               f"want {ADAPTER_FORMAT})")
        bad = [k for k in tensors if not k.startswith("unet.")]
        if bad:
            raise ErasureError(f"{file} holds non-UNet LoRA keys (e.g. {bad[0]}); erasure adapters edit the UNet only")
        return cls(method=meta["erasure_method"], concepts=tuple(json.loads(meta["erasure_concepts"])),
                   config=json.loads(meta["erasure_config"]),
                   peft_state_dict={k[len("unet."):]: v for k, v in tensors.items()},
                   lora_config=json.loads(meta["erasure_lora_config"]),
                   base_hashes=json.loads(meta["erasure_base_hashes"]), info=json.loads(meta.get("erasure_info", "{}")),
                   base_dtype=json.loads(meta.get("erasure_base_dtype", "null")),
                   base_hashes_rounded=json.loads(meta.get("erasure_base_hashes_rounded", "{}")))


def make_adapter(pipe, method: str, concepts, config: Mapping[str, Any], peft_state_dict: Mapping[str, Tensor],
                 lora_config: Mapping[str, Any], info: Mapping[str, Any] | None = None) -> Adapter:
    """Build an :class:`Adapter`, hashing the base weights it targets from ``pipe``."""
    from erasure.precision import dtype_name, value_hashes

    modules = sorted({k.rsplit(".lora_", 1)[0] for k in peft_state_dict})
    hashes, rounded, dtypes = {}, {}, set()
    for m in modules:
        weight = target_layer(pipe.unet, m).weight
        h = value_hashes(weight)
        hashes[f"unet.{m}.weight"] = h.pop("exact")
        rounded[f"unet.{m}.weight"] = h
        dtypes.add(weight.dtype)
    bad = next((k for k, v in peft_state_dict.items() if not torch.isfinite(v).all()), None)
    if bad is not None:
        raise ErasureError(f"the adapter's {bad} holds non-finite values (NaN or inf): training diverged; lower the lr")
    sd = {k: v.detach().to("cpu", torch.float32).clone() for k, v in peft_state_dict.items()}
    return Adapter(method=method, concepts=tuple(concepts), config=dict(config), peft_state_dict=sd,
                   lora_config=dict(lora_config), base_hashes=hashes, info=dict(info or {}),
                   base_dtype=dtype_name(dtypes.pop()) if len(dtypes) == 1 else None, base_hashes_rounded=rounded)


def restore_requires_grad(unet: nn.Module, requires_grad: Mapping[str, bool]) -> None:
    """Put back each parameter's requires_grad flag (peft freezes every base parameter when it injects one)."""
    for n, p in unet.named_parameters():
        if n in requires_grad:
            p.requires_grad_(requires_grad[n])


def _set_state(pipe, state: dict) -> None:
    object.__setattr__(pipe.unet, _STATE, state)  # a plain attribute, not a submodule
    active = {n: s["scale"] for n, s in state.items() if s["fused"] is None}
    if active:
        pipe.unet.set_adapters(list(active), list(active.values()))


def _remove_peft_layers(unet: nn.Module) -> None:
    """Unwrap every peft layer (no adapter left), so the UNet is the plain diffusers module again."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(unet.named_modules()):
        if isinstance(module, BaseTunerLayer) and hasattr(module, "base_layer"):
            parent_name, _, child = name.rpartition(".")
            parent = unet.get_submodule(parent_name) if parent_name else unet
            setattr(parent, child, module.get_base_layer())
    unet._hf_peft_config_loaded = False
    if hasattr(unet, "peft_config"):
        unet.peft_config = {}


def set_scale(pipe, name: str, scale: float) -> None:
    """Change the scale of the attached (not fused) adapter ``name``."""
    state = dict(attached(pipe))
    if name not in state or state[name]["fused"] is not None:
        raise ErasureError(f"no attached (unfused) adapter named {name!r}; attached: {', '.join(state) or 'none'}")
    state[name] = {**state[name], "scale": check_scale(scale)}
    _set_state(pipe, state)


# --- facilitated transport (SPM) ---------------------------------------------------------------


def transport_multipliers(pipe, prompts: Sequence[str], concepts: Sequence[str]) -> Tensor:
    """SPM's facilitated-transport strength of an adapter erasing ``concepts``, per prompt: the max over
    the erased prompts e of max(cosine(flattened embedding of the prompt, of e), fraction of e's tokens
    present in the prompt)."""
    from erasure.text import encode_prompts as _encode

    if not concepts:
        return torch.ones(len(prompts))
    emb_p = _encode(pipe, list(prompts)).flatten(1).float()
    emb_e = _encode(pipe, list(concepts)).flatten(1).float()
    cos = torch.nn.functional.normalize(emb_p, dim=1) @ torch.nn.functional.normalize(emb_e, dim=1).T
    tok = pipe.tokenizer
    special = set(tok.all_special_ids)
    ids_p = [set(tok(p).input_ids) - special for p in prompts]
    ids_e = [[i for i in tok(e).input_ids if i not in special] for e in concepts]
    frac = torch.tensor([[sum(i in ip for i in ie) / max(1, len(ie)) for ie in ids_e] for ip in ids_p])
    return torch.maximum(cos.cpu(), frac).max(dim=1).values.clamp(0.0, 1.0)


@contextlib.contextmanager
def facilitated_transport(pipe, names: Sequence[str] | None = None) -> Iterator[dict]:
    """Within this context, every attached erasure adapter (or those in ``names``) acts on each prompt
    with its scale times :func:`transport_multipliers` of that prompt, so prompts far from the erased
    concept run (almost) the original model. Works for ``pipe(...)`` calls (and so for ``evaluate``):
    the prompts' multipliers are read in ``encode_prompt`` and applied per sample to both halves of the
    classifier-free-guidance batch (as the reference does). Yields a dict that records the multipliers."""
    from peft.tuners.lora import LoraLayer

    state = attached(pipe)
    chosen = [n for n in (names or state) if state.get(n, {}).get("fused", 1) is None]
    if names and len(chosen) != len(names):
        raise ErasureError("facilitated transport needs the adapters attached (not fused): "
                           f"{', '.join(n for n in names if n not in chosen)}")
    record: dict[str, Any] = {"multipliers": []}
    current: dict[str, Tensor] = {}
    hooks, saved = [], []
    original_encode = pipe.encode_prompt

    def encode_prompt(prompt, device, num_images_per_prompt, *args, **kwargs):
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        for n in chosen:
            m = transport_multipliers(pipe, prompts, state[n]["adapter"].concepts)
            current[n] = m.repeat_interleave(num_images_per_prompt)
            record["multipliers"].append({n: m.tolist()})
        return original_encode(prompt, device, num_images_per_prompt, *args, **kwargs)

    def per_sample(name: str, batch: int, ref: Tensor) -> Tensor:
        m = current.get(name)
        if m is None:
            raise ErasureError("facilitated transport saw a UNet call without a prompt; call the pipeline "
                               "with prompts (not prompt_embeds)")
        if batch == 2 * len(m):  # classifier-free guidance: [uncond; cond], the prompt's multiplier on both
            m = torch.cat([m, m])
        elif batch != len(m):
            raise ErasureError(f"facilitated transport: UNet batch {batch} does not match {len(m)} prompts")
        return m.to(ref.device, ref.dtype)

    def make_hook(module, name, scaling):
        def hook(mod, args, output):
            x = args[0]
            lora = mod.lora_B[name](mod.lora_A[name](x.to(mod.lora_A[name].weight.dtype)))
            m = per_sample(name, output.shape[0], output)
            return output + lora * (scaling * m).reshape(-1, *([1] * (output.ndim - 1)))
        return hook

    try:
        for module in pipe.unet.modules():
            if not isinstance(module, LoraLayer):
                continue
            for n in chosen:
                if n in module.scaling:
                    saved.append((module, n, module.scaling[n]))
                    hooks.append(module.register_forward_hook(make_hook(module, n, module.scaling[n])))
                    module.scaling[n] = 0.0  # peft's own path adds nothing; the hook adds it per sample
        pipe.encode_prompt = encode_prompt
        yield record
    finally:
        for h in hooks:
            h.remove()
        for module, n, s in saved:
            module.scaling[n] = s
        if "encode_prompt" in vars(pipe):
            del pipe.encode_prompt
