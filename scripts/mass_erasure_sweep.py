"""Sweep mass-erasure settings on the built-in world: erase circle, triangle, heart and crescent at once
with each given variant and print every shape's accuracy on its first N target prompts (JSON lines),
against the unedited model measured in the same run. A quick way to pick settings before a full run of
``closed_form_world.py`` / ``adapters_world.py`` (which use all 40 prompts).

    python scripts/mass_erasure_sweep.py --prompts 20 \\
        "uce:tokens=subject-to-end,preserve_scale=2.0,guide=KEPT,templates=shapeworld-captions" \\
        "mace:anchor=KEPT,preserve_scale=10,cfr_preserve_scale=3,templates=shapeworld-captions"

``KEPT`` stands for the kept shapes (square, star, cross, diamond), one per erased shape, in order.
On the package's experiment loop (erasure.experiments.run_experiment: rows kept in OUT/rows, a rerun resumes);
writes OUT/sweep.md/.csv/.json, and with ``--docs`` the table between the ``mass-erasure-sweep`` markers of
docs/methods.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from erasure import load_pipeline  # noqa: E402
from erasure.experiments import (  # noqa: E402
    Variant,
    check_markers,
    parse_variant,
    run_experiment,
    script_main,
    shape_accuracies_measure,
    value,
    write_docs_table,
    write_tables,
)
from erasure.files import write_json  # noqa: E402
from erasure.generation import SamplerSettings  # noqa: E402
from erasure.world.render import SHAPES  # noqa: E402

TABLE = "mass-erasure-sweep"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("variants", nargs="+", help="METHOD:key=value,... (JSON values; KEPT = the kept shapes)")
    p.add_argument("--prompts", type=int, default=20, help="target prompts per shape")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--guidance", type=float, default=5.0)
    p.add_argument("--out", default="runs/mass_erasure_sweep")
    p.add_argument("--docs", nargs="?", const="docs/methods.md", default=None, metavar="FILE",
                   help=f"also write the table between the {TABLE} markers in FILE (default docs/methods.md)")
    args = p.parse_args(argv)
    command = "python scripts/mass_erasure_sweep.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.docs:
        check_markers(args.docs, [TABLE])
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    erased, kept = list(SHAPES[::2]), list(SHAPES[1::2])
    measures = {"shapes": shape_accuracies_measure(SHAPES, SamplerSettings(steps=args.steps, guidance=args.guidance),
                                                   args.prompts)}
    variants = [Variant("unedited", None, measure="shapes")]
    for text in args.variants:
        method, kw = parse_variant(text)
        kw = {k: (kept if v == "KEPT" else v) for k, v in kw.items()}
        if method == "mace":
            kw["progress"] = False
        variants.append(Variant(text, method, tuple(erased), kw, measure="shapes"))
    write_json(out / "config.json", {**vars(args), "command": command}, force=True)
    rows = run_experiment(load_pipeline(None), variants, measures, out=out, log=None)
    base = rows[0]
    lines = []
    for r in rows:
        acc = {s: value(r, f"accuracy[{s}]") for s in SHAPES}
        line = {"variant": r["label"], "acc": acc}
        if r["method"] is not None:
            line.update(max_erased=max(acc[s] for s in erased),
                        max_kept_drop=round(max(value(base, f"accuracy[{s}]") - acc[s] for s in kept), 3),
                        seconds=r["seconds_erase"])
            line["meets"] = line["max_erased"] <= 0.15 and line["max_kept_drop"] <= 0.10 + 1e-9
        print(json.dumps(line), flush=True)
        lines.append(line)
    columns = [("variant", lambda q: q["variant"]),
               *[(s, lambda q, s=s: f"{q['acc'][s]:.2f}") for s in SHAPES],
               ("worst erased", lambda q: f"{q['max_erased']:.2f}" if "max_erased" in q else ""),
               ("worst kept drop", lambda q: f"{q['max_kept_drop']:.2f}" if "max_kept_drop" in q else ""),
               ("meets the bars", lambda q: ("yes" if q["meets"] else "no") if "meets" in q else "")]
    table = write_tables(lines, out / "sweep", columns, settings=vars(args))
    if args.docs:
        write_docs_table(args.docs, TABLE, table, command=command)
        print(f"wrote {TABLE} into {args.docs}")
    return 0


if __name__ == "__main__":
    script_main(main)
