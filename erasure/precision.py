"""The dtype/device policy, one place.

- **Base hashes identify a checkpoint, not its dtype.** An edit records the sha256 of each base tensor's
  values and of those values rounded to fp16 and to bf16 (:func:`value_hashes`). Loading a checkpoint in
  fp16 or bf16 rounds each weight exactly as ``tensor.to(dtype)`` does, so an edit made on an fp32 load
  matches an fp16/bf16 load of the same weights exactly, and an edit made on an fp16 load matches an fp32
  load once that is rounded to fp16 (:func:`base_matches`). Another model never matches.
- **Training in half precision keeps fp32 masters.** :class:`MasterWeights` gives the optimiser fp32 copies
  of trainable parameters that live in fp16/bf16 in the model (as diffusers' training scripts keep trainable
  weights in fp32 while the frozen model stays in the load dtype); after each step the model's copies are
  the masters rounded to the model's dtype. fp16 gradients get a dynamic loss scale (:class:`LossScaler`).
  In fp32 the masters are the parameters themselves: nothing changes, bit for bit.
- **Tensors a method creates follow the model**: :func:`model_dtype_device`.
"""

from __future__ import annotations

import hashlib
import math
from typing import Iterable, Mapping

import torch
from torch import Tensor, nn

HALF_DTYPES = (torch.float16, torch.bfloat16)
DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16",
               torch.float64: "float64"}
_BY_NAME = {v: k for k, v in DTYPE_NAMES.items()}


def dtype_name(dtype: torch.dtype) -> str:
    return DTYPE_NAMES.get(dtype, str(dtype).removeprefix("torch."))


def dtype_from_name(name: str) -> torch.dtype:
    return _BY_NAME[name]


def tensor_sha256(t: Tensor) -> str:
    """Hash of a tensor's values as float32 bytes (so the same values hash alike in any storage dtype)."""
    data = t.detach().to("cpu", torch.float32).contiguous()
    return hashlib.sha256(data.numpy().tobytes()).hexdigest()


def value_hashes(t: Tensor) -> dict[str, str]:
    """``{"exact": sha256 of the values, "float16": of the values rounded to fp16, "bfloat16": ... to bf16}``
    (every hash over float32 bytes, so the same values hash alike in any storage dtype)."""
    out = {"exact": tensor_sha256(t)}
    for half in HALF_DTYPES:
        out[dtype_name(half)] = out["exact"] if t.dtype == half else tensor_sha256(t.detach().to(half))
    return out


def base_matches(current: Tensor, recorded: Mapping[str, str], recorded_dtype: str | None) -> bool | None:
    """Whether ``current`` holds the base values ``recorded`` (by :func:`value_hashes`) were made from, in
    whatever dtype each was loaded: True, False, or None when the two dtypes cannot be compared exactly
    (fp16 against bf16: rounding one to the other is not the rounding of the fp32 original)."""
    here = current.dtype
    made = dtype_from_name(recorded_dtype) if recorded_dtype else None
    if made is None or made == here or (made not in HALF_DTYPES and here not in HALF_DTYPES):
        return tensor_sha256(current) == recorded["exact"]
    if here in HALF_DTYPES and made not in HALF_DTYPES:  # fp32 edit, half load: the load rounded the weights
        return tensor_sha256(current) == recorded.get(dtype_name(here))
    if made in HALF_DTYPES and here not in HALF_DTYPES:  # half edit, fp32 load: round it the same way
        return tensor_sha256(current.detach().to(made)) == recorded["exact"]
    return None


def model_dtype_device(module: nn.Module) -> tuple[torch.dtype, torch.device]:
    """The dtype and device of a module's floating-point parameters (what tensors fed to it must have)."""
    for p in module.parameters():
        if p.is_floating_point():
            return p.dtype, p.device
    return torch.float32, torch.device("cpu")


