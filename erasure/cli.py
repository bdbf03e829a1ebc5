"""The ``erasure`` command line: thin argparse subcommands over the Python API.

Exit codes: 0 success, 2 user error (one line on stderr, nothing half-written), 1 unexpected failure.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

EXAMPLES = """examples:
  erasure erase --method uce --concept circle --out outputs/erase-circle --evaluate
  erasure erase --method uce-paper --concept circle --concept square --guide heart --templates shapeworld
  erasure evaluate --prompts shapeworld-shape-circle --concept shape=circle --edit outputs/erase-circle/edit.safetensors
  erasure list
  erasure generate --prompt "a red star" --prompt "a striped blue heart" --num-seeds 4 --out outputs/demo
  erasure generate --model path/to/diffusers-folder --prompt "a photo of a cat" --steps 25
  erasure generate --model model.safetensors --config path/to/config-folder --prompt "a cat"
"""


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help="built-in world 'shapeworld' (default), a diffusers folder, a .safetensors file, or a Hub id in the local cache")
    p.add_argument("--config", default=None, help="local config folder for a single-file checkpoint (offline)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--dtype", default=None, help="fp32, fp16, bf16 (default: fp16 on cuda, fp32 on cpu)")
    p.add_argument("--allow-pickle", action="store_true", help="allow loading pickled .ckpt/.bin weights (unsafe)")


def _read_prompts(args) -> list[str]:
    from erasure.errors import ErasureError

    prompts = list(args.prompt or [])
    if args.prompts_file:
        path = Path(args.prompts_file)
        if not path.is_file():
            raise ErasureError(f"prompts file {path} not found; give a text file with one prompt per line")
        prompts += [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not prompts:
        raise ErasureError("no prompts given; use --prompt TEXT (repeatable) or --prompts-file FILE")
    return prompts


def cmd_generate(args) -> int:
    from erasure.errors import ErasureError
    from erasure.generation import SamplerSettings, generate_images, save_generation
    from erasure.models import load_pipeline

    prompts = _read_prompts(args)
    if args.seeds:
        seeds = args.seeds
    else:
        if args.num_seeds < 1:
            raise ErasureError(f"--num-seeds must be >= 1 (got {args.num_seeds})")
        seeds = list(range(args.seed, args.seed + args.num_seeds))
    out = Path(args.out)
    if out.exists() and not args.force:
        raise ErasureError(f"{out} already exists; choose another --out or pass --force to replace it")
    settings = SamplerSettings(steps=args.steps, guidance=args.guidance, negative_prompt=args.negative_prompt)
    settings.validate()
    pipe = load_pipeline(args.model, config=args.config, device=args.device, dtype=args.dtype,
                         allow_pickle=args.allow_pickle)
    all_prompts = [p for p in prompts for _ in seeds]
    all_seeds = [s for _ in prompts for s in seeds]
    images = generate_images(pipe, all_prompts, all_seeds, settings, batch_size=args.batch_size)
    save_generation(images, all_prompts, all_seeds, out, settings=settings, model=args.model or "shapeworld",
                    grid_shape=(len(prompts), len(seeds)), force=args.force)
    print(f"wrote {len(images)} images and {out / 'grid.png'}")
    return 0


def _parse_concept(text: str | None):
    from erasure.errors import ErasureError

    if text is None:
        return None
    attribute, sep, value = text.partition("=")
    if not sep or not attribute.strip() or not value.strip():
        raise ErasureError(f"--concept-label wants ATTRIBUTE=VALUE such as shape=circle, got {text!r}")
    return attribute.strip(), value.strip()


def _world_concept(pipe, concept: str):
    """On the built-in world, (attribute, value) and the prompt set name for an erased concept name."""
    if getattr(pipe, "erasure_source", None) != "shapeworld":
        return None, None
    from erasure.evaluation.world_prompts import ERASABLE

    for attribute, values in ERASABLE.items():
        if concept in values:
            return (attribute, concept), f"shapeworld-{attribute}-{concept}"
    return None, None


def _settings(args):
    from erasure.evaluation.evaluate import WORLD_SETTINGS
    from erasure.generation import SamplerSettings

    base = WORLD_SETTINGS if (args.model in (None, "shapeworld")) else SamplerSettings()
    return SamplerSettings(steps=args.steps or base.steps, guidance=args.guidance or base.guidance)


def cmd_erase(args) -> int:
    import json

    from erasure.errors import ErasureError
    from erasure.files import atomic_folder, refuse_existing
    from erasure.methods import erase
    from erasure.models import load_pipeline

    out = refuse_existing(args.out, args.force)  # before the (possibly long) erasure, not only at the end
    settings: dict = {}
    for key in ("guide", "preserve", "tokens", "lamb", "erase_scale", "preserve_scale"):
        value = getattr(args, key)
        if value is not None:
            settings[key] = value
    if args.no_preserve:
        settings["preserve"] = []
    if args.guide is not None and len(args.guide) == 1:
        settings["guide"] = args.guide[0]
    if args.templates is not None:
        settings["templates"] = args.templates[0] if len(args.templates) == 1 and "{}" not in args.templates[0] \
            else args.templates
    if args.set:
        for item in args.set:
            key, sep, value = item.partition("=")
            if not sep:
                raise ErasureError(f"--set wants KEY=VALUE (JSON value), got {item!r}")
            try:
                settings[key] = json.loads(value)
            except json.JSONDecodeError:
                settings[key] = value
    pipe = load_pipeline(args.model, config=args.config, device=args.device, dtype=args.dtype,
                         allow_pickle=args.allow_pickle)
    edit = erase(pipe, args.method, args.concept, **settings)
    with atomic_folder(out, force=args.force) as tmp:
        edit.save(tmp / "edit.safetensors")
        (tmp / "config.json").write_text(json.dumps(
            {"method": edit.method, "concepts": list(edit.concepts), "config": dict(edit.config),
             "info": dict(edit.info), "model": args.model or "shapeworld"}, indent=1, default=str))
        lines = [f"erased {', '.join(edit.concepts)} with {edit.method}: {len(edit.tensors)} tensors changed "
                 f"({edit.info.get('erase_rows')} erased / {edit.info.get('preserve_rows')} preserved embeddings, "
                 f"solve {edit.info.get('solve_seconds')} s)"]
        if args.evaluate:
            from erasure.evaluation.evaluate import evaluate

            for concept in edit.concepts:
                label, set_name = _world_concept(pipe, concept)
                if label is None:
                    raise ErasureError(f"--evaluate knows the built-in world's concepts only; for {concept!r} run "
                                       "`erasure evaluate --prompts FILE --concept-label ATTR=VALUE` with your classifier")
                kw = dict(concept=label, settings=_settings(args), samples_per_prompt=args.samples_per_prompt)
                base = evaluate(pipe, set_name, **kw)
                edit.apply(pipe)
                pipe.erasure_edit = {"method": edit.method, "concepts": list(edit.concepts), "config": dict(edit.config)}
                report = evaluate(pipe, set_name, **kw)
                edit.restore(pipe)
                pipe.erasure_edit = None
                report.save(tmp / f"eval-{concept}", baseline=base)
                for key in ("target_accuracy", "in_domain_retain_accuracy", "cross_domain_retain_accuracy"):
                    if key in report.metrics:
                        lines.append(f"  {concept}: {key} {base.value(key):.3f} -> {report.value(key):.3f}")
    print("\n".join(lines))
    print(f"wrote {out / 'edit.safetensors'}" + (f" and {out}/eval-*/report.md" if args.evaluate else ""))
    return 0


def cmd_evaluate(args) -> int:
    from erasure.edit import Edit
    from erasure.errors import ErasureError
    from erasure.evaluation.evaluate import evaluate
    from erasure.models import load_pipeline

    out = Path(args.out)
    if out.exists() and not args.force:
        raise ErasureError(f"{out} already exists; choose another --out or pass --force to replace it")
    pipe = load_pipeline(args.model, config=args.config, device=args.device, dtype=args.dtype,
                         allow_pickle=args.allow_pickle)
    label = _parse_concept(args.concept_label)
    baseline = None
    if args.edit:
        edit = Edit.load(args.edit)
        if args.compare:
            baseline = evaluate(pipe, args.prompts, concept=label, settings=_settings(args),
                                samples_per_prompt=args.samples_per_prompt)
        edit.apply(pipe)
        pipe.erasure_edit = {"file": str(args.edit), "method": edit.method, "concepts": list(edit.concepts)}
    report = evaluate(pipe, args.prompts, concept=label, settings=_settings(args),
                      samples_per_prompt=args.samples_per_prompt)
    report.save(out, force=args.force, baseline=baseline)
    print(report.markdown(baseline))
    print(f"wrote {out / 'report.md'}")
    return 0


def cmd_list(args) -> int:
    from erasure.evaluation.metrics import METRICS
    from erasure.evaluation.presets import preset_names
    from erasure.evaluation.prompts import prompt_set_names
    from erasure.methods import METHODS

    print("methods:     " + ", ".join(METHODS.names()))
    print("metrics:     " + ", ".join(METRICS.names()))
    print("prompt sets: " + ", ".join(prompt_set_names()))
    print("presets:     " + ", ".join(preset_names()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="erasure", description="Concept erasure for text-to-image diffusion models.",
                                     epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    g = sub.add_parser("generate", help="generate images for prompts (seeded), with a PNG grid",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_model_args(g)
    g.add_argument("--prompt", action="append", help="a prompt (repeat for several)")
    g.add_argument("--prompts-file", help="text file, one prompt per line")
    g.add_argument("--seeds", type=int, nargs="+", help="explicit seeds (one image per prompt and seed)")
    g.add_argument("--num-seeds", type=int, default=4, help="seeds --seed .. --seed+N-1 (default 4)")
    g.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    g.add_argument("--steps", type=int, default=25, help="sampling steps (default 25)")
    g.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance scale (default 7.5)")
    g.add_argument("--negative-prompt", default=None)
    g.add_argument("--batch-size", type=int, default=16)
    g.add_argument("--out", default="outputs/generate", help="output folder (default outputs/generate)")
    g.add_argument("--force", action="store_true", help="replace --out if it exists")
    g.set_defaults(func=cmd_generate)

    e = sub.add_parser("erase", help="erase concepts: writes a compact edit file (and, with --evaluate, reports)",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_model_args(e)
    e.add_argument("--method", default="uce", help="erasure method (see `erasure list`; default uce)")
    e.add_argument("--concept", action="append", required=True, help="a concept to erase (repeat for several)")
    e.add_argument("--preserve", action="append", default=None,
                   help="a concept to preserve (repeatable; default on the built-in world: the other concepts of the same kind)")
    e.add_argument("--no-preserve", action="store_true", help="preserve nothing")
    e.add_argument("--guide", action="append", default=None,
                   help="anchor the concept is mapped to (default: the empty prompt); once, or once per concept")
    e.add_argument("--templates", nargs="+", default=None,
                   help="prompt templates with {} (e.g. \"a photo of {}\"), or a template set: none, uce-art, uce-object, shapeworld")
    e.add_argument("--tokens", default=None, help="token selection: last-subject (UCE), subject-to-end (UCE paper), aligned (TIME)")
    e.add_argument("--lamb", type=float, default=None, help="ridge weight lambda (UCE 0.5, TIME 0.1)")
    e.add_argument("--erase-scale", type=float, default=None)
    e.add_argument("--preserve-scale", type=float, default=None)
    e.add_argument("--set", action="append", help="other method setting KEY=VALUE (VALUE as JSON), repeatable")
    e.add_argument("--evaluate", action="store_true", help="also evaluate each erased concept (built-in world) before/after")
    e.add_argument("--samples-per-prompt", type=int, default=1)
    e.add_argument("--steps", type=int, default=None, help="sampling steps for --evaluate")
    e.add_argument("--guidance", type=float, default=None, help="guidance for --evaluate")
    e.add_argument("--out", default="outputs/erase", help="output folder (default outputs/erase)")
    e.add_argument("--force", action="store_true", help="replace --out if it exists")
    e.set_defaults(func=cmd_erase)

    v = sub.add_parser("evaluate", help="generate a prompt set and score it (report.json, report.md, grids)",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_model_args(v)
    v.add_argument("--prompts", required=True, help="prompt set name (see `erasure list`) or a CSV file")
    v.add_argument("--concept-label", "--concept", dest="concept_label", default=None,
                   help="erased concept as ATTRIBUTE=VALUE (e.g. shape=circle) for the classifier metrics")
    v.add_argument("--edit", default=None, help="an edit file (erasure erase) to apply first")
    v.add_argument("--compare", action="store_true", help="with --edit: also evaluate the unedited model as the baseline")
    v.add_argument("--samples-per-prompt", type=int, default=1)
    v.add_argument("--steps", type=int, default=None)
    v.add_argument("--guidance", type=float, default=None)
    v.add_argument("--out", default="outputs/evaluate", help="output folder (default outputs/evaluate)")
    v.add_argument("--force", action="store_true")
    v.set_defaults(func=cmd_evaluate)

    li = sub.add_parser("list", help="list methods, metrics, prompt sets and presets")
    li.set_defaults(func=cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from erasure.errors import ErasureError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except ErasureError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
