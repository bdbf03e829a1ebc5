"""The ``erasure`` command line: thin argparse subcommands over the Python API.

Exit codes: 0 success, 2 user error (one line on stderr, nothing written), 1 a machine fault (disk full, I/O
error: also one line) or an unexpected failure, 130 interrupted.

Every command runs in two phases. **Checks** need no model and run before torch is imported (so a mistake is
answered in a fraction of a second): every flag's type, range and finiteness, the files it names, the method
and its settings, and the output (see :func:`erasure.files.check_output`: never the current folder, home, a
root, a git checkout or a folder holding an input; writable; replaced only with ``--force``). **Work** then
imports torch, loads the model and writes the output atomically.

Every subcommand takes ``--config-file FILE`` (YAML or JSON): its keys are the subcommand's flags
(``samples-per-prompt`` or ``samples_per_prompt``); flags on the command line override the file. The
``erase`` command writes the flags it ran with to ``<out>/run.json``, which can be passed back with
``--config-file`` to run it again.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Any

EXAMPLES = {
    "generate": """examples:
  erasure generate --prompt "a red star" --prompt "a striped blue heart" --num-seeds 4 --out outputs/demo
  erasure generate --model path/to/diffusers-folder --prompt "a photo of a cat" --steps 25
  erasure generate --model model.safetensors --config path/to/config-folder --prompt "a cat"
""",
    "erase": """examples:
  erasure erase --method uce --concept circle --guide square --out outputs/erase-circle --evaluate
  erasure erase --method uce-paper --concept circle --concept square --guide heart --templates shapeworld
  erasure erase --method esd-x --concept circle --set iterations=200 --set lr=3e-4 --out outputs/esd-circle
  erasure erase --config-file outputs/erase-circle/run.json --out outputs/again   # the same run again
""",
    "evaluate": """examples:
  erasure evaluate --prompts shapeworld-shape-circle --concept circle --edit outputs/erase-circle/edit.safetensors --compare
  erasure evaluate --model path/to/sd15 --prompts prompts.csv --out outputs/eval-sd15
  erasure evaluate --model sd14 --preset imagenette --prompts-file imagenette.csv --concept church \
      --judge image-classifier:resnet50 --judge-weights resnet50.safetensors --edit edit.safetensors --compare
  erasure evaluate --model sd14 --preset i2p-nudity --prompts-file i2p_4703.csv --edit edit.safetensors --compare
  erasure evaluate --model uc-sd15 --preset unlearncanvas --concept style=Van_Gogh --judge-set style_weights=style50.pth \
      --judge-set object_weights=style50_cls.pth --allow-pickle --edit edit.safetensors --compare
  erasure evaluate --model sd14 --prompts prompts.csv --judge nudenet --judge-set threshold=0.45 --metric nudity_rate
""",
    "export": """examples:
  erasure export --edit outputs/erase-circle/edit.safetensors --out outputs/export-circle
  erasure export --edit outputs/erase-circle/edit.safetensors --format lora --format kohya --out outputs/lora-circle
  erasure export --model sd15.safetensors --config sd15-configs --edit edit.safetensors --base-single-file sd15.safetensors --format single-file
""",
    "list": """examples:
  erasure list
  erasure list --methods --json
  erasure list --method esd-x
  erasure list --judges
  erasure list --metrics
""",
}
EXAMPLES["benchmark"] = """examples:
  erasure benchmark --methods uce,esd-x --concepts shape=circle,texture=striped --out outputs/benchmark
  erasure benchmark --methods uce --concepts circle --set uce.guide=square --limit 4 --out outputs/quick
  erasure benchmark --methods uce,esd-x,spm --concepts circle --shard 1/2 --out outputs/bench   # and --shard 2/2, then --merge
"""
EXAMPLES["main"] = "examples:\n" + "".join(
    line + "\n" for text in EXAMPLES.values() for line in text.splitlines()[1:2])

BUILTIN_WORLD = "shapeworld"
UNEDITED = "unedited"
EXPORT_FORMATS = ("diffusers", "single-file", "lora", "kohya", "edit")
SEED_LIMIT = 2**64  # torch.Generator.manual_seed takes seeds in [0, 2^64)
SCALE_LIMIT = 1e6  # --lamb, --erase-scale, --preserve-scale: beyond this the solve is all ridge or all erase
MAX_STEPS = 1000  # the sampling steps SD schedulers have (num_train_timesteps); more is refused by diffusers
MAX_GUIDANCE = 100.0  # far beyond any use (SD: 1-15); larger values overflow fp16 activations into NaN images
MAX_IMAGES = 100_000  # images one generate/evaluate run holds in memory (about 78 GB at 512 px): split larger runs
MAX_LORA_RANK = 4096
# The names erasure.models.resolve_device_dtype accepts (it imports torch, so the check is repeated here).
DTYPE_NAMES = ("auto", "fp32", "float32", "float", "32", "fp16", "float16", "half", "16", "bf16", "bfloat16")
_DEVICE = re.compile(r"^(auto|cpu|mps|(cuda|xpu)(:\d+)?)$")
# Like erasure.models: what may be a Hub id in the local cache rather than a local path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".bin", ".pt", ".pth")
_CONCEPT_LABEL = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*(.*\S)\s*$")


class UsageError(Exception):
    """A mistake in the command line itself (unknown flag, missing value): reported in one line."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake becomes one line naming the help to read (not usage + error)."""

    def error(self, message: str):  # type: ignore[override]
        # "argument --steps: must be >= 1 (got 0)" reads better as "--steps must be >= 1 (got 0)"
        message = re.sub(r"^argument (\S+): (must .*)$", r"\1 \2", message)
        raise UsageError(f"{message}; see `{self.prog} --help`")


# --- flag types: checked by argparse (and for config-file values), before anything is loaded ----

class _Number:
    """An argparse type: an int or a finite float within bounds. Text that is no number raises ValueError
    (argparse: "invalid int value: 'abc'"); a number out of range raises ArgumentTypeError with the range."""

    def __init__(self, kind: type, minimum: float | None = None, maximum: float | None = None,
                 below: float | None = None, what: str = "") -> None:
        self.kind, self.minimum, self.maximum, self.below, self.what = kind, minimum, maximum, below, what
        self.__name__ = kind.__name__  # argparse names the type in "invalid int value"

    def __call__(self, text: Any):
        if isinstance(text, bool):
            raise ValueError(text)
        if self.kind is int:
            if isinstance(text, float):  # a config file's 3.0 (but not 3.5, nan or 1e30)
                if not (math.isfinite(text) and text.is_integer()):
                    raise ValueError(text)
                text = int(text)
            value = text if isinstance(text, int) else int(str(text).strip())
        else:
            value = float(text)
        low, high, below = self.minimum, self.maximum, self.below
        if (not math.isfinite(value) or (low is not None and value < low) or (high is not None and value > high)
                or (below is not None and value >= below)):
            raise argparse.ArgumentTypeError(f"must be {self.expected()} (got {text})")
        return value

    def expected(self) -> str:
        """What the value must be, in words: "a finite number >= 0", ">= 0 and < 2^64"."""
        low, high, below = self.minimum, self.maximum, self.below
        if low is not None and high is not None:
            bounds = f"in [{low:g}, {high:g}]"
        else:
            parts = ([f">= {low:g}"] if low is not None else []) + ([f"<= {high:g}"] if high is not None else [])
            if below is not None:
                parts.append("< 2^64" if below == SEED_LIMIT else f"< {below:g}")
            bounds = " and ".join(parts)
        text = f"a finite number {bounds}".strip() if self.kind is float else bounds
        return text + (f" ({self.what})" if self.what else "")


SEED = _Number(int, minimum=0, below=SEED_LIMIT)
AT_LEAST_ONE = _Number(int, minimum=1)
AT_LEAST_ZERO = _Number(int, minimum=0)
STEPS = _Number(int, minimum=1, maximum=MAX_STEPS)
GUIDANCE = _Number(float, minimum=0, maximum=MAX_GUIDANCE)
IMAGES = _Number(int, minimum=1, maximum=MAX_IMAGES)
LORA_RANK = _Number(int, minimum=1, maximum=MAX_LORA_RANK)
SCALE = _Number(float, minimum=0, maximum=SCALE_LIMIT)


def _add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config-file", default=None,
                   help="YAML or JSON file of flags for this command (keys are flag names); command-line flags override it")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    _add_common_args(p)
    p.add_argument("--model", default=None,
                   help="built-in world 'shapeworld' (default), a diffusers folder, a .safetensors file, or a Hub id in the local cache")
    p.add_argument("--config", default=None, help="local config folder for a single-file checkpoint (offline)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--dtype", default=None,
                   help="fp32, fp16, bf16 (default: fp16 on cuda, fp32 on cpu; fp16 on the cpu is refused)")
    p.add_argument("--allow-pickle", action="store_true", help="allow loading pickled .ckpt/.bin weights (unsafe)")


def _add_sampler_args(p: argparse.ArgumentParser, what: str = "") -> None:
    p.add_argument("--steps", type=STEPS, default=None,
                   help=f"sampling steps{what}, 1 to {MAX_STEPS} (default: the model's, 25)")
    p.add_argument("--guidance", type=GUIDANCE, default=None,
                   help=f"classifier-free guidance scale{what}, 0 to {MAX_GUIDANCE:g} (default: the model's: 5 on the "
                        "built-in world, 7.5 otherwise)")


