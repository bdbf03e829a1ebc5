"""The ``erasure`` command line: thin argparse subcommands over the Python API.

Exit codes: 0 success, 2 user error (one line on stderr, nothing half-written), 1 unexpected failure,
130 interrupted.

Every subcommand takes ``--config-file FILE`` (YAML or JSON): its keys are the subcommand's flags
(``samples-per-prompt`` or ``samples_per_prompt``); flags on the command line override the file. The
``erase`` command writes the flags it ran with to ``<out>/run.json``, which can be passed back with
``--config-file`` to run it again.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

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
  erasure evaluate --prompts shapeworld-shape-circle --concept shape=circle --edit outputs/erase-circle/edit.safetensors --compare
  erasure evaluate --model path/to/sd15 --prompts prompts.csv --out outputs/eval-sd15
""",
    "export": """examples:
  erasure export --edit outputs/erase-circle/edit.safetensors --out outputs/export-circle
  erasure export --edit outputs/erase-circle/edit.safetensors --format lora --format kohya --out outputs/lora-circle
  erasure export --model sd15.safetensors --config sd15-configs --edit edit.safetensors --base-single-file sd15.safetensors --format single-file
""",
    "list": """examples:
  erasure list
""",
}
EXAMPLES["main"] = "examples:\n" + "".join(
    line + "\n" for text in EXAMPLES.values() for line in text.splitlines()[1:2])



class UsageError(Exception):
    """A mistake in the command line itself (unknown flag, missing value): reported in one line."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake becomes one line naming the help to read (not usage + error)."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{message}; see `{self.prog} --help`")


def _add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config-file", default=None,
                   help="YAML or JSON file of flags for this command (keys are flag names); command-line flags override it")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    _add_common_args(p)
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


def _run_record(args) -> dict:
    """The flags a command ran with, as a config file (``--config-file run.json`` runs it again)."""
    skip = {"func", "command", "config_file", "force"}
    return {k.replace("_", "-"): v for k, v in vars(args).items() if k not in skip and v is not None and v is not False}


def _trains(method: str) -> bool:
    """Whether a method trains for many iterations (and so checkpoints and resumes): ESD and its adapters."""
    from erasure.methods import METHODS, adapters, esd

    fn = METHODS.get(method)
    return getattr(fn, "func", None) in (esd.esd_edit, adapters.lora_esd, adapters.spm)


def cmd_erase(args) -> int:
    import json
    import shutil

    from erasure.errors import ErasureError
    from erasure.files import atomic_folder, refuse_existing
    from erasure.methods import METHODS, erase
    from erasure.models import load_pipeline

    if not args.concept:
        raise ErasureError("no concept given; name one with --concept TEXT (repeat for several)")
    out = refuse_existing(args.out, args.force)  # before the (possibly long) erasure, not only at the end
    METHODS.get(args.method)  # an unknown method fails before the model loads
    settings: dict = {}
    for key in ("preserve", "tokens", "lamb", "erase_scale", "preserve_scale"):
        value = getattr(args, key)
        if value is not None:
            settings[key] = value
    if args.no_preserve:
        settings["preserve"] = []
    anchors = args.anchor  # --anchor and --guide are one option
    if anchors is not None:  # the closed-form editors call it the guide, ESD and the adapters the anchor
        from erasure.methods import closed_form

        fn = METHODS.get(args.method)
        key = "guide" if getattr(fn, "func", None) is closed_form.closed_form_edit else "anchor"
        settings[key] = anchors[0] if len(anchors) == 1 else anchors
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
    run_kw: dict = {}
    ckpt = out.with_name(out.name + ".checkpoints")  # a trained method's interval checkpoints, until it finishes
    if _trains(args.method):
        if ckpt.exists() and not args.resume:
            if not args.force:
                raise ErasureError(f"{ckpt} holds an interrupted run's checkpoints; add --resume to continue it, "
                                   "or --force to start over")
            shutil.rmtree(ckpt)
        settings.setdefault("checkpoint_every", args.checkpoint_every)
        run_kw = {"checkpoint_dir": ckpt, "resume": args.resume}
    elif args.resume:
        raise ErasureError(f"--resume applies to trained methods (esd*, lora-esd, spm); {args.method} runs in one go, "
                           "run it again without --resume")
    pipe = load_pipeline(args.model, config=args.config, device=args.device, dtype=args.dtype,
                         allow_pickle=args.allow_pickle)
    edit = erase(pipe, args.method, args.concept, **settings, **run_kw)
    is_adapter = hasattr(edit, "peft_state_dict")
    saved_as = "adapter" if is_adapter else "edit.safetensors"  # a LoRA folder that load_lora_weights reads
    with atomic_folder(out, force=args.force) as tmp:
        edit.save(tmp / saved_as)
        (tmp / "run.json").write_text(json.dumps(_run_record(args), indent=1))
        (tmp / "config.json").write_text(json.dumps(
            {"method": edit.method, "concepts": list(edit.concepts), "config": dict(edit.config),
             "info": dict(edit.info), "model": args.model or "shapeworld"}, indent=1, default=str))
        if is_adapter:
            lines = [f"erased {', '.join(edit.concepts)} with {edit.method}: adapter on {len(edit.modules)} modules, "
                     f"rank {edit.lora_config.get('r')}, {edit.size_bytes / 1024:.0f} KB"]
        elif "erase_rows" in edit.info:
            lines = [f"erased {', '.join(edit.concepts)} with {edit.method}: {len(edit.tensors)} tensors changed "
                     f"({edit.info.get('erase_rows')} erased / {edit.info.get('preserve_rows')} preserved embeddings, "
                     f"solve {edit.info.get('solve_seconds')} s)"]
        else:
            lines = [f"erased {', '.join(edit.concepts)} with {edit.method}: {len(edit.tensors)} tensors changed"]
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
                from erasure.evaluation.evaluate import compare, world_features

                compare(report, base, features=world_features,
                        feature_extractor="shapeworld classifier features (penultimate layer)")
                report.save(tmp / f"eval-{concept}", baseline=base)
                for key in ("target_accuracy", "in_domain_retain_accuracy", "cross_domain_retain_accuracy"):
                    if key in report.metrics:
                        lines.append(f"  {concept}: {key} {base.value(key):.3f} -> {report.value(key):.3f}")
    shutil.rmtree(ckpt, ignore_errors=True)  # the result is in place: the checkpoints have served
    print("\n".join(lines))
    print(f"wrote {out / saved_as}" + (f" and {out}/eval-*/report.md (grids: compare-<group>.png)" if args.evaluate else ""))
    print(f"export it: erasure export --edit {out / saved_as} --out {out}-export")
    return 0


def _comparison_features(args, pipe):
    """(features function, its name) for FID/KID: the world's classifier, or a CLIP image tower given by flags."""
    if getattr(args, "features", None):
        from erasure.evaluation.clip_backends import load_clip_backend

        backend = load_clip_backend(args.features, getattr(args, "features_weights", None))
        return backend.embed_images, f"{args.features} image embeddings"
    if getattr(pipe, "erasure_source", None) == "shapeworld":
        from erasure.evaluation.evaluate import world_features

        return world_features, "shapeworld classifier features (penultimate layer)"
    return None, None


