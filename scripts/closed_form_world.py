"""Closed-form erasure (UCE / TIME family) on the built-in world: the README's quality table.

Three experiments, each against the unedited model measured in the same run:

1. one shape erased (``--concept``, default circle) with each token-selection option, the guide left
   empty or set to an anchor concept: target accuracy on target / synonym / held-out prompts, in-domain
   (other shapes) and cross-domain retain accuracy;
2. mass erasure of half the shapes in one solve: each erased shape's target accuracy and each kept
   shape's accuracy on its own target prompts;
3. preservation against the number of erased shapes (1..7): the kept shapes' mean accuracy (plot).

    python scripts/closed_form_world.py --out runs/closed_form_world   # ~25 min on 2 CPU cores
    python scripts/closed_form_world.py --threads 1 --skip 2,3 --variants 3,4,5  # some rows of experiment 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from erasure import load_pipeline  # noqa: E402
from erasure.evaluation.evaluate import evaluate  # noqa: E402
from erasure.generation import SamplerSettings  # noqa: E402
from erasure.experiments import plot_scaling, shape_accuracy, target_group  # noqa: E402, F401
from erasure.methods import erase  # noqa: E402
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
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = SamplerSettings(steps=args.steps, guidance=args.guidance)
    pipe = load_pipeline(None)
    results: dict = {"settings": vars(args)}
    t0 = time.time()
    skip = set(args.skip.split(","))

    if "1" not in skip:
        set_name = f"shapeworld-shape-{args.concept}"
        kw = dict(concept=("shape", args.concept), settings=settings, samples_per_prompt=args.samples_per_prompt,
                  progress=False)
        base = evaluate(pipe, set_name, **kw)
        base.save(out / "single-baseline", force=True)
        rows = [("unedited", base, None)]
        chosen = {int(v) for v in args.variants.split(",") if v.strip()}
        for number, (label, method, settings_kw) in enumerate(SINGLE_VARIANTS, 1):
            if chosen and number not in chosen:
                continue
            kwargs = {k: (args.anchor if v == "ANCHOR" else v) for k, v in settings_kw.items()}
            edit = erase(pipe, method, [args.concept], **kwargs)
            edit.apply(pipe)
            report = evaluate(pipe, set_name, **kw)
            edit.restore(pipe)
            report.save(out / f"single-{len(rows)}", force=True, baseline=base)
            rows.append((label.replace("anchor", f"anchor ({args.anchor})"), report, edit))
            print(f"[{time.time() - t0:.0f}s] {label}: TA {report.value('target_accuracy'):.3f}", flush=True)
        keys = ["target_accuracy", "target_accuracy[group=synonym]", "target_accuracy[group=held-out]",
                "in_domain_retain_accuracy", "cross_domain_retain_accuracy"]
        table = ["| variant | target acc. | synonyms | held-out | in-domain retain | cross-domain retain | rows (erase/preserve) |",
                 "|---|---|---|---|---|---|---|"]
        for label, r, edit in rows:
            cells = [f"{r.value(k):.2f} [{r.metrics[k].ci_low:.2f}, {r.metrics[k].ci_high:.2f}]" for k in keys]
            info = f"{edit.info['erase_rows']}/{edit.info['preserve_rows']}" if edit else ""
            table.append(f"| {label} | " + " | ".join(cells) + f" | {info} |")
        results["single"] = {label: r.to_dict()["metrics"] for label, r, _ in rows}
        results["single_table"] = table
        print("\n".join(table), flush=True)

    if "2" not in skip:
        erased, kept = list(SHAPES[::2]), list(SHAPES[1::2])
        spp = args.samples_per_prompt
        before = {s: shape_accuracy(pipe, s, settings, None, spp) for s in SHAPES}
        mass_rows = {}
        for label, guide in (("guide empty", ""), ("guide = kept shapes", kept)):
            edit = erase(pipe, args.mass_method, erased, guide=guide,
                         **{**MASS, "tokens": args.mass_tokens, "preserve_scale": args.mass_preserve_scale},
                         **({"templates": args.mass_templates} if args.mass_templates else {}))
            edit.apply(pipe)
            after = {s: shape_accuracy(pipe, s, settings, None, spp) for s in SHAPES}
            edit.restore(pipe)
            mass_rows[label] = after
            print(f"[{time.time() - t0:.0f}s] mass {label}: {after}", flush=True)
        table = ["| shape | role | unedited | " + " | ".join(mass_rows) + " |", "|---|---|---|" + "---|" * len(mass_rows)]
        for s in SHAPES:
            role = "erased" if s in erased else "kept"
            table.append(f"| {s} | {role} | {before[s]:.2f} | " + " | ".join(f"{m[s]:.2f}" for m in mass_rows.values()) + " |")
        results["mass"] = {"erased": erased, "kept": kept, "before": before, "after": mass_rows, "table": table}
        print("\n".join(table), flush=True)

    if "3" not in skip:
        n = args.scaling_prompts
        before = {s: shape_accuracy(pipe, s, settings, n) for s in SHAPES}
        curve = []
        for k in range(1, len(SHAPES)):
            erased, kept = list(SHAPES[:k]), list(SHAPES[k:])
            # experiment 2's settings; with --scaling-guide kept, each erased shape goes to a kept one (cyclically)
            guide = [kept[i % len(kept)] for i in range(k)] if args.scaling_guide == "kept" else ""
            edit = erase(pipe, args.mass_method, erased, guide=guide,
                         **{**MASS, "tokens": args.mass_tokens, "preserve_scale": args.mass_preserve_scale},
                         **({"templates": args.mass_templates} if args.mass_templates else {}))
            edit.apply(pipe)
            acc_erased = [shape_accuracy(pipe, s, settings, n) for s in erased]
            acc_kept = [shape_accuracy(pipe, s, settings, n) for s in kept]
            edit.restore(pipe)
            point = {"erased": k, "erased_acc": sum(acc_erased) / k, "kept_acc": sum(acc_kept) / len(kept),
                     "kept_acc_before": sum(before[s] for s in kept) / len(kept),
                     "worst_kept_change": min(a - before[s] for s, a in zip(kept, acc_kept)),
                     "worst_erased": max(acc_erased)}
            curve.append(point)
            print(f"[{time.time() - t0:.0f}s] {point}", flush=True)
        results["scaling"] = curve
        plot_scaling(curve, out / "preservation_vs_concepts.png")

    results["seconds"] = round(time.time() - t0, 1)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    print(f"wrote {out / 'results.json'} ({results['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