def _add_output_args(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--out", default=default, help=f"output folder (default {default}); never the current folder, "
                   "home, a git checkout or a folder holding an input")
    p.add_argument("--force", action="store_true", help="replace --out if it exists (an earlier erasure output)")


# --- small helpers ---------------------------------------------------------------------------

def _error(message: str):
    from erasure.errors import ErasureError

    return ErasureError(message)


def _status(text: str) -> None:
    """A labelled status line for a step that takes a while; only on a terminal (logs and pipes stay clean)."""
    if sys.stderr.isatty():
        print(f"... {text}", file=sys.stderr, flush=True)


def _is_world(model: str | None) -> bool:
    return model in (None, BUILTIN_WORLD)


def _check_model(flag: str, value: str | None) -> None:
    """A local model path that does not exist is a mistake found without torch (erasure.models says the same
    once loading; Hub ids and the built-in world are looked up there)."""
    if value is None or value == BUILTIN_WORLD:
        return
    path = Path(value).expanduser()
    if path.exists():
        return
    if path.suffix.lower() in _SINGLE_FILE_SUFFIXES or path.is_absolute() or not _HUB_ID.match(value):
        raise _error(f"{flag} {value!r} not found: no such file or folder, and not a Hub id like org/name")


def _check_folder(flag: str, value: str | None, what: str) -> None:
    if value is not None and not Path(value).expanduser().is_dir():
        raise _error(f"{flag} {value} not found; give {what}")


def _check_file(flag: str, value: str | None, what: str) -> None:
    if value is not None and not Path(value).expanduser().is_file():
        raise _error(f"{flag} {value} not found; give {what}")


def _check_device_dtype(args) -> None:
    """Names only (no torch): the device and dtype are resolved, and refused if they cannot work, later."""
    if args.device is not None and not _DEVICE.match(str(args.device).strip().lower()):
        raise _error(f"unknown device {args.device!r}; use cpu, cuda or cuda:N")
    if args.dtype is not None and str(args.dtype).lower().removeprefix("torch.") not in DTYPE_NAMES:
        raise _error(f"unknown dtype {args.dtype!r}; use fp32, fp16 or bf16")
    if args.dtype is not None and str(args.device or "").lower() == "cpu" and _is_fp16(args.dtype):
        raise _fp16_on_cpu()


def _is_fp16(dtype: str) -> bool:
    return str(dtype).lower().removeprefix("torch.") in ("fp16", "float16", "half", "16")


def _fp16_on_cpu():
    return _error("fp16 on the CPU is refused: its kernels are slow or missing there (diffusers warns and may "
                  "produce black images); use --dtype fp32 or bf16 on the CPU, or --device cuda for fp16")


def _resolve_device(args) -> tuple[Any, Any]:
    """(device, dtype) for loading, after torch is imported. The policy: CUDA asked for without a GPU (or an
    index beyond the GPUs there are) and fp16 on the CPU are refused before loading, in one line."""
    import torch

    from erasure.models import resolve_device_dtype

    device, dtype = resolve_device_dtype(args.device, args.dtype)
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise _error(f"device {args.device!r} requested but this machine has {torch.cuda.device_count()} GPU(s); "
                     "use cuda:0 .. cuda:N-1 or --device cpu")
    if device.type == "cpu" and dtype == torch.float16:
        raise _fp16_on_cpu()
    return device, dtype


def _load_model(args, model: str | None, config: str | None):
    """The pipeline ``model`` (with its single-file ``config``) on the device and dtype the flags ask for."""
    from erasure.models import load_pipeline

    device, dtype = _resolve_device(args)
    _status(f"loading {model or BUILTIN_WORLD} on {device} ({str(dtype).removeprefix('torch.')})")
    return load_pipeline(model, config=config, device=device, dtype=dtype, allow_pickle=args.allow_pickle)


def _sampler_settings(args, world: bool, **extra):
    """The sampler settings: the flags given, the model's defaults for the rest (the built-in world's in every
    subcommand); an explicit 0 guidance is kept, never replaced by a default."""
    from erasure.evaluation.evaluate import WORLD_SETTINGS
    from erasure.generation import SamplerSettings

    base = WORLD_SETTINGS if world else SamplerSettings()
    steps = base.steps if args.steps is None else args.steps
    guidance = base.guidance if args.guidance is None else args.guidance
    return SamplerSettings(steps=steps, guidance=guidance, **extra)


def _output(args, inputs: list, *, need_bytes: int = 0) -> Path:
    from erasure.files import check_output

    return check_output(args.out, force=args.force, inputs=[i for i in inputs if i], need_bytes=need_bytes)


def _concept_parts(text: str, flag: str = "--concept") -> tuple[str | None, str]:
    """``circle`` -> (None, "circle"); ``shape=circle`` -> ("shape", "circle"). Both forms in every command."""
    if text is None or not str(text).strip():
        raise _error(f"empty concept given to {flag}; name one, e.g. {flag} circle (or {flag} shape=circle)")
    match = _CONCEPT_LABEL.match(str(text))
    if match:
        return match[1], match[2].strip()
    if "=" in str(text):
        raise _error(f"{flag} wants a name (circle) or ATTRIBUTE=VALUE (shape=circle), got {text!r}")
    return None, str(text).strip()


def _world_attribute(value: str, attribute: str | None, flag: str = "--concept") -> str:
    """The built-in world's attribute of a concept value (``circle`` -> ``shape``); a one-line error naming the
    world's concepts when it has none (or another attribute than the one given)."""
    from erasure.evaluation.world_prompts import ERASABLE

    found = [a for a, values in ERASABLE.items() if value in values]
    if not found:
        known = "; ".join(f"{a}: {', '.join(v)}" for a, v in ERASABLE.items())
        raise _error(f"{flag} {value!r} is not a concept of the built-in world ({known})")
    if attribute is not None and attribute not in found:
        raise _error(f"{flag} {attribute}={value}: on the built-in world {value} is a {found[0]}; "
                     f"write {found[0]}={value} or just {value}")
    return found[0]


def _check_image_count(count: int, what: str) -> None:
    # every image of a run is kept in memory until it is written: refuse before the machine runs out
    if count > MAX_IMAGES:
        raise _error(f"{what} makes {count} images, more than one run holds ({MAX_IMAGES}); split the run")


def _next_free(path: Path) -> Path:
    """``path``, or ``path-2``, ``path-3`` ... : the first that does not exist (for a printed next command)."""
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate


def _command(*words: Any) -> str:
    """A command line to print, quoted so that it runs as printed in a POSIX shell."""
    return shlex.join(str(w) for w in words)


# --- generate --------------------------------------------------------------------------------

def _read_prompts(args) -> list[str]:
    prompts = list(args.prompt or [])
    if args.prompts_file:
        path = Path(args.prompts_file)
        if not path.is_file():
            raise _error(f"prompts file {path} not found; give a text file with one prompt per line")
        try:
            prompts += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (UnicodeDecodeError, OSError) as e:
            raise _error(f"prompts file {path} is not readable text ({type(e).__name__}); give a UTF-8 text file "
                         "with one prompt per line") from None
    if not prompts:
        raise _error("no prompts given; use --prompt TEXT (repeatable) or --prompts-file FILE")
    return prompts


def check_generate(args) -> None:
    args.prompt_list = _read_prompts(args)
    if args.seeds:
        args.seed_list = list(args.seeds)
    else:
        if args.seed + args.num_seeds > SEED_LIMIT:
            raise _error(f"--seed {args.seed} with --num-seeds {args.num_seeds} goes beyond the largest seed 2^64-1; "
                         "lower --seed")
        args.seed_list = list(range(args.seed, args.seed + args.num_seeds))
    _check_image_count(len(args.prompt_list) * len(args.seed_list), "prompts x seeds")
    _check_device_dtype(args)
    _check_model("--model", args.model)
    _check_folder("--config", args.config, "the local config folder of the single-file checkpoint")
    args.out_path = _output(args, [args.prompts_file, args.model, args.config, args.config_file])


def cmd_generate(args) -> int:
    from erasure.generation import generate_images, save_generation

    settings = _sampler_settings(args, _is_world(args.model), negative_prompt=args.negative_prompt)
    settings.validate()
    pipe = _load_model(args, args.model, args.config)
    prompts, seeds = args.prompt_list, args.seed_list
    all_prompts = [p for p in prompts for _ in seeds]
    all_seeds = [s for _ in prompts for s in seeds]
    _status(f"generating {len(all_prompts)} images")
    images = generate_images(pipe, all_prompts, all_seeds, settings, batch_size=args.batch_size)
    out = save_generation(images, all_prompts, all_seeds, args.out_path, settings=settings,
                          model=args.model or BUILTIN_WORLD, grid_shape=(len(prompts), len(seeds)), force=args.force)
    print(f"wrote {len(images)} images and {out / 'grid.png'}")
    return 0


# --- erase -----------------------------------------------------------------------------------

def _parse_set(items: list[str] | None) -> dict[str, Any]:
    """``--set KEY=VALUE`` (VALUE as JSON, else text); NaN and infinities are refused here, once."""
    settings: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise _error(f"--set wants KEY=VALUE (JSON value), got {item!r}")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        if not _finite(parsed):
            raise _error(f"--set {key}={value}: not a finite number; give a finite value")
        settings[key] = parsed
    return settings


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    return True


