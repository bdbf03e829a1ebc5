"""Load a Stable Diffusion pipeline from whatever the user has, offline.

Accepted by :func:`load_pipeline`:

* ``None`` or ``"shapeworld"``: the built-in world (see :func:`builtin_world_path`);
* a local diffusers folder (with ``model_index.json``);
* a single-file ``.safetensors`` checkpoint (original LDM keys) plus ``config=`` a local
  diffusers or configs-only folder (see :func:`erasure.modules.save_config_folder`);
* pickled ``.ckpt``/``.bin``/``.pt``/``.pth`` files, only with ``allow_pickle=True``;
* a Hub id ``"org/name"`` that is already in the local Hugging Face cache.

Every failure is an :class:`~erasure.errors.ErasureError` with one line naming what was tried.
The safety checker is never loaded: erasure is measured on the model's own output.
"""

from __future__ import annotations

import json
import logging
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import torch

from erasure.errors import ErasureError

if TYPE_CHECKING:
    from diffusers import StableDiffusionPipeline

BUILTIN_WORLD_NAME = "shapeworld"
PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth")
SINGLE_FILE_SUFFIXES = (".safetensors",) + PICKLE_SUFFIXES
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_DTYPES = {
    "fp32": torch.float32, "float32": torch.float32, "float": torch.float32, "32": torch.float32,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16, "16": torch.float16,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
}
_NO_SAFETY_CHECKER = dict(safety_checker=None, requires_safety_checker=False)


def _dtype_kwarg(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """diffusers renamed ``torch_dtype`` to ``dtype`` (PR #14205); older versions ignore ``dtype``."""
    from diffusers.utils import deprecation_utils

    return {"dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype": dtype}


def builtin_world_path() -> Path:
    """The diffusers folder of the built-in world (it exists once ``scripts/train_world.py`` ran)."""
    from erasure.world.assemble import DEFAULT_WORLD_DIR

    return DEFAULT_WORLD_DIR / "pipeline"


def resolve_device_dtype(
    device: str | torch.device | None = None, dtype: str | torch.dtype | None = None
) -> tuple[torch.device, torch.dtype]:
    """Pick the device (CUDA if available, else CPU) and dtype (fp16 on CUDA, fp32 on CPU).

    An explicit ``dtype`` (``"fp16"``, ``"bf16"``, ``"fp32"``, ``"float16"``, a ``torch.dtype``...)
    is honoured on any device; ``"auto"`` or ``None`` means the device's default.
    """
    if device is None or device == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError) as e:
            raise ErasureError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from e
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ErasureError(f"device {device!r} requested but CUDA is not available here; use --device cpu")
    if dtype is None or dtype == "auto":
        return dev, torch.float16 if dev.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise ErasureError(f"dtype {dtype} is not a floating-point type; use fp32, fp16 or bf16")
        return dev, dtype
    key = str(dtype).lower().removeprefix("torch.")
    if key not in _DTYPES:
        raise ErasureError(f"unknown dtype {dtype!r}; use fp32, fp16 or bf16")
    return dev, _DTYPES[key]


def load_pipeline(
    spec: str | os.PathLike | None = None,
    *,
    config: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    allow_pickle: bool = False,
) -> StableDiffusionPipeline:
    """Load a ``StableDiffusionPipeline`` (see the module docstring for what ``spec`` may be)."""
    dev, torch_dtype = resolve_device_dtype(device, dtype)
    with _quiet_loading():
        pipe = _load(spec, config, torch_dtype, allow_pickle)
    pipe = pipe.to(dev)
    if dev.type == "cpu":
        _realign_weights(pipe)
    # what was loaded, for metadata and world-aware defaults (e.g. the preserve set of an edit)
    pipe.erasure_source = BUILTIN_WORLD_NAME if spec is None or str(spec) == BUILTIN_WORLD_NAME else str(spec)
    # what methods may know about this model (erasure.profiles): the built-in world has a profile
    pipe.erasure_profile = None
    world_json = (builtin_world_path().parent if pipe.erasure_source == BUILTIN_WORLD_NAME
                  else Path(str(spec)).parent) / "world.json"
    if pipe.erasure_source == BUILTIN_WORLD_NAME or _is_world_folder(world_json):
        # the built-in world, or a world trained into another folder (scripts/train_world.py --out): its profile
        from erasure.world.profile import profile_for

        version = json.loads(world_json.read_text()).get("world", 1) if world_json.is_file() else 1
        pipe.erasure_profile = profile_for(version)
    return pipe


