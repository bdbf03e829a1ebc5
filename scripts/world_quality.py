"""Measure the built-in world's quality bars and write the table into the README.

    python scripts/world_quality.py                 # measure, print, update README.md
    python scripts/world_quality.py --seeds 4 --guidance 5 --json runs/world/quality.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from erasure.generation import SamplerSettings, image_grid  # noqa: E402
from erasure.models import load_pipeline  # noqa: E402
from erasure.world import instruments, quality  # noqa: E402

TABLES = {1: "world-quality", 2: "world2-quality"}  # default marker names, by world version


SAMPLERS = {"ddim": "DDIMScheduler", "dpm": "DPMSolverMultistepScheduler", "euler": "EulerDiscreteScheduler",
            "unipc": "UniPCMultistepScheduler"}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world", default=None, help="world folder (default: the one inside the package)")
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--first-seed", type=int, default=0, help="seeds are first-seed .. first-seed + seeds - 1")
    p.add_argument("--sampler", choices=sorted(SAMPLERS), default=None, help="default: the pipeline's (DDIM)")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--guidance", type=float, default=7.5)
    p.add_argument("--renders", type=int, default=2000)
    p.add_argument("--json", default=None)
    p.add_argument("--grid", default=None, help="save a grid of generated images (PNG)")
    p.add_argument("--readme", default="docs/world.md", help="document holding the table's markers ('' to skip)")
    p.add_argument("--table", default=None, help="marker name to write (default: world-quality, world2-quality "
                   "for world 2; e.g. fresh-world-quality for a retrained world's record in docs/world.md)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    import shlex

    args.command = "python scripts/world_quality.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    world = instruments.world_dir(args.world)
    clf = instruments.load_classifier(world)
    clip = instruments.load_clip(world)
    pipe = load_pipeline(str(world / "pipeline") if args.world else None, device="cpu", dtype="fp32")
    if args.sampler:
        import diffusers

        pipe.scheduler = getattr(diffusers, SAMPLERS[args.sampler]).from_config(pipe.scheduler.config)
    version = json.loads((world / "world.json").read_text()).get("world", 1)
    if args.readme:  # a missing marker is refused before the measurement, not after it
        from erasure.experiments import check_markers

        check_markers(args.readme, [args.table or TABLES[version]])
    if version != 1:
        return world2_main(args, pipe, clf, clip, version, t0)
    res: dict = {"settings": {"seeds": args.seeds, "first_seed": args.first_seed, "steps": args.steps, "guidance": args.guidance,
                              "renders": args.renders, "sampler": type(pipe.scheduler).__name__}}
    res["classifier_renders"] = quality.classifier_accuracy(clf, n=args.renders)
    res["clip_zero_shot_renders"] = quality.clip_zero_shot_accuracy(clip, pipe.tokenizer, n=args.renders // 2)
    settings = SamplerSettings(steps=args.steps, guidance=args.guidance)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    gen, images = quality.generation_recognition(pipe, clf, quality.generation_cases(), seeds, settings)
    res["generated"] = gen
    syn, _ = quality.generation_recognition(pipe, clf, quality.generation_cases(synonyms=True), seeds, settings)
    res["generated_synonyms"] = syn
    res["seconds"] = round(time.time() - t0, 1)
    if args.grid:
        k = [i for i in range(0, len(images), args.seeds * 9)][:32]
        sel = images[[j for i in k for j in range(i, i + args.seeds)]]
        image_grid(sel, len(k), args.seeds).save(args.grid)

    bars = quality.BARS
    rows = ["| measurement | shape | colour | texture | background | bar | met |", "|---|---|---|---|---|---|---|"]

    def row(name, d, bar_keys):
        """A table row and whether it meets its bars; bar_keys None: reported beside the bars, not held to
        them (the synonym rows: the issue's bars name the captions)."""
        cells = [(_pct(d[a]) if a in d else "-") for a in ("shape", "colour", "texture", "background")]
        if bar_keys is None:
            return f"| {name} | " + " | ".join(cells) + " | none (reported) | - |", None
        ok = all(d[a] >= bars[b] for a, b in bar_keys)
        bar = ", ".join(sorted({f">= {_pct(bars[b])}" for _, b in bar_keys}))
        return f"| {name} | " + " | ".join(cells) + f" | {bar} | {'yes' if ok else 'NO'} |", ok

    table_ok = True
    for name, d, keys in [
        ("classifier on fresh renders (n=%d)" % args.renders, res["classifier_renders"],
         [(a, "classifier_renders") for a in ("shape", "colour", "texture", "background")]),
        ("CLIP zero-shot on fresh renders (n=%d)" % (args.renders // 2), res["clip_zero_shot_renders"],
         [(a, "clip_zero_shot_renders") for a in ("shape", "colour", "texture", "background")]),
        ("generated, seen combinations (n=%d)" % gen["seen"]["n"], gen["seen"],
         [("shape", "generated_shape"), ("colour", "generated_colour"), ("texture", "generated_texture")]),
        ("generated, held-out combinations (n=%d)" % gen["held-out"]["n"], gen["held-out"],
         [("shape", "generated_shape"), ("colour", "generated_colour"), ("texture", "generated_texture")]),
        ("generated, seen, synonym captions (n=%d)" % syn["seen"]["n"], syn["seen"], None),
        ("generated, held-out, synonym captions (n=%d)" % syn["held-out"]["n"], syn["held-out"], None),
    ]:
        line, ok = row(name, d, keys)
        rows.append(line)
        if ok is not None:
            table_ok &= ok
    res["bars_met"] = table_ok
    s = res["settings"]
    table = "\n".join(rows) + (
        f"\n\nGenerated: every shape x colour x texture (256 captions `a {{texture}} {{colour}} {{shape}}`, background "
        f"unnamed) x {s['seeds']} seeds, {s['steps']} {s['sampler']} steps, guidance {s['guidance']}, judged by the "
        f"world's classifier. Synonym rows use random synonyms and templates (reported, no bar). "
        f"Command: `{args.command}` ({res['seconds']:.0f} s, {args.threads} CPU thread{'s' if args.threads > 1 else ''})."
    )
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    _write_docs(args, 1, table)
    return 0 if table_ok else 1


def _write_docs(args, version: int, table: str) -> None:
    """The table (its last line names the command) between its markers in ``--readme``, atomically."""
    if args.readme:
        from erasure.experiments import write_docs_table

        write_docs_table(args.readme, args.table or TABLES[version], table)
        print(f"updated {args.readme}")


def world2_main(args, pipe, clf, clip, version: int, t0: float) -> int:
    """World 2's table: every attribute on renders, every generated bar (objects, identities, the halo)."""
    from erasure.world.render import WORLDS

    spec = WORLDS[version]
    bars = quality.BARS_2
    settings = SamplerSettings(steps=args.steps, guidance=args.guidance)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    res: dict = {"settings": {"world": version, "seeds": args.seeds, "first_seed": args.first_seed, "steps": args.steps,
                              "guidance": args.guidance, "renders": args.renders,
                              "sampler": type(pipe.scheduler).__name__}}
    res["classifier_renders"] = quality.classifier_accuracy_2(clf, spec, n=args.renders)
    res["clip_zero_shot_renders"] = quality.clip_zero_shot_accuracy_2(clip, pipe.tokenizer, spec, n=args.renders // 2)
    res["generated"] = quality.world2_generation(pipe, clf, spec, seeds, settings)
    res["seconds"] = round(time.time() - t0, 1)
    g = res["generated"]
    cols = ("shape", "colour", "texture", "background", "mark", "halo", "identity")
    rows = ["| measurement | object | colour | texture | background | mark | halo | identity | bar | met |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    ok_all = True

    def line(name, d, keys, bar):
        nonlocal ok_all
        ok = all(d[k] >= bar for k in keys)
        ok_all &= ok
        cells = [(_pct(d[c]) if c in d else "-") for c in cols]
        rows.append(f"| {name} | " + " | ".join(cells) + f" | >= {_pct(bar)} | {'yes' if ok else 'NO'} |")

    cr, zs = res["classifier_renders"], res["clip_zero_shot_renders"]
    line(f"classifier on fresh renders (n={args.renders})", cr, list(cr), bars["classifier_renders"])
    line(f"CLIP zero-shot on fresh renders (n={args.renders // 2})", zs, list(zs), bars["clip_zero_shot_renders"])
    for group in ("seen", "held-out"):
        d = g[group]
        line(f"generated, {group} combinations (n={d['n']})", d, ["shape", "colour", "texture"], bars["generated_shape"])
    rows += ["", "| measurement | value | n | bar | met |", "|---|---|---|---|---|"]

    def single(name, value, n, bar, higher=True):
        nonlocal ok_all
        if bar is None:
            rows.append(f"| {name} | {_pct(value)} | {n} | none (reported) | - |")
            return
        ok = value >= bar if higher else value <= bar
        ok_all &= ok
        rows.append(f"| {name} | {_pct(value)} | {n} | {'>=' if higher else '<='} {_pct(bar)} | {'yes' if ok else 'NO'} |")

    single("identity from its name (whole look and the mark)", g["identity"]["accuracy"], g["identity"]["n"],
           bars["identity_from_name"])
    worst = min(g["identity"]["per_identity"], key=g["identity"]["per_identity"].get)
    single(f"worst identity ({worst})", g["identity"]["per_identity"][worst], g["identity"]["n"] // len(spec.identities), None)
    single("look-alike (the look named, no name): mark drawn", g["lookalike"]["mark"], g["lookalike"]["n"], None)
    single("look-alike: the look drawn", g["lookalike"]["look"], g["lookalike"]["n"], None)
    single("halo on implied prompts (never named)", g["halo_implied"]["rate"], g["halo_implied"]["n"], bars["halo_implied"])
    single("halo on named prompts", g["halo_named"]["rate"], g["halo_named"]["n"], bars["halo_named"])
    for group in ("seen", "held-out"):
        single(f"halo on prompts neither naming nor implying it ({group})", g[group]["halo_absent"], g[group]["n"],
               bars["halo_absent_max"], higher=False)
    e = g["empty_prompt"]
    single(f"empty prompt: most frequent object ({e['top_shape']})", e["top_share"], e["n"], None)
    single("empty prompt: no object", e["none_share"], e["n"], None)
    res["bars_met"] = ok_all
    s = res["settings"]
    table = "\n".join(rows) + (
        f"\n\nGenerated: every object x colour x texture ({len(spec.shapes) * 32} captions `a {{texture}} {{colour}} {{object}}`), "
        f"identity prompts (4 forms x {len(spec.identities)} names), 32 implied and 32 named halo prompts, each x "
        f"{s['seeds']} seeds; {s['steps']} {s['sampler']} steps, guidance {s['guidance']}, judged by the world's "
        f"classifier (identity = its whole look and the mark). Command: `{args.command}` ({res['seconds']:.0f} s, "
        f"{args.threads} CPU thread{'s' if args.threads > 1 else ''})."
    )
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    _write_docs(args, 2, table)
    return 0 if ok_all else 1


if __name__ == "__main__":
    from erasure.experiments import script_main

    script_main(main)
