"""One training loop for the methods that train (ESD, LoRA-ESD, SPM, MACE's attention LoRAs, and the next ones).

A method brings three things and the trainer does the rest:

- a **student**: what trains. :class:`ParameterGroupStudent` (a group of the UNet's own parameters; the frozen
  model is those parameters' original values swapped back in) or :class:`AdapterStudent` (a peft LoRA; the
  frozen model is the same UNet with its adapters disabled). Either way there is no second UNet.
- a **step loss**: ``loss(iteration) -> Tensor``, a closure over the method's data source (ESD's pooled
  samples, rendered images with masks, ...) and its losses. It draws what it needs from the method's seeded
  generators, which the trainer checkpoints.
- the **settings of the loop**: iterations, the optimiser, gradient clipping, gradient checkpointing, the
  number of processes whose gradients are summed, a checkpoint.

The trainer sets the precision policy up once (:class:`Precision`: fp32 masters of every trainable parameter,
a dynamic loss scale for fp16 gradients, autocast when an fp32 model asks for mixed precision), steps, skips a
step whose gradients overflow, stops with one line on a non-finite loss, saves and resumes the whole state
exactly (:class:`Checkpoint`, keyed by a hash of method, concepts, model and config), shows a progress bar
with the loss and counts UNet passes (:class:`PassCounter`) and peak memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from erasure.adapters import restore_requires_grad
from erasure.distributed import all_reduce_sum
from erasure.errors import ErasureError
from erasure.precision import LossScaler, MasterWeights, tensor_sha256


class PassCounter:
    """Counts UNet forward passes (one per sample in a batch), for the benchmark's compute ratios."""

    def __init__(self) -> None:
        self.forward = 0
        self.backward = 0

    @property
    def total(self) -> int:
        """Forward passes, a backward counted as two."""
        return self.forward + 2 * self.backward


# --------------------------------------------------------------------------- students


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
        from erasure.modules import parameter_group

        self.unet = pipe.unet
        self.requires_grad = {n: p.requires_grad for n, p in self.unet.named_parameters()}
        self.params = parameter_group(pipe.unet, group)
        self.originals = {n: p.detach().clone() for n, p in self.params.items()}

    def teacher(self):
        return original_values(self.params, self.originals)

    def result(self, pipe, method, concepts, config, info, values: dict[str, Tensor]):
        """The trained ``values`` (fp32 masters, by parameter name) as an Edit; leaves the pipeline as it was."""
        from erasure.edit import make_edit

        new_values = {f"unet.{n}": values[n].detach().clone() for n in self.params}
        self.close()
        return make_edit(pipe, method, concepts, config, new_values, info=info)

    @torch.no_grad()
    def close(self) -> None:
        """Leave the pipeline as it was (the result carries the change)."""
        for n, p in self.params.items():
            p.copy_(self.originals[n])
        restore_requires_grad(self.unet, self.requires_grad)


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
        # peft marks every base parameter frozen when it injects an adapter: put the flags back on close
        self.requires_grad = {n: p.requires_grad for n, p in self.unet.named_parameters()}
        self.unet.add_adapter(LoraConfig(**self.lora_config), adapter_name=self.NAME)
        self.params = {n: p for n, p in self.unet.named_parameters() if f".{self.NAME}." in n}

    @contextlib.contextmanager
    def teacher(self):
        self.unet.disable_adapters()
        try:
            yield
        finally:
            self.unet.enable_adapters()

    def result(self, pipe, method, concepts, config, info, values: dict[str, Tensor]):
        """The trained ``values`` (fp32 masters) as an Adapter, keyed as peft's state dict
        (``<module>.lora_A.weight``); removes the training adapter."""
        from erasure.adapters import make_adapter

        state = {n.replace(f".{self.NAME}.", "."): values[n].detach().clone() for n in self.params}
        self.close()
        return make_adapter(pipe, method, concepts, config, state, self.lora_config, info=info)

    def close(self) -> None:
        from erasure.adapters import _remove_peft_layers

        if self.NAME in getattr(self.unet, "peft_config", {}):
            self.unet.delete_adapters(self.NAME)
        if not getattr(self.unet, "peft_config", None):
            _remove_peft_layers(self.unet)
        restore_requires_grad(self.unet, self.requires_grad)  # after the adapter is gone: peft renames layers


def _fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