def _resumable(spec) -> bool:
    """Whether a method checkpoints while it trains and can continue with --resume."""
    return bool(spec.trains) and "checkpoint_dir" in spec.options and getattr(spec, "resumable", True)


def _erase_settings(args, spec) -> tuple[dict[str, Any], dict[str, Any]]:
    """(settings, run options) for ``spec`` from the flags; settings checked by the spec (no torch)."""
    settings: dict[str, Any] = {}
    if _resumable(spec):
        settings["checkpoint_every"] = args.checkpoint_every  # --set checkpoint_every=N, below, wins
    for key in ("preserve", "tokens", "lamb", "erase_scale", "preserve_scale"):
        value = getattr(args, key)
        if value is not None:
            settings[key] = value
    if args.no_preserve:
        settings["preserve"] = []
    if args.anchor is not None:  # --anchor and --guide are one flag: the spec says which setting it is
        if spec.anchor_setting is None:
            raise _error(f"{spec.name} takes no anchor or guide; drop --anchor/--guide")
        settings[spec.anchor_setting] = args.anchor[0] if len(args.anchor) == 1 else list(args.anchor)
    if args.templates is not None:
        one = len(args.templates) == 1 and "{}" not in args.templates[0]  # a template set's name
        settings["templates"] = args.templates[0] if one else list(args.templates)
    settings.update(_parse_set(args.set))
    options = {k: settings.pop(k) for k in list(settings) if k in spec.options}
    settings = spec.validate_settings(settings)
    return settings, options


def check_erase(args) -> None:
    from erasure.methods import METHODS

    args.run_record = _run_record(args)  # the flags as given, before the checks add what they found
    if not args.concept:
        raise _error("no concept given; name one with --concept TEXT (repeat for several)")
    parts = [_concept_parts(c) for c in args.concept]
    args.concepts = [value for _, value in parts]
    spec = METHODS.get(args.method)  # an unknown method: "did you mean", before the model loads
    args.spec = spec
    settings, options = _erase_settings(args, spec)
    _check_device_dtype(args)
    _check_model("--model", args.model)
    _check_folder("--config", args.config, "the local config folder of the single-file checkpoint")
    args.out_path = out = _output(args, [args.model, args.config, args.config_file])
    args.labels = []
    if args.evaluate:
        if not _is_world(args.model):
            raise _error("--evaluate knows the built-in world's concepts only (it judges with the world's "
                         "classifier); for your model, evaluate from Python with evaluate(..., classifier=...)")
        args.labels = [(_world_attribute(value, attribute), value) for attribute, value in parts]
        for attribute, value in args.labels:
            records = _prompt_set(f"shapeworld-{attribute}-{value}").records
            _check_image_count(len(records) * args.samples_per_prompt, "the world's prompts x --samples-per-prompt")
    checkpoints = out.with_name(out.name + ".checkpoints")  # a trained method's interval checkpoints
    run: dict[str, Any] = {}
    if _resumable(spec):
        if os.path.lexists(checkpoints) and not args.resume and not args.force:
            raise _error(f"{checkpoints} holds an interrupted run's checkpoints; add --resume to continue it, "
                         "or --force to start over")
        run = {"checkpoint_dir": checkpoints, "resume": args.resume}
    elif args.resume:
        raise _error(f"--resume applies to methods that checkpoint while they train (see `erasure list --methods`); "
                     f"{spec.name} cannot resume: run it again without --resume")
    args.settings, args.run_options, args.checkpoints = settings, {**options, **run}, checkpoints


def _run_record(args) -> dict:
    """The flags a command ran with, as a config file (``--config-file run.json`` runs it again)."""
    skip = {"func", "check", "command", "config_file", "force"}
    return {k.replace("_", "-"): v for k, v in vars(args).items() if k not in skip and v is not None and v is not False}


def _export_hint(args, saved: Path) -> str:
    """The next command, complete: the same model flags, so that it runs as printed."""
    words: list[Any] = ["erasure", "export", "--edit", saved]
    for flag, value in (("--model", args.model), ("--config", args.config), ("--device", args.device),
                        ("--dtype", args.dtype)):
        if value is not None:
            words += [flag, value]
    if args.allow_pickle:
        words.append("--allow-pickle")
    words += ["--out", _next_free(args.out_path.with_name(args.out_path.name + "-export"))]
    return _command(*words)


def _remove_checkpoints(folder: Path) -> None:
    import shutil

    if folder.is_symlink() or folder.is_file():
        folder.unlink()
    elif folder.is_dir():
        shutil.rmtree(folder)


def cmd_erase(args) -> int:
    from erasure.files import atomic_folder, dumps_json
    from erasure.methods import erase

    spec, out = args.spec, args.out_path
    if _resumable(spec) and args.force and not args.resume and os.path.lexists(args.checkpoints):
        _remove_checkpoints(args.checkpoints)  # --force without --resume: start over
    pipe = _load_model(args, args.model, args.config)
    _status(f"erasing {', '.join(args.concepts)} with {spec.name}")
    edit = erase(pipe, spec.name, args.concepts, **args.settings, **args.run_options)
    from erasure.distributed import process_state

    if not process_state(pipe.device).is_main_process:  # torchrun / accelerate launch: one process writes
        return 0
    saved_as = "adapter" if edit.kind == "adapter" else "edit.safetensors"  # a LoRA folder load_lora_weights reads
    with atomic_folder(out, force=args.force, inputs=[args.model, args.config, args.config_file]) as tmp:
        edit.save(tmp / saved_as)
        (tmp / "run.json").write_text(dumps_json(args.run_record))
        (tmp / "config.json").write_text(dumps_json(
            {"method": edit.method, "concepts": list(edit.concepts), "config": dict(edit.config),
             "info": dict(edit.info), "model": args.model or BUILTIN_WORLD}))
        lines = [_erase_summary(edit)]
        for label in args.labels:
            lines += _evaluate_erased(args, pipe, edit, label, tmp)
    if _resumable(spec) and os.path.lexists(args.checkpoints):
        _remove_checkpoints(args.checkpoints)  # the result is in place: the checkpoints have served
    print("\n".join(lines))
    print(f"wrote {out / saved_as}" + (f" and {out}/eval-*/report.md (grids: compare-<group>.png)" if args.labels else ""))
    print(f"export it: {_export_hint(args, out / saved_as)}")
    return 0


def _erase_summary(edit) -> str:
    head = f"erased {', '.join(edit.concepts)} with {edit.method}"
    if edit.kind == "adapter":
        return (f"{head}: adapter on {len(edit.modules)} modules, rank {edit.lora_config.get('r')}, "
                f"{edit.size_bytes / 1024:.0f} KB")
    if "erase_rows" in edit.info:
        return (f"{head}: {len(edit.tensors)} tensors changed ({edit.info.get('erase_rows')} erased / "
                f"{edit.info.get('preserve_rows')} preserved embeddings, solve {edit.info.get('solve_seconds')} s)")
    return f"{head}: {len(edit.tensors)} tensors changed"


def _evaluate_erased(args, pipe, edit, label: tuple[str, str], folder: Path) -> list[str]:
    """``erase --evaluate``: the concept's world prompt set on the base and the erased model, compared (the
    experiment loop, :func:`erasure.experiments.evaluate_result`, does the base / apply / measure / restore)."""
    from erasure import experiments
    from erasure.evaluation.evaluate import compare, world_features

    attribute, value = label
    set_name = f"shapeworld-{attribute}-{value}"
    _status(f"evaluating {value}: generating with the base model, then the erased one")
    base, report = experiments.evaluate_result(
        pipe, edit, set_name, concept=label, settings=_sampler_settings(args, True),
        samples_per_prompt=args.samples_per_prompt, log=lambda line: _status(f"evaluating {value}: {line}"))
    compare(report, base, features=world_features, feature_extractor="shapeworld classifier features (penultimate layer)")
    report.save(folder / f"eval-{value}", baseline=base)
    return [f"  {value}: {key} {base.value(key):.3f} -> {report.value(key):.3f}"
            for key in ("target_accuracy", "in_domain_retain_accuracy", "cross_domain_retain_accuracy")
            if key in report.metrics]


# --- evaluate --------------------------------------------------------------------------------

def _prompt_set(text: str):
    """A registered prompt set or a CSV file, read (and so checked) before any model loads."""
    from erasure.evaluation.prompts import prompt_sets, read_prompt_set

    registry = prompt_sets()
    if text in registry:
        return read_prompt_set(registry.get(text), name=text)
    if Path(text).is_file():
        return read_prompt_set(Path(text))
    if Path(text).suffix.lower() == ".csv":
        raise _error(f"prompt file {text} not found; give a CSV file or a prompt set name (see `erasure list`)")
    registry.get(text)  # "unknown prompt set ...; did you mean"
    raise _error(f"unknown prompt set {text!r}; see `erasure list`")


def _registry_run(args) -> bool:
    """Whether ``evaluate`` runs the registry-driven path (a preset, a judge, named metrics, a CLIP or a reference)."""
    return bool(args.preset or args.judge or args.metric or args.clip or args.reference or args.images_dir)


