"""ESD's retain term on the built-in world: erasure against the worst kept concept, for retain weights.

ESD-family methods at their defaults lose up to 40 points on some kept concepts on this world (README methods
table: esd-x on striped, lora-esd on circle and striped). The retain term (``retain_prompts``,
``retain_weight``; AdvUnlearn's and SalUn's retain loss) holds the student to the frozen model on x_t drawn from
the frozen model's trajectories of prompts of what must stay. Here those are ``--retain N`` training-grammar
captions of scenes without the concept (``erasure.world.captions.retain_captions``); retention is measured by
the benchmark's measurement (the concept's prompt set and its held-out phrasing set, whose wording the retain
prompts never use; 2 images per prompt; the unedited model on the same seeds), so the rows are benchmark rows.

    python scripts/retain_tradeoff.py --threads 1 --out runs/retain --docs     # ~35 min on one CPU thread

With ``--docs`` the table is written between the ``retain-tradeoff`` markers of docs/methods.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from erasure.benchmark import compact_cell as _cell, compact_drop  # noqa: E402
from erasure.errors import ErasureError  # noqa: E402
from erasure.experiments import check_markers, markdown_table, script_main, write_docs_table  # noqa: E402

TABLE = "retain-tradeoff"
CASES = ("esd-x:texture=striped:plain", "lora-esd:shape=circle:square", "lora-esd:texture=striped:plain")


PHRASING_RETAIN_SEED = 1000
SOURCES = {"training": "training-grammar captions of scenes without the concept, seed 0",
           "mixed": "half training-grammar captions of scenes without the concept, half neighbour/other prompts in "
                    f"the phrasing set's sentence forms drawn with seed {PHRASING_RETAIN_SEED}, none of them in the "
                    "measured phrasing set (seed 0)",
           "preserve": "the erased concept's neighbours (the other values of its attribute, the set UCE preserves) in "
                       "the world's templates of each, round-robin over neighbours and templates",
           "broad": "the erased concept's neighbours, then every other shape, colour and texture, in the world's "
                    "templates of each, round-robin over values and templates"}


def retain_prompts(attribute: str, value: str, n: int, source: str, pipe=None) -> tuple[str, ...]:
    """The retain prompts of one concept: ``n`` training-grammar captions without it, or (``mixed``) n // 2 of
    them and n - n // 2 neighbour/other prompts of its phrasing set drawn with seed PHRASING_RETAIN_SEED (the
    measured phrasing set is seed 0: the same sentence forms, other prompts; none of them is in it)."""
    from erasure.evaluation.phrasing import phrasing_prompt_set
    from erasure.world.captions import retain_captions

    if source == "training":
        return retain_captions(attribute, value, n)
    if source in ("preserve", "broad"):  # the ESD family's default (erasure.methods.esd.default_retain_prompts)
        from erasure import load_pipeline
        from erasure.methods.esd import default_retain_prompts

        return default_retain_prompts(pipe if pipe is not None else load_pipeline(None), [value], n,
                                      "all" if source == "broad" else "attribute")
    measured = {p.prompt for p in phrasing_prompt_set(attribute, value, seed=0)}
    pool = [p.prompt for p in phrasing_prompt_set(attribute, value, seed=PHRASING_RETAIN_SEED)
            if p.group in ("neighbour", "other") and p.prompt not in measured]
    k = n - n // 2
    if len(pool) < k:
        raise ErasureError(f"only {len(pool)} phrasing prompts for {attribute}={value}, need {k}")
    step = len(pool) / k  # spread over the groups and forms (the pool is in group, form order)
    return retain_captions(attribute, value, n // 2) + tuple(pool[int(i * step)] for i in range(k))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", default=list(CASES), metavar="METHOD:ATTRIBUTE=VALUE:ANCHOR")
    p.add_argument("--weights", nargs="+", type=float, default=[0.0, 1.0, 4.0],
                   help="retain weights (0 = no retain term: the paper's ESD; the family's default on the world is 16 with "
                        "--retain-source preserve)")
    p.add_argument("--retain", type=int, default=32, help="retain prompts per concept")
    p.add_argument("--retain-source", choices=tuple(SOURCES), default="training",
                   help="training: training-grammar captions (retain_captions); mixed: half of them, half the "
                        "neighbour/other prompts of the concept's phrasing set drawn with another seed "
                        f"(seed {PHRASING_RETAIN_SEED}): the held-out measurement's sentence forms, not its prompts")
    p.add_argument("--control", default="empty", help="a trained word no evaluation prompt uses ('an empty gray background'): each method also erases it "
                   "(same settings, no retain term) and is measured on the concept's prompts, so its worst kept "
                   "drop is what an ESD run of that size moves with nothing to erase ('' = no control rows)")
    p.add_argument("--control-weight", type=float, default=0.0,
                   help="give the control rows the concept's retain prompts at this weight (0 = no retain term)")
    p.add_argument("--samples-per-prompt", type=int, default=2)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a method setting for every row (VALUE as JSON), e.g. --set lr=1e-4; repeatable")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/retain")
    p.add_argument("--docs", nargs="?", const="docs/methods.md", default=None, metavar="FILE")
    p.add_argument("--table", default=TABLE, help=f"the docs markers to write between (default {TABLE})")
    args = p.parse_args(argv)
    command = "python scripts/retain_tradeoff.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.docs:
        check_markers(args.docs, [args.table])
    cases = []
    for item in args.cases:
        method, concept, anchor = (item.split(":") + ["", ""])[:3]
        if "=" not in concept or not anchor:
            raise ErasureError(f"--cases takes METHOD:ATTRIBUTE=VALUE:ANCHOR, got {item!r}")
        cases.append((method, concept, anchor))
    import json

    common = {}
    for item in args.set:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ErasureError(f"--set wants KEY=VALUE, got {item!r}")
        try:
            common[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            common[key.strip()] = text
    import torch

    from erasure import load_pipeline
    from erasure.benchmark import UNEDITED, concept_measure, leaderboard, plan
    from erasure.experiments import Variant, run_experiment

    torch.set_num_threads(args.threads)
    pipe = load_pipeline(None)
    table_rows = []
    by_concept: dict[str, list] = {}
    for method, concept, anchor in cases:
        by_concept.setdefault(concept, []).append((method, anchor))
    for concept, members in by_concept.items():
        attribute, value = concept.split("=", 1)
        the_plan = plan(sorted({m for m, _ in members}), [concept], samples_per_prompt=args.samples_per_prompt)
        measure = {concept: concept_measure(the_plan, (attribute, value))}
        prompts = retain_prompts(attribute, value, args.retain, args.retain_source, pipe)
        variants = [Variant(f"{UNEDITED} / {concept}", None, (), {}, measure=concept)]
        for method, anchor in members:
            for w in args.weights:
                # weight 0 is the paper's ESD, without the retain term (the family's default has one on the world)
                settings = {"anchor": anchor, **common, "retain_prompts": ()}
                if w > 0:
                    settings.update(retain_prompts=prompts, retain_weight=w)
                variants.append(Variant(f"{method} w={w:g} / {concept}", method, (value,), settings, measure=concept,
                                        extra={"retain_weight": w}))
            if args.control:
                control = {"anchor": anchor, **common, "retain_prompts": ()}
                if args.control_weight > 0:  # the same retain term as the concept's rows: what it moves alone
                    control.update(retain_prompts=prompts, retain_weight=args.control_weight)
                variants.append(Variant(f"{method} control {args.control!r}"
                                        + (f" w={args.control_weight:g}" if args.control_weight > 0 else "")
                                        + f" / {concept}", method, (args.control,), control, measure=concept,
                                        extra={"control": args.control, "control_weight": args.control_weight}))
        rows = run_experiment(pipe, variants, measure, out=Path(args.out) / concept.replace("=", "-"))
        board = leaderboard(rows, the_plan)
        for variant, entry in zip(variants, board["entries"]):
            table_rows.append((variant, entry, concept, dict(variant.settings).get("anchor", "")))

    columns = [
        ("method", lambda r: "unedited" if r[0].method is None else f"`{r[0].method}`"),
        ("concept (anchor)", lambda r: r[2] + (f" ({r[3]})" if r[3] else "")),
        ("retain weight", lambda r: "" if r[0].method is None else f"{r[0].extra['retain_weight']:g}"
         if "retain_weight" in r[0].extra else f"control: erases '{r[0].extra['control']}'"
         + (f", weight {r[0].extra['control_weight']:g}" if r[0].extra.get("control_weight") else "")),
        ("target acc.", lambda r: _cell(r[1], "target_accuracy")),
        ("in-domain retain", lambda r: _cell(r[1], "in_domain_retain_accuracy", interval=False)),
        ("worst kept drop", lambda r: compact_drop(r[1], "worst_kept_drop", with_n=True)),
        ("phrasing: target acc.", lambda r: _cell(r[1], "phrasing:target_accuracy")),
        ("phrasing: worst kept drop", lambda r: compact_drop(r[1], "phrasing:worst_kept_drop", with_n=True)),
        ("erase time", lambda r: "" if r[1]["metrics"].get("erase_seconds") is None
         else f"{r[1]['metrics']['erase_seconds']['value']:.0f} s"),
    ]
    table = markdown_table(table_rows, columns)
    extra = "".join(f", {k}={v}" for k, v in common.items())
    note = (f"Each method's defaults{extra} with the anchor shown; retain weight 0 = no retain term, otherwise {args.retain} "
            f"retain prompts ({SOURCES[args.retain_source]}) and that weight. "
            f"{args.samples_per_prompt} images per prompt, 25 DDIM steps, guidance 5, 95% bootstrap intervals on "
            "target accuracy. Worst kept drop: the kept concept that lost most against the unedited model on the "
            "same seeds (n images; p: the exact McNemar test of its images paired by prompt and seed), how many "
            "kept concepts lost more than 10 points and how many of those with p < 0.05 (per concept, not "
            "corrected for the ~40 kept concepts); phrasing: the same on the held-out "
            "phrasing set. Control rows erase a trained word no evaluation prompt uses ('empty', from the captions of empty scenes) with the same settings"
            + (f" and the concept's retain prompts at weight {args.control_weight:g}" if args.control_weight > 0 else
               " and no retain term") + " and are measured "
            "on the concept's prompts: their drops are what an ESD run of the same size moves with nothing to erase (drift of the shared weights, read as the worst of some 40 small groups). "
            "Erase time on one CPU thread.")
    text = f"{table}\n{note}"
    print(text)
    if args.docs:
        write_docs_table(args.docs, args.table, text, command=command)
        print(f"wrote {args.table} into {args.docs}")
    return 0


if __name__ == "__main__":
    script_main(main)
