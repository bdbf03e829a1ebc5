"""``erasure attack``: run an attack against an erased model and write its report (thin over
:func:`erasure.attacks.attack`).

    erasure attack --attack unlearndiffatk --concept circle --edit outputs/erase-circle/edit.safetensors --out outputs/attack-circle
    erasure attack --attack ring-a-bell --concept circle --edit edit.safetensors --set etas=1,3 --out outputs/rab
    erasure attack --attack transfer --concept nudity --model sd14 --edit edit.safetensors \\
        --prompts unlearndiffatk-nudity --datasets-dir ../shared/datasets --out outputs/transfer

Like every subcommand: checks first (attack, settings, files, concept, output) without importing torch, one-line
errors, exit 2 for user mistakes; the output is written atomically and never replaced without ``--force``. An
interrupted run resumes from ``OUT.progress`` when rerun with the same flags (``--no-resume`` starts over).
``add_parser(subparsers)`` adds the subcommand to a parser; :func:`main` runs it on its own.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Any

from erasure.errors import ErasureError

EXAMPLE = """examples:
  erasure attack --attack unlearndiffatk --concept circle --edit outputs/erase-circle/edit.safetensors --out outputs/attack-circle
  erasure attack --attack ring-a-bell --concept circle --edit edit.safetensors --set etas=1,3 --limit 20 --out outputs/rab
  erasure attack --attack completion --concept circle --edit edit.safetensors --out outputs/completion
  erasure attack --attack transfer --concept nudity --model path/to/sd14 --edit edit.safetensors --prompts unlearndiffatk-nudity --datasets-dir DIR --out outputs/transfer
"""
BUILTIN_WORLD = "shapeworld"
_DEVICE = re.compile(r"^(auto|cpu|mps|(cuda|xpu)(:\d+)?)$")
DTYPE_NAMES = ("auto", "fp32", "float32", "float", "32", "fp16", "float16", "half", "16", "bf16", "bfloat16")


def _positive_int(text: Any) -> int:
    value = int(str(text).strip())
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1 (got {text})")
    return value


def _seed(text: Any) -> int:
    value = int(str(text).strip())
    if not 0 <= value < 2**64:
        raise argparse.ArgumentTypeError(f"must be >= 0 and < 2^64 (got {text})")
    return value


def _guidance(text: Any) -> float:
    value = float(text)
    if not math.isfinite(value) or not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be a finite number in [0, 100] (got {text})")
    return value


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``attack`` subcommand to ``subparsers`` (``parser.add_subparsers()``); returns it."""
    p = subparsers.add_parser("attack", help="attack an erased model: does the concept come back? (pre-ASR, ASR, CIs)",
                              epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", default=None,
                   help="YAML or JSON file of flags for this command (keys are flag names); command-line flags override it")
    p.add_argument("--model", default=None,
                   help="built-in world 'shapeworld' (default), a diffusers folder, a .safetensors file, or a Hub id in the local cache")
    p.add_argument("--config", default=None, help="local config folder for a single-file checkpoint (offline)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--dtype", default=None, help="fp32, fp16, bf16 (default: fp16 on cuda, fp32 on cpu)")
    p.add_argument("--allow-pickle", action="store_true", help="allow loading pickled .ckpt/.bin weights (unsafe)")
    p.add_argument("--attack", default="unlearndiffatk",
                   help="unlearndiffatk (default), ring-a-bell, completion, noise, cce, transfer")
    p.add_argument("--concept", default=None, help="the erased concept the judge looks for (circle, shape=circle); required")
    p.add_argument("--judge", default=None,
                   help="who decides whether the concept came back: a judge NAME[:ARG] (see `erasure list --judges`, "
                        "e.g. nudenet, image-classifier:resnet50); default on the built-in world: its classifier")
    p.add_argument("--judge-set", action="append", default=None, help="a judge setting KEY=VALUE, repeatable")
    p.add_argument("--edit", default=None,
                   help="the edit file or adapter `erasure erase` wrote; without it the model is attacked as it is")
    p.add_argument("--prompts", default=None,
                   help="prompt set name or CSV (its seeds are used), or a transfer set; default on the built-in "
                        "world: the concept's prompt set, rows naming it")
    p.add_argument("--limit", type=_positive_int, default=None, help="only the first N prompts")
    p.add_argument("--datasets-dir", default=None, help="folder holding your copies of the transfer-set files")
    p.add_argument("--set", action="append", default=None,
                   help="an attack setting KEY=VALUE (VALUE as JSON or text), repeatable; e.g. --set tokens=5")
    p.add_argument("--steps", type=_positive_int, default=None, help="sampling steps (default: the model's, 25)")
    p.add_argument("--guidance", type=_guidance, default=None, help="guidance scale (default 5 on the world, else 7.5)")
    p.add_argument("--seed", type=_seed, default=0, help="the attack's random seed (default 0)")
    p.add_argument("--n-resamples", type=int, default=1000, help="bootstrap resamples of the CIs (default 1000)")
    p.add_argument("--out", default="outputs/attack", help="output folder (default outputs/attack)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists (an earlier erasure output)")
    p.add_argument("--no-resume", action="store_true", help="discard an interrupted run's progress and start over")
    p.set_defaults(func=run, check=check)
    return p