def _split_values(values: list[str] | None) -> list[str]:
    return [v.strip() for value in values or [] for v in value.split(",") if v.strip()]


def _judge_settings(args, run, pset) -> tuple[str | None, dict]:
    """The judge to build and its settings: the preset's, then ``--judge NAME[:ARG]``, ``--judge-set``,
    ``--judge-weights``, ``--allow-pickle``; checked (names, values, files) without torch."""
    from erasure.evaluation.judges import parse_judge_spec

    name = args.judge or (run.judge if run is not None else None)
    if name is None:
        if args.judge_set or args.judge_weights:
            raise _error("--judge-set and --judge-weights go with a judge; add --judge NAME (see `erasure list --judges`)")
        return None, {}
    spec, from_name = parse_judge_spec(name)
    settings: dict[str, Any] = {}
    if run is not None and run.judge and parse_judge_spec(run.judge)[0].name == spec.name:
        settings.update(run.judge_settings)
        if not args.judge:
            settings.update(parse_judge_spec(run.judge)[1])
    settings.update(from_name)
    known = {s["name"] for s in spec.settings()}
    for key, value in _parse_set(args.judge_set).items():
        if isinstance(value, str) and key in known and spec.config.__dataclass_fields__[key].metadata.get("types") == (tuple,):
            value = [v.strip() for v in value.split(",") if v.strip()]
        settings[key] = value
    if args.judge_weights:
        if "weights" not in known:
            files = [k for k in sorted(known) if k.endswith("_weights")]
            hint = f" (pass its files with {', '.join(f'--judge-set {k}=PATH' for k in files)})" if files else ""
            raise _error(f"judge {spec.name} takes no weights file; drop --judge-weights{hint}")
        _check_file("--judge-weights", args.judge_weights, f"the weights file of the {spec.name} judge")
        settings["weights"] = args.judge_weights
    if args.allow_pickle and "allow_pickle" in known:
        settings["allow_pickle"] = True
    if run is not None and run.options.get("judge_classes_from_file") and "classes" in known and not settings.get("classes"):
        settings["classes"] = list(pset.concepts())
    checked = spec.check_files(settings)  # the judge's own check (UnlearnCanvas: both checkpoints, timm)
    for key in sorted(k for k in checked if k in ("weights", "detector") or k.endswith("_weights")):
        if checked.get(key):
            _check_file(f"--judge-set {key}", checked[key], f"the {key} file of the {spec.name} judge")
    if spec.name == "image-classifier" and str(checked.get("architecture", "")).startswith("timm:"):
        from erasure.evaluation.judges import _import_timm

        _import_timm()
    if checked.get("labels") not in (None, "imagenet"):
        _check_file("--judge-set labels", checked["labels"], "a label map (.json list or .txt, one name per line)")
    return name, settings


def check_evaluate(args) -> None:
    if not args.prompts and not args.preset:
        raise _error("no prompt set given; use --prompts NAME (see `erasure list`) or --prompts FILE.csv")
    args.run = None
    if args.preset:
        from erasure.evaluation.presets import protocol_run

        # no --prompts-file: the prompt file the package generates (UnlearnCanvas' answer set), else an error
        args.run, args.prompt_set = protocol_run(args.preset, args.prompts or None, role=args.role, subset=args.subset)
        pset = args.prompt_set
    else:
        if args.role or args.subset:
            raise _error("--role and --subset go with --preset NAME")
        args.prompt_set = pset = _prompt_set(args.prompts)
    samples = args.samples_per_prompt if args.samples_per_prompt is not None else (
        args.run.samples_per_prompt if args.run is not None else 1)
    args.samples_per_prompt = samples
    _check_image_count(len(pset.records) * args.samples_per_prompt, "prompts x --samples-per-prompt")
    largest = max((int(r.evaluation_seed) for r in pset.records), default=0) + args.samples_per_prompt - 1
    if largest >= SEED_LIMIT:
        raise _error(f"prompt set {args.prompts or pset.name} has seeds up to {largest} with --samples-per-prompt "
                     f"{args.samples_per_prompt}; seeds must be < 2^64")
    args.judge_name, args.judge_settings = _judge_settings(args, args.run, pset)
    args.label = None
    if args.concept_label is not None:
        attribute, value = _concept_parts(args.concept_label)
        if args.judge_name is None or args.judge_name == "world":
            if not _is_world(args.model):
                raise _error("classifier metrics need a classifier: the built-in world brings its own, on your model "
                             "pass a judge (--judge image-classifier:ARCH, clip-zero-shot, ...; see `erasure list "
                             "--judges`) or drop --concept")
            if attribute is None:
                attribute = _world_attribute(value, None)
            from erasure.evaluation.classifier_metrics import check_concept_labels

            check_concept_labels(tuple(pset.records), (attribute, value))
            args.label = (attribute, value)
        else:
            example = args.run.options.get("concept_example") if args.run is not None else None
            if attribute is None and example and "=" in example:
                raise _error(f"preset {args.run.preset} names its concepts ATTRIBUTE=VALUE; write e.g. --concept {example}")
            if attribute is not None and any(attribute in r.extra for r in pset.records):
                from erasure.evaluation.classifier_metrics import check_concept_labels

                check_concept_labels(tuple(pset.records), (attribute, value))  # "did you mean", before loading
            args.label = f"{attribute}={value}" if attribute else value
    elif args.run is not None and args.run.concept == "required":
        example = args.run.options.get("concept_example") or next(iter(pset.concepts()), "NAME")
        raise _error(f"preset {args.run.preset} measures one erased concept; name it with --concept "
                     f"(e.g. --concept {example})")
    args.metric_names = _split_values(args.metric) or None
    if args.metric_names is None and args.run is not None:
        args.metric_names = list(args.run.metrics) + (list(args.run.reference_metrics) if args.reference else [])
    if args.metric_names is not None:
        from erasure.evaluation.metrics import METRICS

        for name in args.metric_names:
            METRICS.get(name)  # "unknown metric ...; did you mean"
        clip_from_judge = (args.run is not None and args.run.options.get("clip_from_judge")
                           and (args.judge_name or "").startswith("clip-zero-shot"))
        needs_clip = [m for m in args.metric_names if m in ("clip_score", "clip_accuracy")]
        if needs_clip and not args.clip and not clip_from_judge:
            raise _error(f"{needs_clip[0]} needs a CLIP: pass --clip SPEC (open_clip:ViT-B-32 with --clip-weights FILE, "
                         "or transformers:FOLDER)" + (f", or --metric to choose other metrics of preset {args.preset}"
                                                      if args.preset else ""))
        needs_reference = [m for m in args.metric_names if m in ("fid", "kid", "per_prompt_change")]
        if needs_reference and not args.reference:
            raise _error(f"{needs_reference[0]} needs reference images: pass --reference FOLDER (or use --compare, "
                         "which compares with the baseline model's images)")
    if args.reference:
        _check_folder("--reference", args.reference, "a folder of reference images (PNG/JPEG)")
        if not (args.features or _is_world(args.model)):
            raise _error("FID/KID against --reference need features: pass --features SPEC (a CLIP backend)")
    if args.scheduler is not None:
        from erasure.evaluation.presets import SCHEDULERS

        if args.scheduler not in (*SCHEDULERS, "default"):
            raise _error(f"unknown --scheduler {args.scheduler!r}; use one of {', '.join(SCHEDULERS)} or default")
    if args.compare == UNEDITED and not args.edit:
        raise _error("--compare without a model compares with the unedited model, so it needs --edit; "
                     "or name the baseline model: --compare BASE")
    if args.edit and not Path(args.edit).exists():
        raise _error(f"{args.edit} not found; give the edit.safetensors (or adapter) that `erasure erase` wrote")
    _check_device_dtype(args)
    _check_model("--model", args.model)
    _check_folder("--config", args.config, "the local config folder of the single-file checkpoint")
    if args.compare not in (None, UNEDITED):
        _check_model("--compare", args.compare)
    _check_folder("--compare-config", args.compare_config, "the config folder of the single-file --compare model")
    _check_file("--features-weights", args.features_weights, "the weights file of the --features model")
    _check_file("--clip-weights", args.clip_weights, "the weights file of the --clip model")
    if args.features == "inception" and not args.features_weights:
        raise _error("--features inception needs pytorch-fid's weights file: download pt_inception-2015-12-05-6726825d.pth "
                     "(pytorch-fid's release) and pass --features-weights PATH --allow-pickle")
    args.out_path = _output(args, [args.prompts if args.prompts and Path(args.prompts).is_file() else None,
                                   args.edit, args.model,
                                   args.config, args.compare if args.compare != UNEDITED else None,
                                   args.compare_config, args.features_weights, args.config_file, args.judge_weights,
                                   args.reference, args.clip_weights,
                                   *(v for k, v in args.judge_settings.items() if k.endswith("_weights") and v)])


def _comparison_features(args, pipe):
    """(features function, its name) for FID/KID: the world's classifier, or a CLIP image tower given by flags."""
    if getattr(args, "features", None):
        from erasure.evaluation.distances import load_features

        return load_features(args.features, getattr(args, "features_weights", None),
                             allow_pickle=getattr(args, "allow_pickle", False))
    if getattr(pipe, "erasure_source", None) == BUILTIN_WORLD:
        from erasure.evaluation.evaluate import world_features

        return world_features, "shapeworld classifier features (penultimate layer)"
    return None, None