def _is_world_folder(world_json: Path) -> bool:
    try:
        return json.loads(world_json.read_text()).get("name") == "shapeworld"
    except (OSError, ValueError):
        return False


def _realign_weights(pipe) -> None:
    """Copy tensors that point into a memory-mapped file at an unaligned offset.

    CPU kernels take different vectorised paths for unaligned data, so the same weights gave
    images ~1e-5 apart depending on the file they came from; aligned copies make every
    loading route reproduce the in-memory model bit for bit.
    """
    for component in pipe.components.values():
        if not isinstance(component, torch.nn.Module):
            continue
        for module in component.modules():
            for table in (module._parameters, module._buffers):
                for name, tensor in table.items():
                    if tensor is not None and tensor.data_ptr() % 64:
                        if isinstance(tensor, torch.nn.Parameter):
                            tensor.data = tensor.data.clone()
                        else:
                            table[name] = tensor.clone()


def _load(spec, config, torch_dtype: torch.dtype, allow_pickle: bool) -> StableDiffusionPipeline:
    if spec is None or str(spec) == BUILTIN_WORLD_NAME:
        folder = builtin_world_path()
        if not (folder / "model_index.json").is_file():
            raise ErasureError(
                f"the built-in world weights are missing ({folder}); run `python scripts/train_world.py` to build them"
            )
        return _from_folder(folder, torch_dtype, allow_pickle)
    path = Path(spec)
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ErasureError(
                f"folder {path} has no model_index.json; give a diffusers pipeline folder (save_pretrained) "
                "or a .safetensors checkpoint with --config"
            )
        return _from_folder(path, torch_dtype, allow_pickle)
    if path.is_file():
        return _from_single_file(path, config, torch_dtype, allow_pickle)
    if path.suffix.lower() in SINGLE_FILE_SUFFIXES or path.is_absolute() or not _HUB_ID.match(str(spec)):
        raise ErasureError(f"model {str(spec)!r} not found: no such file or folder, and not a Hub id like org/name")
    return _from_hub_cache(str(spec), torch_dtype, allow_pickle)


def _pretrained_kwargs(torch_dtype: torch.dtype, allow_pickle: bool) -> dict:
    # Without use_safetensors=True diffusers silently falls back to pickled .bin weights.
    return dict(local_files_only=True, use_safetensors=None if allow_pickle else True,
                **_dtype_kwarg(torch_dtype), **_NO_SAFETY_CHECKER)


def _from_folder(folder: Path, torch_dtype: torch.dtype, allow_pickle: bool) -> StableDiffusionPipeline:
    from diffusers import StableDiffusionPipeline

    unet = folder / "unet"
    if unet.is_dir() and not any(f.suffix in SINGLE_FILE_SUFFIXES for f in unet.iterdir()):
        raise ErasureError(
            f"folder {folder} has configs but no weights; if it is the config folder of a single-file "
            "checkpoint, pass the .safetensors file as the model and this folder as --config"
        )
    try:
        return StableDiffusionPipeline.from_pretrained(str(folder), **_pretrained_kwargs(torch_dtype, allow_pickle))
    except Exception as e:
        raise ErasureError(f"could not load diffusers folder {folder}: {_one_line(e)}") from e