FINGERPRINT_VALUES = 4096  # values per parameter the model fingerprint reads (evenly strided)


@torch.no_grad()
def model_fingerprint(module: nn.Module) -> str:
    """A cheap identity of a model's weights, for keying checkpoints: sha256 over every parameter's name,
    shape, dtype and up to :data:`FINGERPRINT_VALUES` evenly strided values (an SD UNet in well under a
    second; hashing all 860M values would take seconds)."""
    h = hashlib.sha256()
    for name, p in module.named_parameters():
        flat = p.detach().reshape(-1)
        step = max(1, flat.numel() // FINGERPRINT_VALUES)
        h.update(f"{name}:{tuple(p.shape)}:{p.dtype}:".encode())
        h.update(tensor_sha256(flat[::step]).encode())
    return h.hexdigest()


# --------------------------------------------------------------------------- precision


class Precision:
    """The precision policy of one training run, set up once: fp32 masters of the trainable parameters
    (:class:`~erasure.precision.MasterWeights`; the parameters themselves in fp32), a dynamic loss scale when
    any of them is fp16 (:class:`~erasure.precision.LossScaler`), and ``autocast`` for the student's forward
    when an fp32 model is asked to compute in ``mixed_precision`` ("fp16" / "bf16"; a half-precision model
    already computes in its dtype)."""

    def __init__(self, params: Mapping[str, nn.Parameter], mixed_precision: str = "no",
                 device: torch.device | None = None, model_dtype: torch.dtype = torch.float32) -> None:
        self.masters = MasterWeights(params)
        self.scaler = LossScaler(enabled=any(p.dtype == torch.float16 for p in params.values()))
        self.mixed_precision = mixed_precision
        self._device = device if device is not None else torch.device("cpu")
        self._model_dtype = model_dtype

    def autocast(self):
        """A fresh autocast context (or a null one) for the student's forward."""
        if self.mixed_precision == "no" or self._model_dtype != torch.float32:
            return contextlib.nullcontext()
        dtype = torch.float16 if self.mixed_precision == "fp16" else torch.bfloat16
        return torch.autocast(device_type=self._device.type, dtype=dtype)


# --------------------------------------------------------------------------- checkpoints


def run_key(method: str, concepts: Sequence[str], model: str, config: Mapping[str, Any]) -> str:
    """The sha256 a checkpoint is keyed by: the method, the concepts, the model (:func:`model_fingerprint`)
    and the full config (JSON, so a tuple and a list of the same values agree)."""
    return _fingerprint({"method": method, "concepts": list(concepts), "model": model,
                         "config": json.loads(json.dumps(dict(config), default=str))})


def _generator_state(g) -> str:
    if isinstance(g, np.random.Generator):
        return json.dumps(g.bit_generator.state)
    return json.dumps(g.get_state().tolist())


def _set_generator_state(g, text: str) -> None:
    if isinstance(g, np.random.Generator):
        g.bit_generator.state = json.loads(text)
    else:
        g.set_state(torch.tensor(json.loads(text), dtype=torch.uint8))


class Checkpoint:
    """A training run's folder: ``config.json`` (method, concepts, config and the run's :func:`run_key`),
    cached data (:meth:`cached`: e.g. ESD's sample pool) and ``state.safetensors`` (the masters, the
    optimiser's state, the loss scale, every generator the run draws from, torch's global RNG and the step).

    Resuming a folder whose key differs (other settings, another model, other concepts) is a one-line error.
    Only the main process writes (``writer``); data a process caches for itself is named per process."""

    STATE = "state.safetensors"

    def __init__(self, folder: str | os.PathLike, *, method: str, concepts: Sequence[str], model: str,
                 config: Mapping[str, Any], every: int = 0, writer: bool = True) -> None:
        self.folder = Path(folder)
        self.method, self.concepts, self.model = method, list(concepts), model
        self.config = json.loads(json.dumps(dict(config), default=str))
        self.key = run_key(method, concepts, model, config)
        self.every = every
        self.writer = writer

    def check(self, resume: bool) -> None:
        """With ``resume``, refuse a folder that holds another run (by key, or by config for older folders)."""
        record = self.folder / "config.json"
        if not (resume and record.is_file()):
            return
        saved = json.loads(record.read_text())
        same = saved.get("key") == self.key if "key" in saved else saved.get("config") == self.config
        if not same:
            raise ErasureError(f"{self.folder} holds a run with other settings; resume with the same settings or "
                               "choose another checkpoint folder")

    def write_config(self) -> None:
        """``config.json`` next to the run's files (main process only)."""
        if not self.writer:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        record = {"method": self.method, "concepts": self.concepts, "config": self.config, "model": self.model,
                  "key": self.key}
        tmp = self.folder / "config.json.tmp"
        tmp.write_text(json.dumps(record, indent=1, default=str))
        os.replace(tmp, self.folder / "config.json")

    def cached(self, name: str, build: Callable[[], dict[str, Tensor]], *, resume: bool,
               device: torch.device, per_process: bool = False) -> dict[str, Tensor]:
        """Tensors ``name`` from the folder when resuming and present, else ``build()`` saved there (every
        process saves its own when ``per_process``: its name then says which)."""
        from safetensors.torch import load_file, save_file

        path = self.folder / name
        if resume and path.exists():
            return {k: v.to(device) for k, v in load_file(str(path)).items()}
        tensors = build()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.write_config()
        if per_process or self.writer:
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path))
        return tensors

    def has_state(self) -> bool:
        return (self.folder / self.STATE).exists()

    def save_state(self, step: int, precision: Precision, optimizer, generators: Mapping[str, Any]) -> None:
        """The whole training state after ``step`` iterations (atomic: a temp file, then rename)."""
        from safetensors.torch import save_file

        if not self.writer:
            return
        if not (self.folder / "config.json").is_file():
            self.write_config()  # written with the first file of the run, so a run that failed early leaves nothing
        tensors = {f"param.{n}": v.cpu().contiguous() for n, v in precision.masters.values().items()}
        for idx, s in optimizer.state_dict()["state"].items():
            for k, v in s.items():
                tensors[f"opt.{idx}.{k}"] = (v if torch.is_tensor(v) else torch.tensor(v)).detach().cpu().contiguous()
        meta = {"step": str(step), "torch_rng": json.dumps(torch.get_rng_state().tolist()),
                "config": json.dumps(self.config, default=str), "key": self.key,
                "loss_scale": json.dumps(precision.scaler.state())}
        meta.update({name: _generator_state(g) for name, g in generators.items()})
        tmp = self.folder / (self.STATE + ".tmp")
        save_file(tensors, str(tmp), metadata=meta)
        os.replace(tmp, self.folder / self.STATE)

    def load_state(self, precision: Precision, optimizer, generators: Mapping[str, Any]) -> int:
        """Put the saved state back; returns the number of iterations it had done."""
        from safetensors import safe_open

        with safe_open(str(self.folder / self.STATE), framework="pt") as f:
            meta = f.metadata()
            if meta.get("key", self.key) != self.key:
                raise ErasureError(f"{self.folder / self.STATE} is another run's state (other settings, model or "
                                   "concepts); resume with the same settings or choose another checkpoint folder")
            precision.masters.load({n: f.get_tensor(f"param.{n}") for n in precision.masters.masters})
            state = optimizer.state_dict()
            for key in f.keys():
                if key.startswith("opt."):
                    _, idx, name = key.split(".", 2)
                    state["state"].setdefault(int(idx), {})[name] = f.get_tensor(key)
            optimizer.load_state_dict(state)
        torch.set_rng_state(torch.tensor(json.loads(meta["torch_rng"]), dtype=torch.uint8))
        if "loss_scale" in meta:
            precision.scaler.load(json.loads(meta["loss_scale"]))
        for name, g in generators.items():
            if name in meta:
                _set_generator_state(g, meta[name])
        return int(meta["step"])