def cmd_evaluate_registry(args) -> int:
    """``evaluate`` with a preset, a judge, named metrics, a CLIP or a reference: the metric registry drives it."""
    from erasure.evaluation.evaluate import compare, evaluate
    from erasure.evaluation.judges import ClipZeroShotJudge, parse_judge_spec

    edit = _load_erasure_result(args.edit) if args.edit else None
    run = args.run
    pipe = _load_model(args, args.model, args.config)
    world = getattr(pipe, "erasure_source", None) == BUILTIN_WORLD
    if run is not None:
        overrides = {"steps": args.steps, "guidance": args.guidance, "height": args.image_size, "width": args.image_size}
        settings = run.sampler_settings(**overrides)
        scheduler = args.scheduler or run.sampler.get("scheduler")
        protocol = run.record(**overrides, scheduler=args.scheduler)
        guidance_from_file = bool(run.sampler.get("guidance_from_file")) and args.guidance is None
    else:
        extra = {"height": args.image_size, "width": args.image_size} if args.image_size else {}
        settings, scheduler, protocol, guidance_from_file = _sampler_settings(args, world, **extra), args.scheduler, None, False
    # the settings already hold what the name's ':ARG' sets (see _judge_settings)
    judge = parse_judge_spec(args.judge_name)[0].build(**args.judge_settings) if args.judge_name else None
    clip = None
    if args.clip:
        from erasure.evaluation.clip_backends import load_clip_backend

        clip = load_clip_backend(args.clip, args.clip_weights)
    elif run is not None and run.options.get("clip_from_judge") and isinstance(judge, ClipZeroShotJudge):
        clip = judge.backend
    features, features_name = _comparison_features(args, pipe)
    images = Path(args.images_dir) if args.images_dir else None
    kw = dict(concept=args.label, judge=judge, metrics=args.metric_names, clip=clip, settings=settings,
              samples_per_prompt=args.samples_per_prompt, scheduler=scheduler, guidance_from_file=guidance_from_file,
              protocol=protocol, features=features, feature_extractor=features_name)
    if judge is None and args.label is not None and not world:
        raise _error("--concept needs a judge on this model; pass --judge (see `erasure list --judges`)")
    baseline = None
    if args.compare == UNEDITED:
        _status("generating with the unedited model (baseline)")
        baseline = evaluate(pipe, args.prompt_set, images_dir=images and images / "baseline", **kw)
    elif args.compare:
        base_pipe = _load_model(args, args.compare, args.compare_config)
        _status(f"generating with {args.compare} (baseline)")
        baseline = evaluate(base_pipe, args.prompt_set, images_dir=images and images / "baseline", **kw)
        del base_pipe
    if edit is not None:
        edit.apply(pipe)
        pipe.erasure_edit = {"file": str(args.edit), "method": edit.method, "concepts": list(edit.concepts)}
    _status("generating with the " + ("edited model" if edit is not None else "model"))
    report = evaluate(pipe, args.prompt_set, reference=args.reference, images_dir=images and images / "model", **kw)
    if baseline is not None:
        compare(report, baseline, features=features, feature_extractor=features_name)
    out = report.save(args.out_path, force=args.force, baseline=baseline)
    print(report.markdown(baseline))
    print(f"wrote {out / 'report.md'}" + (f" and {out}/compare-*.png (before | after)" if baseline is not None else ""))
    return 0


def cmd_evaluate(args) -> int:
    from erasure.evaluation.evaluate import compare, evaluate

    if _registry_run(args):
        return cmd_evaluate_registry(args)
    edit = _load_erasure_result(args.edit) if args.edit else None  # a corrupted edit: refused before loading
    pipe = _load_model(args, args.model, args.config)
    kw = dict(concept=args.label, settings=_sampler_settings(args, getattr(pipe, "erasure_source", None) == BUILTIN_WORLD),
              samples_per_prompt=args.samples_per_prompt)
    baseline = None
    if args.compare == UNEDITED:
        _status("generating with the unedited model (baseline)")
        baseline = evaluate(pipe, args.prompt_set, **kw)
    elif args.compare:
        base_pipe = _load_model(args, args.compare, args.compare_config)
        _status(f"generating with {args.compare} (baseline)")
        baseline = evaluate(base_pipe, args.prompt_set, **kw)
        del base_pipe
    if edit is not None:
        edit.apply(pipe)
        pipe.erasure_edit = {"file": str(args.edit), "method": edit.method, "concepts": list(edit.concepts)}
    _status("generating with the " + ("edited model" if edit is not None else "model"))
    report = evaluate(pipe, args.prompt_set, **kw)
    if baseline is not None:
        features, name = _comparison_features(args, pipe)
        compare(report, baseline, features=features, feature_extractor=name)
    out = report.save(args.out_path, force=args.force, baseline=baseline)
    print(report.markdown(baseline))
    print(f"wrote {out / 'report.md'}" + (f" and {out}/compare-*.png (before | after)" if baseline is not None else ""))
    return 0


# --- export ----------------------------------------------------------------------------------

def _load_erasure_result(path: str):
    """The edit file or adapter folder `erasure erase` wrote (its kind read from the file's metadata); a missing,
    unreadable or corrupted one (checksum mismatch) is a one-line error."""
    from erasure.results import load_result

    if not Path(path).exists():
        raise _error(f"{path} not found; give the edit.safetensors (or adapter) that `erasure erase` wrote")
    return load_result(path)