class LossScaler:
    """Dynamic loss scaling for fp16 gradients (as torch.amp.GradScaler, which refuses fp16 parameters):
    the loss is multiplied by ``scale`` before backward; a step whose gradients overflow is skipped and the
    scale halved; after ``growth_interval`` good steps it doubles. Disabled (scale 1) for fp32/bf16."""

    def __init__(self, enabled: bool, init_scale: float = 2.0**14, growth_interval: int = 200) -> None:
        self.enabled = enabled
        self.scale = init_scale if enabled else 1.0
        self.growth_interval = growth_interval
        self._good = 0
        self.skipped = 0

    def update(self, finite: bool) -> None:
        if not self.enabled:
            return
        if finite:
            self._good += 1
            if self._good % self.growth_interval == 0:
                self.scale *= 2.0
        else:
            self.scale /= 2.0
            self._good = 0
            self.skipped += 1

    def state(self) -> dict[str, float]:
        return {"scale": self.scale, "good": self._good, "skipped": self.skipped}

    def load(self, state: Mapping[str, float]) -> None:
        self.scale, self._good, self.skipped = float(state["scale"]), int(state["good"]), int(state["skipped"])


class MasterWeights:
    """fp32 master copies for the trainable parameters of a half-precision model.

    ``masters`` are what the optimiser updates (the parameters themselves where they are fp32 already);
    call :meth:`gradients_to_masters` after backward and :meth:`masters_to_model` after the optimiser step.
    """

    def __init__(self, params: Mapping[str, nn.Parameter]) -> None:
        self.params = dict(params)
        self.masters: dict[str, nn.Parameter] = {}
        for name, p in self.params.items():
            self.masters[name] = p if p.dtype == torch.float32 else nn.Parameter(p.detach().float().clone())
        self.mixed = any(m is not p for m, p in zip(self.masters.values(), self.params.values()))

    def parameters(self) -> list[nn.Parameter]:
        return list(self.masters.values())

    def gradients_to_masters(self, scale: float = 1.0) -> bool:
        """Move gradients to the masters as fp32, divided by the loss ``scale``; False if any is non-finite
        (the step must then be skipped: the gradients are cleared)."""
        finite = True
        for name, p in self.params.items():
            m = self.masters[name]
            if p.grad is None:
                continue
            if m is not p:
                m.grad = p.grad.detach().float()
                p.grad = None
            if scale != 1.0:
                m.grad.div_(scale)
            if finite and not bool(torch.isfinite(m.grad).all()):
                finite = False
        if not finite:
            self.zero_grad()
        return finite

    @torch.no_grad()
    def masters_to_model(self) -> None:
        if not self.mixed:
            return
        for name, p in self.params.items():
            m = self.masters[name]
            if m is not p:
                p.copy_(m.to(p.dtype))

    def zero_grad(self) -> None:
        for group in (self.params, self.masters):
            for p in group.values():
                p.grad = None

    def values(self) -> dict[str, Tensor]:
        """The trained values, fp32 (the masters)."""
        return {n: m.detach() for n, m in self.masters.items()}

    @torch.no_grad()
    def load(self, values: Mapping[str, Tensor]) -> None:
        for name, v in values.items():
            self.masters[name].copy_(v)
        self.masters_to_model()


def all_finite(tensors: Iterable[Tensor]) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point())


def module_state(module: nn.Module) -> dict[str, object]:
    """What a method must leave as it found: each parameter's dtype, device, requires_grad, the training
    flag, whether ``forward`` was replaced on the instance, the attention processors' types."""
    state: dict[str, object] = {
        "params": {n: (p.dtype, p.device, p.requires_grad) for n, p in module.named_parameters()},
        "training": module.training,
        "forward_wrapped": "forward" in vars(module),
        "gradient_checkpointing": bool(getattr(module, "is_gradient_checkpointing", False)),
    }
    processors = getattr(module, "attn_processors", None)
    if processors is not None:
        state["processors"] = {k: type(v).__name__ for k, v in processors.items()}
    return state


def finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None