def cmd_evaluate(args) -> int:
    from erasure.errors import ErasureError
    from erasure.evaluation.evaluate import compare, evaluate
    from erasure.models import load_pipeline

    if not args.prompts:
        raise ErasureError("no prompt set given; use --prompts NAME (see `erasure list`) or --prompts FILE.csv")
    out = Path(args.out)
    if out.exists() and not args.force:
        raise ErasureError(f"{out} already exists; choose another --out or pass --force to replace it")
    label = _parse_concept(args.concept_label)
    if args.compare == UNEDITED and not args.edit:
        raise ErasureError("--compare without a model compares with the unedited model, so it needs --edit; "
                           "or name the baseline model: --compare BASE")
    edit = _load_erasure_result(args.edit) if args.edit else None
    pipe = load_pipeline(args.model, config=args.config, device=args.device, dtype=args.dtype,
                         allow_pickle=args.allow_pickle)
    kw = dict(concept=label, settings=_settings(args), samples_per_prompt=args.samples_per_prompt)
    baseline = None
    if args.compare == UNEDITED:
        baseline = evaluate(pipe, args.prompts, **kw)
    elif args.compare:
        base_pipe = load_pipeline(args.compare, config=args.compare_config, device=args.device, dtype=args.dtype,
                                  allow_pickle=args.allow_pickle)
        baseline = evaluate(base_pipe, args.prompts, **kw)
        del base_pipe
    if edit is not None:
        edit.apply(pipe)
        pipe.erasure_edit = {"file": str(args.edit), "method": edit.method, "concepts": list(edit.concepts)}
    report = evaluate(pipe, args.prompts, **kw)
    if baseline is not None:
        features, name = _comparison_features(args, pipe)
        compare(report, baseline, features=features, feature_extractor=name)
    report.save(out, force=args.force, baseline=baseline)
    print(report.markdown(baseline))
    print(f"wrote {out / 'report.md'}" + (f" and {out}/compare-*.png (before | after)" if baseline is not None else ""))
    return 0