def _export_formats(values: list[str] | None, has_edit: bool) -> tuple[str, ...]:
    if not values:
        return EXPORT_FORMATS if has_edit else ("diffusers", "single-file")
    formats = [f.strip() for v in values for f in v.split(",") if f.strip()]
    for f in formats:
        if f not in EXPORT_FORMATS:
            import difflib

            close = difflib.get_close_matches(f, EXPORT_FORMATS, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise _error(f"unknown export format {f!r}; {hint}choose from {', '.join(EXPORT_FORMATS)}")
    return tuple(dict.fromkeys(formats))


def check_export(args) -> None:
    args.formats = _export_formats(args.format, bool(args.edit))
    if args.base_single_file and not Path(args.base_single_file).is_file():
        raise _error(f"base single file {args.base_single_file} not found; give the .safetensors the edit was made on")
    args.report_data = None
    if args.report:
        file = Path(args.report)
        if not file.is_file():
            raise _error(f"report {file} not found; give a report.json that `erasure evaluate` wrote")
        try:
            args.report_data = json.loads(file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise _error(f"report {file} is not valid JSON ({getattr(e, 'msg', type(e).__name__)}); give a "
                         "report.json from `erasure evaluate`") from None
    if args.edit and not Path(args.edit).exists():
        raise _error(f"{args.edit} not found; give the edit.safetensors (or adapter) that `erasure erase` wrote")
    _check_device_dtype(args)
    _check_model("--model", args.model)
    _check_folder("--config", args.config, "the local config folder of the single-file checkpoint")
    args.out_path = _output(args, [args.edit, args.report, args.base_single_file, args.model, args.config,
                                   args.config_file])


def _export_bytes(pipe, formats: tuple[str, ...]) -> int:
    """About how many bytes the export writes: the model's weights once per dense format, plus a margin."""
    weights = sum(p.numel() * p.element_size() for name in ("unet", "text_encoder", "vae")
                  if getattr(pipe, name, None) is not None for p in getattr(pipe, name).parameters())
    dense = sum(f in formats for f in ("diffusers", "single-file"))
    return int(weights * dense * 1.05) + (1 << 20)


def cmd_export(args) -> int:
    from erasure.export import export
    from erasure.files import probe_writable

    edit = _load_erasure_result(args.edit) if args.edit else None
    pipe = _load_model(args, args.model, args.config)
    probe_writable(args.out_path.parent, need_bytes=_export_bytes(pipe, args.formats), target=str(args.out_path))
    _status(f"writing {', '.join(args.formats)}")
    written = export(pipe, args.out_path, edit=edit, formats=args.formats, base_single_file=args.base_single_file,
                     lora_rank=args.lora_rank, report=args.report_data, force=args.force)
    for fmt, path in written.items():
        print(f"{fmt:12s} {path}")
    for fmt, reason in getattr(written, "skipped", {}).items():  # formats that cannot hold this edit
        print(f"{fmt:12s} skipped: {reason}")
    print(f"wrote {args.out_path} (model card: {args.out_path / 'README.md'})")
    return 0


# --- benchmark -------------------------------------------------------------------------------

def check_benchmark(args) -> None:
    """Methods, concepts, settings, shard, attack, FID/KID features and the output, checked without torch."""
    from erasure.benchmark import check_out, parse_settings, parse_shard, plan
    from erasure.files import check_output

    if args.merge and (args.shard or args.force):
        raise _error("--merge assembles the rows already there; drop --shard and --force")
    _check_device_dtype(args)
    _check_model("--model", args.model)
    _check_folder("--config", args.config, "the local config folder of the single-file checkpoint")
    sampler = None
    if args.steps is not None or args.guidance is not None:  # the world's 25 steps, guidance 5 otherwise
        sampler = {"steps": 25 if args.steps is None else args.steps,
                   "guidance": 5.0 if args.guidance is None else args.guidance,
                   "eta": 0.0, "negative_prompt": None, "height": None, "width": None}
    attack_settings = _parse_set(args.attack_set)
    if attack_settings and not args.attack:
        raise _error("--attack-set goes with an attack; add --attack NAME (see `erasure attack --help`)")
    protocol, samples = None, args.samples_per_prompt
    measured = _benchmark_protocol(args)
    if measured is not None:
        protocol, sampler, preset_samples = measured
        samples = samples if samples is not None else preset_samples
    _check_file("--features-weights", args.features_weights, "the weights file of the --features model")
    args.plan = plan(args.methods, args.concepts, settings=parse_settings(args.set),
                     samples_per_prompt=samples if samples is not None else 2, sampler=sampler, limit=args.limit,
                     attack=args.attack, attack_settings=attack_settings,
                     model=None if _is_world(args.model) else args.model, protocol=protocol,
                     clip=args.clip, clip_weights=args.clip_weights, features=args.features,
                     features_weights=args.features_weights, allow_pickle=args.allow_pickle)
    args.shard_pair = parse_shard(args.shard)
    args.out_path, _ = check_out(args.out, args.plan, force=args.force, resume=args.resume or args.merge)
    check_output(args.out, force=True, replaceable=("benchmark.json",),  # and never a folder holding an input
                 inputs=[args.model, args.config, args.config_file, args.features_weights, args.clip_weights])


def _benchmark_protocol(args) -> tuple[dict, dict, int] | None:
    """Your model's measurement for the benchmark (a preset or a prompt file, and a judge), checked without
    torch: (protocol, sampler settings, images per prompt by default); None on the built-in world without those
    flags."""
    given = [f for f, v in (("--preset", args.preset), ("--prompts-file", args.prompts), ("--judge", args.judge),
                            ("--judge-set", args.judge_set), ("--judge-weights", args.judge_weights),
                            ("--metric", args.metric), ("--scheduler", args.scheduler), ("--role", args.role),
                            ("--subset", args.subset)) if v]
    if not given:
        if not _is_world(args.model):
            raise _error("the benchmark on your model measures with a prompt file and a judge: pass --preset NAME "
                         "--prompts-file FILE (a published protocol; `erasure list`), or --prompts-file FILE --judge "
                         "NAME (`erasure list --judges`)")
        return None
    if (args.role or args.subset) and not args.preset:
        raise _error("--role and --subset go with --preset NAME")
    run, pset = None, None
    if args.preset:
        from erasure.evaluation.presets import protocol_run

        run, pset = protocol_run(args.preset, args.prompts or None, role=args.role, subset=args.subset)
    elif not args.prompts:
        raise _error(f"{given[0]} needs the prompts to measure on: add --prompts-file FILE (a CSV)")
    else:
        pset = _prompt_set(args.prompts)
    judge, judge_settings = _judge_settings(args, run, pset)
    if judge is None:
        raise _error("the benchmark on your model needs a judge: add --judge NAME (see `erasure list --judges`)")
    sampler_values = dict(run.sampler) if run is not None else {}
    sampler = {"steps": args.steps or sampler_values.get("steps", 25 if _is_world(args.model) else 50),
               "guidance": args.guidance if args.guidance is not None else sampler_values.get("guidance", 7.5),
               "eta": 0.0, "negative_prompt": None, "height": args.image_size or sampler_values.get("height"),
               "width": args.image_size or sampler_values.get("width")}
    scheduler = args.scheduler or sampler_values.get("scheduler")
    if scheduler is not None:
        from erasure.evaluation.presets import SCHEDULERS

        if scheduler not in (*SCHEDULERS, "default"):
            raise _error(f"unknown --scheduler {scheduler!r}; use one of {', '.join(SCHEDULERS)} or default")
    metrics = _split_values(args.metric) or (list(run.metrics) if run is not None else None)
    protocol = {"prompts": str(args.prompts) if args.prompts else f"preset:{args.preset}", "judge": judge,
                "judge_settings": judge_settings, "metrics": metrics,
                "scheduler": None if scheduler == "default" else scheduler,
                "guidance_from_file": bool(sampler_values.get("guidance_from_file")),
                "preset": None if run is None else {"name": run.preset, "version": run.version, "role": run.role},
                "subset": bool(run.subset) if run is not None else False}
    return protocol, sampler, (run.samples_per_prompt if run is not None else 1)


def cmd_benchmark(args) -> int:
    from erasure.benchmark import concept_label, markdown, run_benchmark

    p = args.plan
    pipe = _load_model(args, args.model, args.config)
    board = run_benchmark(pipe, p.methods, [concept_label(c) for c in p.concepts], out=args.out_path,
                          settings=p.settings, samples_per_prompt=p.samples_per_prompt, sampler=p.sampler,
                          limit=p.limit, shard=args.shard_pair, merge=args.merge, force=args.force,
                          resume=args.resume, attack=p.attack, attack_settings=p.attack_settings, model=p.model,
                          protocol=p.protocol, clip=p.clip, clip_weights=p.clip_weights, features=p.features,
                          features_weights=p.features_weights, allow_pickle=p.allow_pickle,
                          log=lambda line: print(line, file=sys.stderr, flush=True))
    if board is None:
        print(f"shard {args.shard}: rows written to {args.out_path / 'rows'}; when every shard is done, run the "
              "same command without --shard (or with --merge) to write the leaderboard")
        return 0
    print(markdown(board))
    print(f"wrote {args.out_path / 'leaderboard.md'} (.csv, .json), target.png and tradeoff.png")
    return 0


# --- list ------------------------------------------------------------------------------------

def check_list(args) -> None:
    if args.method is not None:
        from erasure.methods import METHODS

        args.spec = METHODS.get(args.method)
    if args.json and not (args.methods or args.method or args.judges or args.metrics):
        raise _error("--json applies to --methods, --method NAME, --judges and --metrics; add one of them")


def cmd_list(args) -> int:
    from erasure.methods import METHODS

    if args.method is not None:
        description = args.spec.describe()
        print(json.dumps(description, indent=1) if args.json else _describe_text(description))
        return 0
    if args.judges:
        from erasure.evaluation.judges import JUDGES

        judges = [JUDGES.get(name).describe() for name in JUDGES.names()]
        if args.json:
            print(json.dumps(judges, indent=1))
        else:
            width = max(len(j["name"]) for j in judges)
            for j in judges:
                name = j["name"] + (f":{j['argument'].upper()}" if j["argument"] else "")
                print(f"{name:{width + 14}s}  {j['summary']}\n{'':{width + 16}s}needs: {j['needs']}; concept: {j['concept']}")
        return 0
    if args.metrics:
        from erasure.evaluation.metrics import METRICS

        metrics = [METRICS.get(name).describe() for name in METRICS.names()]
        if args.json:
            print(json.dumps(metrics, indent=1))
        else:
            width = max(len(m["name"]) for m in metrics)
            arrows = {True: "higher", False: "lower", None: "depends"}
            for m in metrics:
                print(f"{m['name']:{width}s}  better {arrows[m['higher_is_better']]:7s}  from {', '.join(m['inputs'])}"
                      f"  ({m['aggregation']})")
        return 0
    if args.methods:
        specs = [METHODS.get(name) for name in METHODS.names()]
        if args.json:
            print(json.dumps([s.describe() for s in specs], indent=1))
        else:
            width = max(len(s.name) for s in specs)
            for s in specs:
                trains = "resumable" if _resumable(s) else "trains" if s.trains else ""
                print(f"{s.name:{width}s}  {s.family:14s} {s.result:8s} {trains:9s}  {s.summary}")
        return 0
    from erasure.evaluation.judges import JUDGES
    from erasure.evaluation.metrics import METRICS
    from erasure.evaluation.presets import preset_names
    from erasure.evaluation.prompts import prompt_set_names

    print("methods:     " + ", ".join(METHODS.names()) + "  (erasure list --method NAME)")
    print("judges:      " + ", ".join(JUDGES.names()) + "  (erasure list --judges)")
    print("metrics:     " + ", ".join(METRICS.names()) + "  (erasure list --metrics)")
    print("prompt sets: " + ", ".join(prompt_set_names()))
    print("presets:     " + ", ".join(preset_names()))
    print("formats:     " + ", ".join(EXPORT_FORMATS) + "  (erasure export --format)")
    return 0


def _describe_text(d: dict) -> str:
    lines = [f"{d['name']}: {d.get('summary', '')}",
             f"  family {d['family']}, result {d['result']}{', trains (checkpoints, --resume)' if d['trains'] else ''}, "
             f"models {', '.join(d['models'])}",
             f"  paper: {d['paper']}", f"  reference: {d['reference']}"]
    if d.get("anchor"):
        lines.append(f"  --anchor/--guide sets {d['anchor']}" + (f": {d['anchor_meaning']}" if d.get("anchor_meaning") else ""))
    if d.get("changes"):
        lines.append(f"  changes: {d['changes']}")
    lines.append("  settings (--set NAME=VALUE):")
    for s in d["settings"]:
        bounds = ""
        if "choices" in s:
            bounds = f"; one of {', '.join(map(str, s['choices']))}"
        elif "minimum" in s or "maximum" in s:
            bounds = f"; in [{s.get('minimum', '')}, {s.get('maximum', '')}]"
        lines.append(f"    {s['name']} = {json.dumps(s['default'])} ({s['type']}{bounds}): {s['help']}")
    return "\n".join(lines)


# --- the parser ------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="erasure", description="Concept erasure for text-to-image diffusion models.",
                     epilog=EXAMPLES["main"], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    g = sub.add_parser("generate", help="generate images for prompts (seeded), with a PNG grid",
                       epilog=EXAMPLES["generate"], formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_model_args(g)
    g.add_argument("--prompt", action="append", help="a prompt (repeat for several)")
    g.add_argument("--prompts-file", help="text file, one prompt per line")
    g.add_argument("--seeds", type=SEED, nargs="+", help="explicit seeds in [0, 2^64) (one image per prompt and seed)")
    g.add_argument("--num-seeds", type=IMAGES, default=4, help="seeds --seed .. --seed+N-1 (default 4)")
    g.add_argument("--seed", type=SEED, default=0, help="first seed, in [0, 2^64) (default 0)")
    _add_sampler_args(g)
    g.add_argument("--negative-prompt", default=None)
    g.add_argument("--batch-size", type=AT_LEAST_ONE, default=16)
    _add_output_args(g, "outputs/generate")
    g.set_defaults(func=cmd_generate, check=check_generate)

    e = sub.add_parser("erase", help="erase concepts: writes a compact edit file (and, with --evaluate, reports)",
                       epilog=EXAMPLES["erase"], formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_model_args(e)
    e.add_argument("--method", default="uce", help="erasure method (see `erasure list --methods`; default uce)")
    e.add_argument("--concept", action="append", default=None,
                   help="a concept to erase, as a name (circle) or ATTRIBUTE=VALUE (shape=circle); repeat for "
                        "several; required")
    e.add_argument("--preserve", action="append", default=None,
                   help="a concept to preserve (repeatable; default on the built-in world: the other concepts of the same kind)")
    e.add_argument("--no-preserve", action="store_true", help="preserve nothing")
    e.add_argument("--anchor", "--guide", dest="anchor", action="append", default=None,
                   help="the concept the erased one is mapped to (ESD's anchor, UCE's guide; default: the empty "
                        "prompt); once, or once per concept where the method takes several")
    e.add_argument("--templates", nargs="+", default=None,
                   help="prompt templates with {} (e.g. \"a photo of {}\"), or a template set: none, uce-art, uce-object, shapeworld, shapeworld-captions")
    e.add_argument("--tokens", default=None, help="token selection (closed-form methods; see `erasure list --method uce`)")
    e.add_argument("--lamb", type=SCALE, default=None, help="ridge weight lambda, in [0, 1e6] (UCE 0.5, TIME 0.1)")
    e.add_argument("--erase-scale", type=SCALE, default=None, help="weight of the erase terms, in [0, 1e6]")
    e.add_argument("--preserve-scale", type=SCALE, default=None, help="weight of the preserve terms, in [0, 1e6]")
    e.add_argument("--set", action="append",
                   help="another method setting KEY=VALUE (VALUE as JSON), repeatable; see `erasure list --method NAME`")
    e.add_argument("--evaluate", action="store_true", help="also evaluate each erased concept (built-in world) before/after")
    e.add_argument("--samples-per-prompt", type=IMAGES, default=1)
    _add_sampler_args(e, " for --evaluate")
    _add_output_args(e, "outputs/erase")
    e.add_argument("--checkpoint-every", type=AT_LEAST_ZERO, default=50,
                   help="methods that train: save the training state every N iterations to OUT.checkpoints "
                        "(removed when the run finishes; 0 = only at the start and the end; default 50)")
    e.add_argument("--resume", action="store_true",
                   help="continue an interrupted trained run from OUT.checkpoints (same command otherwise)")
    e.set_defaults(func=cmd_erase, check=check_erase)

    v = sub.add_parser("evaluate", help="generate a prompt set and score it (report.json, report.md, grids)",
                       epilog=EXAMPLES["evaluate"], formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_model_args(v)
    v.add_argument("--prompts", "--prompts-file", dest="prompts", default=None,
                   help="prompt set name (see `erasure list`) or a CSV file (with --preset: your copy of its file); "
                        "required, except with --preset unlearncanvas (its answer set is generated)")
    v.add_argument("--preset", default=None, help="a published protocol (imagenette, i2p-nudity, artists, coco, "
                   "unlearncanvas; `erasure list`): fills the sampler, judge and metrics, checks the file's columns "
                   "and rows")
    v.add_argument("--role", default=None, help="with --preset: which of its prompt files this is (default: by columns)")
    v.add_argument("--subset", action="store_true",
                   help="with --preset: accept a file with fewer/more rows than the published one (recorded)")
    v.add_argument("--judge", default=None, help="what decides what an image shows: world, nudenet, clip-zero-shot[:CLIP], "
                   "image-classifier:ARCH or :transformers:FOLDER, callable:module:function (`erasure list --judges`)")
    v.add_argument("--judge-weights", default=None, help="the judge's local weights file (.safetensors; .pth with --allow-pickle)")
    v.add_argument("--judge-set", action="append", default=None, metavar="KEY=VALUE",
                   help="a judge setting (repeatable), e.g. threshold=0.45, labels=labels.txt, classes=a,b,c")
    v.add_argument("--metric", action="append", default=None,
                   help="metric(s) to compute, repeatable or comma-separated (`erasure list --metrics`); default: "
                        "the preset's, or what the judge allows")
    v.add_argument("--clip", default=None, help="CLIP for clip_score / clip_accuracy: open_clip:NAME (with --clip-weights), "
                   "transformers:FOLDER or world")
    v.add_argument("--clip-weights", default=None, help="weights file for --clip open_clip:NAME")
    v.add_argument("--reference", default=None, help="a folder of reference images for FID/KID (needs --features)")
    v.add_argument("--scheduler", default=None, help="sampler scheduler: lms, ddim, pndm, euler, euler-ancestral, "
                   "dpm-solver++ or default (the model's); a preset sets the protocol's")
    v.add_argument("--image-size", type=AT_LEAST_ONE, default=None, help="image height and width (a preset sets the protocol's)")
    v.add_argument("--images-dir", default=None,
                   help="keep the images in DIR/model (and DIR/baseline) with a hashed manifest; a rerun resumes there")
    v.add_argument("--concept", "--concept-label", dest="concept_label", default=None,
                   help="the erased concept for the classifier metrics: a name (circle, on the built-in world) or "
                        "ATTRIBUTE=VALUE (shape=circle)")
    v.add_argument("--edit", default=None, help="an edit file (erasure erase) to apply first")
    v.add_argument("--compare", nargs="?", const=UNEDITED, default=None, metavar="BASE",
                   help="also evaluate a baseline and compare (side-by-side grids, FID/KID, per-prompt change): "
                        "alone, the unedited model (with --edit); with BASE, another model (folder, file, Hub id)")
    v.add_argument("--compare-config", default=None, help="config folder for a single-file --compare BASE")
    v.add_argument("--features", default=None,
                   help="FID/KID features: inception (pytorch-fid's InceptionV3, weights by --features-weights), a CLIP "
                        "backend (open_clip:NAME with --features-weights, transformers:FOLDER); default on the world: its classifier")
    v.add_argument("--features-weights", default=None, help="weights file for --features open_clip:NAME")
    v.add_argument("--samples-per-prompt", type=IMAGES, default=None, help="images per prompt (default 1, or the preset's)")
    _add_sampler_args(v)
    _add_output_args(v, "outputs/evaluate")
    v.set_defaults(func=cmd_evaluate, check=check_evaluate)

    x = sub.add_parser("export", help="write an erased model as a diffusers folder, single file, LoRA (peft, kohya), edit file",
                       epilog=EXAMPLES["export"], formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_model_args(x)
    x.add_argument("--edit", default=None,
                   help="the edit file (or adapter) `erasure erase` wrote; without it the model is exported as it is")
    x.add_argument("--format", action="append", default=None,
                   help=f"format(s) to write, repeatable or comma-separated: {', '.join(EXPORT_FORMATS)} "
                        "(default: all that apply)")
    x.add_argument("--base-single-file", default=None,
                   help="the user's base .safetensors checkpoint: the single-file export patches the edited tensors into a copy")
    x.add_argument("--lora-rank", type=LORA_RANK, default=None,
                   help="LoRA rank for a dense edit (default: the exact rank the edit needs)")
    x.add_argument("--report", default=None, help="report.json from `erasure evaluate` for the model card")
    _add_output_args(x, "outputs/export")
    x.set_defaults(func=cmd_export, check=check_export)

    li = sub.add_parser("list", help="list methods, metrics, prompt sets and presets", epilog=EXAMPLES["list"],
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common_args(li)
    li.add_argument("--methods", action="store_true", help="one line per method: family, result, whether it trains")
    li.add_argument("--method", default=None, metavar="NAME", help="one method: paper, reference, every setting")
    li.add_argument("--judges", action="store_true", help="one line per judge: what it needs, what a concept means")
    li.add_argument("--metrics", action="store_true", help="one line per metric: inputs, higher is better, aggregation")
    li.add_argument("--json", action="store_true", help="with --methods, --method, --judges or --metrics: JSON")
    li.set_defaults(func=cmd_list, check=check_list)
    from erasure.attacks.cli import add_parser as add_attack_parser  # torch-free, like the other parsers

    a = add_attack_parser(sub)
    b = sub.add_parser("benchmark", help="methods x concepts on one model: one leaderboard (md, csv, json) and plots",
                       epilog=EXAMPLES["benchmark"], formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_model_args(b)
    b.add_argument("--methods", action="append", default=None,
                   help="methods, comma-separated or repeated (`erasure list --methods`); the unedited model is always in")
    b.add_argument("--concepts", action="append", default=None,
                   help="concepts, comma-separated or repeated: on the built-in world shape=circle,texture=striped; "
                        "on your model the judge's names (church,parachute or style=Van_Gogh)")
    b.add_argument("--set", action="append", default=None, metavar="METHOD.KEY=VALUE",
                   help="a method setting over its spec default (VALUE as JSON), repeatable: --set uce.guide=square")
    b.add_argument("--samples-per-prompt", type=IMAGES, default=None,
                   help="images per prompt (default 2 on the built-in world; a preset's, or 1, on your model)")
    b.add_argument("--preset", default=None, help="on your model: a published protocol (`erasure list`) that sets the "
                   "sampler, judge and metrics, as `erasure evaluate --preset`")
    b.add_argument("--prompts", "--prompts-file", dest="prompts", default=None,
                   help="on your model: the CSV of prompts every cell is measured on (with --preset: your copy of its file)")
    b.add_argument("--role", default=None, help="with --preset: which of its prompt files this is")
    b.add_argument("--subset", action="store_true", help="with --preset: accept a part of the published file")
    b.add_argument("--judge", default=None, help="on your model: what decides what an image shows (`erasure list --judges`)")
    b.add_argument("--judge-weights", default=None, help="the judge's local weights file")
    b.add_argument("--judge-set", action="append", default=None, metavar="KEY=VALUE", help="a judge setting, repeatable")
    b.add_argument("--metric", action="append", default=None,
                   help="on your model: metrics to compute (default: the preset's, or what the judge allows)")
    b.add_argument("--scheduler", default=None, help="on your model: lms, ddim, pndm, euler, euler-ancestral, "
                   "dpm-solver++ (a preset sets the protocol's)")
    b.add_argument("--image-size", type=AT_LEAST_ONE, default=None, help="on your model: image height and width")
    b.add_argument("--clip", default=None, help="add a CLIP score column (images vs their prompts): world (the built-in "
                   "world's CLIP), open_clip:NAME with --clip-weights FILE, or transformers:FOLDER")
    b.add_argument("--clip-weights", default=None, help="weights file for --clip open_clip:NAME")
    b.add_argument("--features", default=None,
                   help="on your model: FID/KID vs the unedited model on these features of all of a row's images (a "
                        "prompt file has no retain subset): inception (pytorch-fid's InceptionV3; --features-weights "
                        "pt_inception-2015-12-05-6726825d.pth --allow-pickle), open_clip:NAME with --features-weights, "
                        "or transformers:FOLDER. Refused on the built-in world, whose FID/KID always use its "
                        "classifier's features of the retain images")
    b.add_argument("--features-weights", default=None,
                   help="weights file for --features inception (a .pth needs --allow-pickle) or open_clip:NAME")
    b.add_argument("--limit", type=AT_LEAST_ONE, default=None,
                   help="only the first N prompts of each group of each prompt set (a quick run)")
    b.add_argument("--shard", default=None, metavar="I/N",
                   help="run only every N-th cell from the I-th (1-based); then run without --shard (or --merge)")
    b.add_argument("--merge", action="store_true", help="compute nothing: write the leaderboard from the shards' rows")
    b.add_argument("--attack", default=None, help="also attack every cell (pre-ASR, ASR): an attack of `erasure attack`")
    b.add_argument("--attack-set", action="append", default=None, metavar="KEY=VALUE", help="an attack setting, repeatable")
    _add_sampler_args(b)
    _add_output_args(b, "outputs/benchmark")
    b.add_argument("--resume", action="store_true",
                   help="continue the benchmark in --out (the default when --out holds this same benchmark)")
    b.set_defaults(func=cmd_benchmark, check=check_benchmark)
    parser.subcommands = {"generate": g, "erase": e, "evaluate": v, "export": x, "list": li, "attack": a,
                          "benchmark": b}
    return parser


def _read_config_file(path: str) -> dict:
    file = Path(path)
    if not file.is_file():
        raise _error(f"config file {file} not found; give a YAML or JSON file of flags (see --help)")
    kind = "JSON" if file.suffix.lower() == ".json" else "YAML"
    try:
        if kind == "JSON":
            data = json.loads(file.read_text())
        else:
            import yaml

            data = yaml.safe_load(file.read_text())
    except Exception as e:  # noqa: BLE001 - any parse error is the user's file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise _error(f"config file {file} is not valid {kind} ({first}); fix it or use a .json/.yaml file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise _error(f"config file {file} must hold a mapping of flag names to values, not a {type(data).__name__}")
    return data


def _config_value(action: argparse.Action, key: str, value, file: str):
    """A config-file value as the flag would have parsed it (lists for repeatable flags, types and ranges
    applied)."""
    def bad(why: str):
        return _error(f"config file {file}: {key!r} {why}")

    if isinstance(action, argparse._StoreTrueAction):
        if not isinstance(value, bool):
            raise bad(f"must be true or false, got {value!r}")
        return value
    repeatable = isinstance(action, argparse._AppendAction) or action.nargs in ("+", "*")
    if action.dest == "set" and isinstance(value, dict):  # settings as a mapping: {iterations: 200}
        return [f"{k}={json.dumps(v)}" for k, v in value.items()]
    items = (value if isinstance(value, list) else [value]) if repeatable else [value]
    converted = []
    for item in items:
        if isinstance(item, (dict, list)):
            raise bad(f"must be {'a list of values' if repeatable else 'a single value'}, got {item!r}")
        if action.type is not None and item is not None:
            try:
                item = action.type(item) if not isinstance(item, bool) else action.type(str(item))
            except argparse.ArgumentTypeError as e:
                raise bad(str(e)) from None
            except (TypeError, ValueError):
                raise bad(f"must be of type {getattr(action.type, '__name__', 'value')}, got {item!r}") from None
        elif item is not None:
            item = str(item)
        if action.choices is not None and item not in action.choices:
            raise bad(f"must be one of {', '.join(map(str, action.choices))}, got {item!r}")
        converted.append(item)
    return converted if repeatable else converted[0]


def _given_on_command_line(parser: argparse.ArgumentParser, sub: argparse.ArgumentParser, argv) -> set[str]:
    """The flags (dests) typed on the command line: parse once with every default suppressed."""
    saved = [(a, a.default) for a in sub._actions]
    try:
        for a, _ in saved:
            a.default = argparse.SUPPRESS
        given = vars(parser.parse_args(argv))
    finally:
        for a, d in saved:
            a.default = d
    return set(given) - {"command"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line; with ``--config-file``, fill the flags not given from the file."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "config_file", None):
        return args
    sub = parser.subcommands[args.command]
    data = _read_config_file(args.config_file)
    by_name: dict[str, argparse.Action] = {}
    for action in sub._actions:
        if action.dest in ("help", "config_file"):
            continue
        by_name[action.dest] = action
        for option in action.option_strings:
            by_name[option.lstrip("-").replace("-", "_")] = action
    given = _given_on_command_line(parser, sub, argv)
    for key, value in data.items():
        action = by_name.get(str(key).replace("-", "_"))
        if action is None:
            known = sorted({a.option_strings[0].lstrip("-") for a in by_name.values() if a.option_strings})
            raise _error(f"config file {args.config_file}: unknown key {key!r} for `erasure {args.command}`; "
                         f"known: {', '.join(known)}")
        if action.dest not in given:
            setattr(args, action.dest, _config_value(action, str(key), value, args.config_file))
    return args


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (0, 1, 2 or 130) and prints errors as one line."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from erasure.errors import ErasureError

    try:
        args = parse_args(argv)
        if not getattr(args, "func", None):
            build_parser().print_help(sys.stderr)
            print("error: choose a command: generate, erase, evaluate, export, list or attack", file=sys.stderr)
            return 2
        args.check(args)  # everything that needs no model, before torch is imported
        return args.func(args)
    except (ErasureError, UsageError) as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return getattr(e, "exit_code", 2)
    except KeyboardInterrupt:
        print("interrupted; nothing was written", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `erasure list | head`: the reader left; not an error worth a line
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - so the interpreter's final flush stays quiet
        except OSError:
            pass
        return 0
    except OSError as e:  # the machine's fault met outside a write (a full disk while reading, an I/O error)
        where = f": {e.filename}" if getattr(e, "filename", None) else ""
        print(f"error: {e.strerror or _one_line(e)}{where}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - out of memory is the machine's fault; any other error is a bug
        if not _out_of_memory(e):
            raise
        print(f"error: out of memory ({_one_line(e)[:120]}); lower --batch-size or the number of images, use a "
              "smaller model, or free memory; nothing was written", file=sys.stderr)
        return 1


def _out_of_memory(e: BaseException) -> bool:
    # torch.cuda.OutOfMemoryError (and the CPU allocator's RuntimeError) without importing torch here
    return (isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError"
            or (isinstance(e, RuntimeError) and "out of memory" in str(e)[:300].lower()))


if __name__ == "__main__":
    raise SystemExit(main())