def _parse_set(items: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, text = str(item).partition("=")
        if not sep or not key.strip():
            raise ErasureError(f"--set wants KEY=VALUE, got {item!r}")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        if isinstance(value, (int, float)) and not isinstance(value, bool) and "," in text:
            value = text
        out[key.strip()] = value
    return out


def check(args) -> None:
    """Everything that needs no model (no torch): a mistake is one line before anything loads."""
    from erasure.attacks.catalog import ATTACKS
    from erasure.files import check_output

    spec = ATTACKS.get(args.attack)
    args.attack_settings = _parse_set(args.set)
    for key, value in list(args.attack_settings.items()):  # numbers-as-text settings (etas=1,3) stay text
        fields = spec.config.__dataclass_fields__
        if key in fields and isinstance(value, (int, float)) and not isinstance(value, bool):
            if str in fields[key].metadata.get("types", ()) and int not in fields[key].metadata.get("types", ()):
                args.attack_settings[key] = str(value)
    spec.make_config(args.attack_settings)
    if not args.concept or not str(args.concept).strip():
        raise ErasureError("no concept given; name the erased concept with --concept (e.g. --concept circle)")
    if args.edit is not None and not Path(args.edit).exists():
        raise ErasureError(f"--edit {args.edit} not found; give the edit.safetensors (or adapter) that `erasure erase` wrote")
    world = args.model in (None, BUILTIN_WORLD)
    if not world and not Path(args.model).expanduser().exists():
        raise ErasureError(f"--model {args.model!r} not found: no such file or folder")
    args.judge_settings = {}
    if args.judge is not None:
        from erasure.evaluation.judges import parse_judge_spec

        spec_judge, from_name = parse_judge_spec(args.judge)
        args.judge_settings = spec_judge.validate_settings({**from_name, **_parse_set(args.judge_set)})
    elif args.judge_set:
        raise ErasureError("--judge-set goes with a judge; add --judge NAME (see `erasure list --judges`)")
    elif not world:
        raise ErasureError("on your own model an attack needs a judge: add --judge NAME (see `erasure list --judges`, "
                           "e.g. --judge nudenet); the built-in world brings its own")
    if world and args.judge is None:
        from erasure.attacks.judging import WorldClassifierJudge

        WorldClassifierJudge.attribute_of(str(args.concept))
    if args.device is not None and not _DEVICE.match(str(args.device).strip().lower()):
        raise ErasureError(f"unknown device {args.device!r}; use cpu, cuda or cuda:N")
    if args.dtype is not None and str(args.dtype).lower() not in DTYPE_NAMES:
        raise ErasureError(f"unknown dtype {args.dtype!r}; use fp32, fp16 or bf16")
    if args.n_resamples < 0:
        raise ErasureError(f"--n-resamples must be >= 0 (got {args.n_resamples})")
    from erasure.attacks.prompting import resolve_prompts

    class _World:
        erasure_source = BUILTIN_WORLD if world else None

    args.resolved = resolve_prompts(args.prompts, str(args.concept), transfer=spec.kind == "transfer",
                                    datasets_dir=args.datasets_dir, limit=args.limit, pipe=_World())
    inputs = [i for i in (args.edit, args.prompts if args.prompts and Path(args.prompts).is_file() else None,
                          args.config_file) if i]
    args.out_path = check_output(args.out, force=args.force, inputs=inputs)


def run(args) -> int:
    """The work: load the model and the edit, attack, write the report."""
    from erasure.attacks.run import run_attack
    from erasure.models import load_pipeline, resolve_device_dtype

    device, dtype = resolve_device_dtype(args.device, args.dtype)
    result = None
    if args.edit is not None:
        from erasure.results import load_result

        result = load_result(args.edit)
    pipe = load_pipeline(args.model, config=args.config, device=device, dtype=dtype, allow_pickle=args.allow_pickle)
    from erasure.evaluation.evaluate import WORLD_SETTINGS
    from erasure.generation import SamplerSettings

    base = WORLD_SETTINGS if getattr(pipe, "erasure_source", None) == BUILTIN_WORLD else SamplerSettings()
    settings = SamplerSettings(steps=args.steps or base.steps, guidance=base.guidance if args.guidance is None else args.guidance)
    prompts, seeds, source = args.resolved
    judge = None
    if args.judge is not None:
        from erasure.evaluation.judges import load_judge

        judge = load_judge(args.judge.partition(":")[0], **args.judge_settings)
    report = run_attack(pipe, args.attack, str(args.concept), prompts, seeds, result=result, judge=judge,
                        original_pipe=pipe if result is None else None, settings=settings,
                        attack_settings=args.attack_settings, seed=args.seed, out=args.out_path, force=args.force,
                        resume=not args.no_resume, n_resamples=args.n_resamples, prompt_source=source,
                        progress=sys.stderr.isatty())
    for name, m in report.metrics.items():
        print(f"{name} = {m.value:.3f} [{m.ci_low:.3f}, {m.ci_high:.3f}] (n={m.n})")
    b = report.info["budget"]
    print(f"per prompt: {b['unet_forward_per_prompt']:.0f} UNet forward rows, {b['unet_forward_backward_per_prompt']:.0f} "
          f"forward+backward rows, {b['seconds_per_prompt']:.2f} s")
    print(f"wrote {Path(args.out_path) / 'report.md'} and grid.png (prompt | original | erased | erased + attack)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``erasure attack`` on its own (``python -m erasure.attacks.cli attack ...``): exit codes as ``erasure``."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(prog="erasure")
    add_parser(parser.add_subparsers(dest="command"))
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as e:
            return int(e.code or 0)
        if getattr(args, "command", None) != "attack":
            print("error: choose a command: attack", file=sys.stderr)
            return 2
        args.check(args)
        return args.func(args)
    except ErasureError as e:
        text = str(e).strip()
        print(f"error: {text.splitlines()[0] if text else type(e).__name__}", file=sys.stderr)
        return getattr(e, "exit_code", 2)
    except KeyboardInterrupt:
        print("interrupted; finished prompts are kept in OUT.progress (rerun the same command to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