UNEDITED = "unedited"


EXPORT_FORMATS = ("diffusers", "single-file", "lora", "kohya", "edit")


def _load_erasure_result(path: str):
    """An edit file (``edit.safetensors``) or an adapter folder/file that `erasure erase` wrote."""
    from erasure.errors import ErasureError

    where = Path(path)
    if not where.exists():
        raise ErasureError(f"{where} not found; give the edit.safetensors (or adapter) that `erasure erase` wrote")
    if where.is_dir() or where.name.endswith(".lora.safetensors"):
        from erasure.adapters import Adapter

        return Adapter.load(where)
    from erasure.edit import Edit

    return Edit.load(where)


def _export_formats(values: list[str] | None, has_edit: bool) -> tuple[str, ...]:
    from erasure.errors import ErasureError

    if not values:
        return EXPORT_FORMATS if has_edit else ("diffusers", "single-file")
    formats = [f.strip() for v in values for f in v.split(",") if f.strip()]
    for f in formats:
        if f not in EXPORT_FORMATS:
            import difflib

            close = difflib.get_close_matches(f, EXPORT_FORMATS, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ErasureError(f"unknown export format {f!r}; {hint}choose from {', '.join(EXPORT_FORMATS)}")
    return tuple(dict.fromkeys(formats))


def cmd_export(args) -> int:
    import json

    from erasure.errors import ErasureError
    from erasure.files import refuse_existing
    from erasure.models import load_pipeline

    formats = _export_formats(args.format, bool(args.edit))
    out = refuse_existing(args.out, args.force)
    if args.base_single_file and not Path(args.base_single_file).is_file():
        raise ErasureError(f"base single file {args.base_single_file} not found; give the .safetensors the edit was made on")
    if args.lora_rank is not None and args.lora_rank < 1:
        raise ErasureError(f"--lora-rank must be >= 1 (got {args.lora_rank})")
    report = None
    if args.report:
        file = Path(args.report)
        if not file.is_file():
            raise ErasureError(f"report {file} not found; give a report.json that `erasure evaluate` wrote")
        try:
            report = json.loads(file.read_text())
        except json.JSONDecodeError as e:
            raise ErasureError(f"report {file} is not valid JSON ({e.msg}); give a report.json from `erasure evaluate`") from None
    edit = _load_erasure_result(args.edit) if args.edit else None
    pipe = load_pipeline(args.model, config=args.config, device=args.device, dtype=args.dtype,
                         allow_pickle=args.allow_pickle)
    from erasure.export import export

    written = export(pipe, out, edit=edit, formats=formats, base_single_file=args.base_single_file,
                     lora_rank=args.lora_rank, report=report, force=args.force)
    for fmt, path in written.items():
        print(f"{fmt:12s} {path}")
    print(f"wrote {out} (model card: {out / 'README.md'})")
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
    print("formats:     " + ", ".join(EXPORT_FORMATS) + "  (erasure export --format)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="erasure", description="Concept erasure for text-to-image diffusion models.",
                     epilog=EXAMPLES["main"], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    g = sub.add_parser("generate", help="generate images for prompts (seeded), with a PNG grid",
                       epilog=EXAMPLES["generate"], formatter_class=argparse.RawDescriptionHelpFormatter)
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
                       epilog=EXAMPLES["erase"], formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_model_args(e)
    e.add_argument("--method", default="uce", help="erasure method (see `erasure list`; default uce)")
    e.add_argument("--concept", action="append", default=None, help="a concept to erase (repeat for several); required")
    e.add_argument("--preserve", action="append", default=None,
                   help="a concept to preserve (repeatable; default on the built-in world: the other concepts of the same kind)")
    e.add_argument("--no-preserve", action="store_true", help="preserve nothing")
    e.add_argument("--anchor", "--guide", dest="anchor", action="append", default=None,
                   help="the concept the erased one is mapped to (ESD's anchor, UCE's guide; default: the empty "
                        "prompt); once, or once per concept where the method takes several")
    e.add_argument("--templates", nargs="+", default=None,
                   help="prompt templates with {} (e.g. \"a photo of {}\"), or a template set: none, uce-art, uce-object, shapeworld, shapeworld-captions")
    e.add_argument("--tokens", default=None, help="token selection: last-subject (UCE), subject-to-end (UCE paper), subject-to-eot, aligned (TIME), residual")
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
    e.add_argument("--checkpoint-every", type=int, default=50,
                   help="trained methods (esd*, lora-esd, spm): save the training state every N iterations to "
                        "OUT.checkpoints (removed when the run finishes; default 50)")
    e.add_argument("--resume", action="store_true",
                   help="continue an interrupted trained run from OUT.checkpoints (same command otherwise)")
    e.set_defaults(func=cmd_erase)

    v = sub.add_parser("evaluate", help="generate a prompt set and score it (report.json, report.md, grids)",
                       epilog=EXAMPLES["evaluate"], formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_model_args(v)
    v.add_argument("--prompts", default=None, help="prompt set name (see `erasure list`) or a CSV file; required")
    v.add_argument("--concept-label", "--concept", dest="concept_label", default=None,
                   help="erased concept as ATTRIBUTE=VALUE (e.g. shape=circle) for the classifier metrics")
    v.add_argument("--edit", default=None, help="an edit file (erasure erase) to apply first")
    v.add_argument("--compare", nargs="?", const=UNEDITED, default=None, metavar="BASE",
                   help="also evaluate a baseline and compare (side-by-side grids, FID/KID, per-prompt change): "
                        "alone, the unedited model (with --edit); with BASE, another model (folder, file, Hub id)")
    v.add_argument("--compare-config", default=None, help="config folder for a single-file --compare BASE")
    v.add_argument("--features", default=None,
                   help="FID/KID features: a CLIP backend (open_clip:NAME with --features-weights, transformers:FOLDER); "
                        "default on the built-in world: its classifier")
    v.add_argument("--features-weights", default=None, help="weights file for --features open_clip:NAME")
    v.add_argument("--samples-per-prompt", type=int, default=1)
    v.add_argument("--steps", type=int, default=None)
    v.add_argument("--guidance", type=float, default=None)
    v.add_argument("--out", default="outputs/evaluate", help="output folder (default outputs/evaluate)")
    v.add_argument("--force", action="store_true")
    v.set_defaults(func=cmd_evaluate)

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
    x.add_argument("--lora-rank", type=int, default=None,
                   help="LoRA rank for a dense edit (default: the exact rank the edit needs)")
    x.add_argument("--report", default=None, help="report.json from `erasure evaluate` for the model card")
    x.add_argument("--out", default="outputs/export", help="output folder (default outputs/export)")
    x.add_argument("--force", action="store_true", help="replace --out if it exists")
    x.set_defaults(func=cmd_export)

    li = sub.add_parser("list", help="list methods, metrics, prompt sets and presets", epilog=EXAMPLES["list"],
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common_args(li)
    li.set_defaults(func=cmd_list)
    parser.subcommands = {"generate": g, "erase": e, "evaluate": v, "export": x, "list": li}
    return parser


def _read_config_file(path: str) -> dict:
    import json

    from erasure.errors import ErasureError

    file = Path(path)
    if not file.is_file():
        raise ErasureError(f"config file {file} not found; give a YAML or JSON file of flags (see --help)")
    kind = "JSON" if file.suffix.lower() == ".json" else "YAML"
    try:
        if kind == "JSON":
            data = json.loads(file.read_text())
        else:
            import yaml

            data = yaml.safe_load(file.read_text())
    except Exception as e:  # noqa: BLE001 - any parse error is the user's file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ErasureError(f"config file {file} is not valid {kind} ({first}); fix it or use a .json/.yaml file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ErasureError(f"config file {file} must hold a mapping of flag names to values, "
                           f"not a {type(data).__name__}")
    return data


def _config_value(action: argparse.Action, key: str, value, file: str):
    """A config-file value as the flag would have parsed it (lists for repeatable flags, types applied)."""
    import json

    from erasure.errors import ErasureError

    def bad(why: str):
        return ErasureError(f"config file {file}: {key!r} {why}")

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
            except (TypeError, ValueError):
                raise bad(f"must be of type {action.type.__name__}, got {item!r}") from None
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
    from erasure.errors import ErasureError

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
            raise ErasureError(f"config file {args.config_file}: unknown key {key!r} for `erasure {args.command}`; "
                               f"known: {', '.join(known)}")
        if action.dest not in given:
            setattr(args, action.dest, _config_value(action, str(key), value, args.config_file))
    return args


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from erasure.errors import ErasureError

    try:
        args = parse_args(argv)
        if not getattr(args, "func", None):
            build_parser().print_help(sys.stderr)
            print("error: choose a command: generate, erase, evaluate, export or list", file=sys.stderr)
            return 2
        return args.func(args)
    except (ErasureError, UsageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
