"""Closed-form erasure (UCE / TIME family) on the built-in world: docs/methods.md's closed-form tables.

Three experiments on the package's experiment loop (erasure.experiments.run_experiment), each against the
unedited model measured on the same seeds in the same run:

1. one shape erased (``--concept``, default circle) with each token-selection option, the guide left
   empty or set to an anchor concept: target accuracy on target / synonym / held-out prompts, in-domain
   (other shapes) and cross-domain retain accuracy;
2. mass erasure of half the shapes in one solve: each erased shape's target accuracy and each kept
   shape's accuracy on its own target prompts;
3. preservation against the number of erased shapes (1..7): the kept shapes' mean accuracy (plot).

Rows are kept in OUT/rows (a rerun resumes); tables go to OUT/<experiment>.md/.csv/.json, and with ``--docs``
between the markers closed-form-single / closed-form-mass / closed-form-scaling of docs/methods.md.

    python scripts/closed_form_world.py --out runs/closed_form_world   # ~25 min on 2 CPU cores
    python scripts/closed_form_world.py --threads 1 --skip 2,3 --variants 3,4,5  # some rows of experiment 1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from erasure import load_pipeline  # noqa: E402
from erasure.experiments import (  # noqa: E402
    REPORT_COLUMNS,
    SCALING_COLUMNS,
    Variant,
    check_markers,
    plot_scaling,
    run_experiment,
    script_main,
    scaling_point,
    shape_accuracies_measure,
    shape_columns,
    shape_rows,
    world_measure,
    write_docs_table,
    write_tables,
)
from erasure.files import write_json  # noqa: E402
from erasure.generation import SamplerSettings  # noqa: E402
from erasure.world.render import SHAPES  # noqa: E402

SINGLE_VARIANTS = [
    ("uce, no templates (current code: the prompt's last token)", "uce", {"templates": "none"}),
    ("uce (shapeworld templates)", "uce", {}),
    ("uce, shapeworld-captions templates (last token)", "uce", {"templates": "shapeworld-captions"}),
    ("last-subject, shapeworld-captions templates", "uce", {"templates": "shapeworld-captions",
                                                            "tokens": "last-subject"}),
    ("uce-paper (paper CLI: last token..end, '' preserved, bare guide/preserve)", "uce-paper", {}),
    ("subject..end, preserve scale rule, no '' (uce-paper before issue 16)", "uce",
     {"tokens": "subject-to-end", "preserve_scale": None}),
    ("uce-paper, preserved concepts templated (template_preserve, ours)", "uce-paper", {"template_preserve": True}),
    ("time (all aligned tokens)", "time", {}),
    ("uce-paper, guide = anchor", "uce-paper", {"guide": "ANCHOR"}),
    ("subject..end, preserve scale 0.02, guide = anchor", "uce", {"tokens": "subject-to-end", "preserve_scale": 0.02,
                                                                  "guide": "ANCHOR"}),
]
MASS = {"tokens": "subject-to-end", "preserve_scale": 0.02}
TABLES = {"1": "closed-form-single", "2": "closed-form-mass", "3": "closed-form-scaling"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concept", default="circle")
    p.add_argument("--anchor", default="square", help="anchor shape for the guided variant")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--guidance", type=float, default=5.0)
    p.add_argument("--samples-per-prompt", type=int, default=1)
    p.add_argument("--scaling-prompts", type=int, default=20, help="target prompts per kept shape in experiment 3")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--mass-preserve-scale", type=float, default=0.02)
    p.add_argument("--mass-method", default="uce")
    p.add_argument("--mass-tokens", default=MASS["tokens"], help="token selection of the mass erasure")
    p.add_argument("--mass-templates", default=None, help="template set of the mass erasure (default: the method's)")
    p.add_argument("--scaling-guide", choices=("kept", "empty"), default="kept",
                   help="experiment 3's guides: each erased shape to a kept shape, or the empty prompt")
    p.add_argument("--skip", default="", help="comma-separated experiments to skip (1,2,3)")
    p.add_argument("--variants", default="", help="experiment 1: comma-separated row numbers (1-based) to run "
                   "(default: all)")
    p.add_argument("--out", default="runs/closed_form_world")
    p.add_argument("--docs", nargs="?", const="docs/methods.md", default=None, metavar="FILE",
                   help="also write each table run between its markers in FILE (default docs/methods.md)")
    p.add_argument("--restart", action="store_true", help="recompute rows already in OUT/rows")
    args = p.parse_args(argv)
    command = "python scripts/closed_form_world.py " + " ".join(sys.argv[1:] if argv is None else argv)
    skip = set(args.skip.split(","))
    if args.docs:
        check_markers(args.docs, [TABLES[e] for e in "123" if e not in skip])
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    settings = SamplerSettings(steps=args.steps, guidance=args.guidance)
    pipe = load_pipeline(None)
    spp = args.samples_per_prompt
    write_json(out / "config.json", {**vars(args), "command": command}, force=True)
    mass = {**MASS, "tokens": args.mass_tokens, "preserve_scale": args.mass_preserve_scale,
            **({"templates": args.mass_templates} if args.mass_templates else {})}
    tables: dict[str, str] = {}

    if "1" not in skip:
        measures = {"single": world_measure(f"shapeworld-shape-{args.concept}", ("shape", args.concept), settings,
                                            samples_per_prompt=spp)}
        chosen = {int(v) for v in args.variants.split(",") if v.strip()}
        variants = [Variant("unedited", None, measure="single")]
        for number, (label, method, kw) in enumerate(SINGLE_VARIANTS, 1):
            if chosen and number not in chosen:
                continue
            kw = {k: (args.anchor if v == "ANCHOR" else v) for k, v in kw.items()}
            variants.append(Variant(label.replace("anchor", f"anchor ({args.anchor})"), method, (args.concept,), kw,
                                    measure="single"))
        rows = run_experiment(pipe, variants, measures, out=out, resume=not args.restart)

        def erase_rows(r):
            info = r.get("result", {}).get("info", {})
            return f"{info['erase_rows']}/{info['preserve_rows']}" if "erase_rows" in info else ""

        columns = [("variant", lambda r: r["label"]), *REPORT_COLUMNS, ("rows (erase/preserve)", erase_rows)]
        tables["1"] = write_tables(rows, out / "single", columns, settings=vars(args))

    if "2" not in skip:
        erased, kept = list(SHAPES[::2]), list(SHAPES[1::2])
        measures = {"shapes": shape_accuracies_measure(SHAPES, settings, None, spp)}
        variants = [Variant("unedited", None, measure="shapes"),
                    Variant("guide empty", args.mass_method, tuple(erased), {**mass, "guide": ""}, measure="shapes"),
                    Variant("guide = kept shapes", args.mass_method, tuple(erased), {**mass, "guide": kept},
                            measure="shapes")]
        rows = run_experiment(pipe, variants, measures, out=out, resume=not args.restart)
        lines = shape_rows(rows[0], rows[1:], SHAPES, erased)
        tables["2"] = write_tables(lines, out / "mass", shape_columns([r["label"] for r in rows[1:]]),
                                   settings=vars(args))

    if "3" not in skip:
        measures = {"scaling": shape_accuracies_measure(SHAPES, settings, args.scaling_prompts)}
        variants = [Variant("unedited", None, measure="scaling")]
        for k in range(1, len(SHAPES)):
            erased, kept = list(SHAPES[:k]), list(SHAPES[k:])
            # experiment 2's settings; with --scaling-guide kept, each erased shape goes to a kept one (cyclically)
            guide = [kept[i % len(kept)] for i in range(k)] if args.scaling_guide == "kept" else ""
            variants.append(Variant(f"{k} erased", args.mass_method, tuple(erased), {**mass, "guide": guide},
                                    measure="scaling"))
        rows = run_experiment(pipe, variants, measures, out=out, resume=not args.restart)
        curve = [scaling_point(rows[0], r, SHAPES) for r in rows[1:]]
        plot_scaling(curve, out / "preservation_vs_concepts.png")
        tables["3"] = write_tables(curve, out / "scaling", SCALING_COLUMNS, settings=vars(args))

    for experiment, table in tables.items():
        print(f"\n{TABLES[experiment]}:\n{table}")
        if args.docs:
            write_docs_table(args.docs, TABLES[experiment], table, command=command)
            print(f"wrote {TABLES[experiment]} into {args.docs}")
    return 0


if __name__ == "__main__":
    script_main(main)