# --------------------------------------------------------------------------- the loop


@dataclass
class TrainingOutcome:
    """What a finished run hands back: the trained values (fp32 masters, by parameter name), the loss of
    every iteration this call ran, and its counters."""

    values: dict[str, Tensor]  # the masters themselves (no copy): read them before the student is closed
    losses: list[float]
    start: int
    skipped_steps: int
    seconds: float
    peak_memory_mib: float | None
    gradient_checkpointing: bool

    def info(self) -> dict[str, Any]:
        """The loss log and counters as a result's ``info`` records them."""
        return {"losses": [float(f"{x:.6g}") for x in self.losses[:: max(1, len(self.losses) // 100)]],
                "final_loss": float(np.mean(self.losses[-20:])) if self.losses else None,
                "loss_scale_skipped_steps": self.skipped_steps, "peak_memory_mib": self.peak_memory_mib}


def _peak_memory_mib(device: torch.device) -> float | None:
    """Peak memory so far: the device's allocator on CUDA, else the process's peak resident set."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    try:
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB
    except (OSError, ValueError):
        return None


@dataclass
class Trainer:
    """One training loop. ``loss(iteration)`` returns the iteration's loss (already this process's share of
    the batch mean under several processes); ``diverged(iteration, value)`` words the one-line error of a
    non-finite loss, ``non_finite(name)`` that of a trained value that is not finite at the end. See the module
    docstring for the rest."""

    student: Any
    loss: Callable[[int], Tensor]
    iterations: int
    optimizer: Callable[[list[nn.Parameter]], torch.optim.Optimizer]
    precision: Precision
    diverged: Callable[[int, float], str]
    non_finite: Callable[[str], str] = lambda name: f"training diverged: {name} holds non-finite values; lower lr"
    generators: Mapping[str, Any] = field(default_factory=dict)
    checkpoint: Checkpoint | None = None
    resume: bool = False
    stop_after: int | None = None
    clip_grad_norm: float | None = None
    gradient_checkpointing: bool = False
    processes: int = 1  # gradients (and the reported loss) are summed over this many processes
    progress: str | None = None  # the progress bar's description; None = no bar

    def run(self) -> TrainingOutcome:
        """Train; on success the student is still attached (``student.result(...)`` makes the result and
        detaches it), on any error it is closed and the pipeline is as it was."""
        student, precision = self.student, self.precision
        unet = student.unet
        params, masters, scaler = student.params, precision.masters, precision.scaler
        was_training = unet.training
        losses: list[float] = []
        bar = None
        start = 0
        t0 = time.perf_counter()
        try:
            unet.requires_grad_(False)
            for p in params.values():
                p.requires_grad_(True)
            if self.gradient_checkpointing:
                unet.enable_gradient_checkpointing()
            masters.zero_grad()  # a gradient someone left on the model must not enter the first step
            optimizer = self.optimizer(masters.parameters())
            ckpt = self.checkpoint
            if self.resume and ckpt is not None and ckpt.has_state():
                start = ckpt.load_state(precision, optimizer, self.generators)
            if self.progress is not None:
                from tqdm.auto import tqdm

                bar = tqdm(total=self.iterations, initial=start, desc=self.progress, unit="it")
            unet.train()
            end = self.iterations if self.stop_after is None else min(self.stop_after, self.iterations)
            for it in range(start, end):
                loss = self.loss(it)
                total = loss.detach().clone().reshape(1)
                if self.processes > 1:
                    all_reduce_sum([total])
                value = float(total)
                if not math.isfinite(value):
                    raise ErasureError(self.diverged(it, value))
                (loss * scaler.scale).backward()
                if self.processes > 1:  # every process then takes the same step
                    all_reduce_sum([p.grad for p in params.values() if p.grad is not None])
                finite = masters.gradients_to_masters(scaler.scale)
                scaler.update(finite)
                if finite:
                    if self.clip_grad_norm is not None:
                        torch.nn.utils.clip_grad_norm_(masters.parameters(), self.clip_grad_norm)
                    optimizer.step()
                    masters.masters_to_model()
                # here, not before backward: no stale gradients under the next forward
                optimizer.zero_grad(set_to_none=True)
                masters.zero_grad()
                losses.append(value)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4g}")
                if ckpt is not None and ckpt.every and (it + 1) % ckpt.every == 0:
                    ckpt.save_state(it + 1, precision, optimizer, self.generators)
            values = masters.values()
            bad = next((n for n, v in values.items() if not torch.isfinite(v).all()), None)
            if bad is not None:
                raise ErasureError(self.non_finite(bad))
        except BaseException:
            student.close()
            raise
        finally:
            if bar is not None:
                bar.close()
            unet.train(was_training)
            if self.gradient_checkpointing:
                unet.disable_gradient_checkpointing()
        device = next(iter(params.values())).device if params else torch.device("cpu")
        return TrainingOutcome(values=values, losses=losses, start=start, skipped_steps=scaler.skipped,
                               seconds=round(time.perf_counter() - t0, 2), peak_memory_mib=_peak_memory_mib(device),
                               gradient_checkpointing=self.gradient_checkpointing)