def _from_single_file(path: Path, config, torch_dtype: torch.dtype, allow_pickle: bool) -> StableDiffusionPipeline:
    from diffusers import StableDiffusionPipeline

    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES and not allow_pickle:
        raise ErasureError(
            f"{path} is a pickled checkpoint, which can run arbitrary code when loaded; "
            "convert it to .safetensors, or pass allow_pickle=True (--allow-pickle) if you trust it"
        )
    if suffix not in SINGLE_FILE_SUFFIXES:
        raise ErasureError(
            f"{path} is not a model: expected a diffusers folder, a .safetensors checkpoint or a Hub id"
        )
    if config is None:
        raise ErasureError(
            f"single-file checkpoint {path} needs a config folder to load offline; pass --config "
            "(config=) a local diffusers folder of the same architecture or the configs folder exported with it"
        )
    config = Path(config)
    if not (config / "model_index.json").is_file():
        raise ErasureError(
            f"config {config} is not a diffusers folder (no model_index.json); "
            "pass the folder exported with the checkpoint"
        )
    if suffix == ".safetensors":
        _check_safetensors(path)
    try:
        return StableDiffusionPipeline.from_single_file(
            str(path), config=str(config), local_files_only=True, **_dtype_kwarg(torch_dtype), **_NO_SAFETY_CHECKER
        )
    except Exception as e:
        raise ErasureError(f"could not load checkpoint {path} with config {config}: {_one_line(e)}") from e


def _check_safetensors(path: Path) -> None:
    """Read the header only, so corrupt or non-SD files fail with a clear message before diffusers guesses."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
    except Exception as e:
        raise ErasureError(
            f"{path} is not a readable .safetensors file ({_one_line(e)}); re-export or re-download it"
        ) from e
    if not any(k.startswith("model.diffusion_model.") for k in keys):
        raise ErasureError(
            f"{path} has no model.diffusion_model.* keys, so it is not a full Stable Diffusion checkpoint "
            "(a LoRA or a single component?); give a full checkpoint or a diffusers folder"
        )


def _from_hub_cache(repo_id: str, torch_dtype: torch.dtype, allow_pickle: bool) -> StableDiffusionPipeline:
    from diffusers import StableDiffusionPipeline
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(try_to_load_from_cache(repo_id, "model_index.json"), str):
        raise ErasureError(
            f"{repo_id!r} is neither a local path nor in the local Hugging Face cache, and this machine is offline; "
            f"download it elsewhere (e.g. `hf download {repo_id} --local-dir DIR`) and pass the folder"
        )
    try:
        return StableDiffusionPipeline.from_pretrained(repo_id, **_pretrained_kwargs(torch_dtype, allow_pickle))
    except Exception as e:
        raise ErasureError(f"could not load {repo_id!r} from the local Hugging Face cache: {_one_line(e)}") from e


def _one_line(e: BaseException, limit: int = 300) -> str:
    """The exception's first line: libraries put the summary there and advice for their own API below."""
    first = next((line.strip() for line in str(e).splitlines() if line.strip()), "")
    text = f"{type(e).__name__}: {first}" if first else type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextmanager
def _quiet_loading() -> Iterator[None]:
    """Hide the loading progress bars of diffusers and transformers; sampling bars keep their defaults."""
    from diffusers.utils import logging as dlogging
    from transformers.utils import logging as tlogging

    enabled = [(lib, lib.is_progress_bar_enabled()) for lib in (dlogging, tlogging)]
    for lib, _ in enabled:
        lib.disable_progress_bar()
    modeling_logger = logging.getLogger("diffusers.models.modeling_utils")
    modeling_logger.addFilter(_drop_empty_fp32_warning)
    try:
        yield
    finally:
        modeling_logger.removeFilter(_drop_empty_fp32_warning)
        for lib, was_enabled in enabled:
            if was_enabled:
                lib.enable_progress_bar()


def _drop_empty_fp32_warning(record: logging.LogRecord) -> bool:
    # from_single_file casts with .to(dtype), and diffusers then warns about an *empty* list of
    # fp32-only modules: noise, nothing is kept in fp32.
    return "should be kept in float32: []" not in record.getMessage()
