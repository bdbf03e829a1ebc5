"""Adapter-based erasure on the built-in world: LoRA-ESD, SPM (with and without facilitated transport)
and MACE, against the unedited model (and ESD-x) measured on the same seeds in the same run, on the package's
experiment loop (erasure.experiments.run_experiment).

1. one concept (``--concept``, default shape=circle, anchor square: ESD's best setting) with each
   variant: target / synonym / held-out accuracy, in-domain and cross-domain retain (bootstrap CIs),
   erase time, adapter size, peak memory;
2. MACE erasing 4 shapes at once: each shape's accuracy on its target prompts, before and after;
3. MACE scaling: erase the first k shapes, k = 1..7: erased and kept shapes' mean accuracy.

Peak memory is the process's peak resident set (VmHWM), reset before each erasure through
/proc/self/clear_refs, so it includes the loaded model (~the RSS before the erasure, also reported).
Rows are kept in OUT/rows (a rerun resumes); tables go to OUT/<experiment>.md/.csv/.json, and with ``--docs``
between the markers adapters-single / adapters-mace / adapters-scaling of docs/methods.md.

    python scripts/adapters_world.py --out runs/adapters_world      # ~40 min on one CPU thread
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
    paper_objective,
    parse_variant,
    plot_scaling,
    run_experiment,
    script_main,
    scaling_point,
    shape_accuracies_measure,
    shape_columns,
    shape_rows,
    value,
    world_measure,
    write_docs_table,
    write_tables,
)
from erasure.files import write_json  # noqa: E402
from erasure.generation import SamplerSettings  # noqa: E402
from erasure.world.render import SHAPES  # noqa: E402

DEFAULT_VARIANTS = ["esd-x:lr=3e-4,anchor=ANCHOR", "lora-esd:anchor=ANCHOR", "spm:anchor=ANCHOR"]
MACE_SHAPES = list(SHAPES[::2])  # circle, triangle, heart, crescent: the closed-form mass-erasure split
TABLES = {"1": "adapters-single", "2": "adapters-mace", "3": "adapters-scaling"}


def _erase_time(r) -> str:
    return "" if r["seconds_erase"] is None else f"{r['seconds_erase']:.0f} s"


def _size(r) -> str:
    return "" if r["seconds_erase"] is None else f"{r['result']['size_kb']:.1f} KB"


def _peak(r) -> str:
    s = r.get("result") or {}
    if s.get("peak_rss_mb") is None:
        return ""
    return f"{s['peak_rss_mb']:.0f} MB (before {s['rss_before_mb']:.0f})"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concept", default="shape=circle")
    p.add_argument("--anchor", default="square")
    p.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, help="METHOD:key=value,... (JSON values)")
    p.add_argument("--iterations", type=int, default=200)
    p.add_argument("--mace-shapes", nargs="+", default=MACE_SHAPES)
    p.add_argument("--mace", default="", help="MACE settings key=value,... for experiments 2 and 3 (anchor=KEPT: "
                   "each erased shape anchored to a kept one)")
    p.add_argument("--scaling", nargs="+", type=int, default=list(range(1, len(SHAPES))))
    p.add_argument("--scaling-prompts", type=int, default=20)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--guidance", type=float, default=5.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--skip", default="", help="comma-separated experiments to skip (1,2,3)")
    p.add_argument("--out", default="runs/adapters_world")
    p.add_argument("--docs", nargs="?", const="docs/methods.md", default=None, metavar="FILE",
                   help="also write each table run between its markers in FILE (default docs/methods.md)")
    p.add_argument("--restart", action="store_true", help="recompute rows already in OUT/rows")
    args = p.parse_args(argv)
    command = "python scripts/adapters_world.py " + " ".join(sys.argv[1:] if argv is None else argv)
    skip = set(args.skip.split(","))
    if args.docs:
        check_markers(args.docs, [TABLES[e] for e in "123" if e not in skip])
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    settings = SamplerSettings(steps=args.steps, guidance=args.guidance)
    pipe = load_pipeline(None)
    write_json(out / "config.json", {**vars(args), "command": command}, force=True)
    _, mace_settings = parse_variant("mace:" + args.mace)
    mace_settings["progress"] = False
    tables: dict[str, str] = {}

    def mace_for(erased: list[str]) -> dict:
        """--mace settings; anchor=KEPT: each erased shape's anchor is a kept shape, in order (cyclically)."""
        if mace_settings.get("anchor") != "KEPT":
            return mace_settings
        kept = [s for s in SHAPES if s not in erased]
        return {**mace_settings, "anchor": [kept[i % len(kept)] for i in range(len(erased))]}

    if "1" not in skip:
        attribute, concept = args.concept.split("=")
        measures = {"single": world_measure(f"shapeworld-{attribute}-{concept}", (attribute, concept), settings)}
        variants = [Variant("unedited", None, measure="single")]
        for text in args.variants:
            method, extra = parse_variant(text)
            extra = {k: (args.anchor if v == "ANCHOR" else v) for k, v in extra.items()}
            label = text.replace("ANCHOR", args.anchor)
            settings_kw = {**paper_objective(method), "iterations": args.iterations, "progress": False, **extra}
            variants.append(Variant(label, method, (concept,), settings_kw, measure="single"))
            if method == "spm":  # the same adapter, run with facilitated transport
                variants.append(Variant(label + " + facilitated transport", method, (concept,), settings_kw,
                                        measure="single", context="facilitated-transport"))
        rows = run_experiment(pipe, variants, measures, out=out)
        columns = [("variant", lambda r: r["label"]), *REPORT_COLUMNS, ("erase time", _erase_time), ("size", _size),
                   ("peak RSS", _peak)]
        tables["1"] = write_tables(rows, out / "single", columns, settings=vars(args))

    if "2" not in skip:
        erased = list(args.mace_shapes)
        measures = {"shapes": shape_accuracies_measure(SHAPES, settings, None)}
        rows = run_experiment(pipe, [Variant("unedited", None, measure="shapes"),
                                     Variant("MACE", "mace", tuple(erased), mace_for(erased), measure="shapes")],
                              measures, out=out)
        lines = shape_rows(rows[0], rows[1:], SHAPES, erased)
        table = write_tables(lines, out / "mace", shape_columns(["MACE"], change=True), settings=vars(args))
        met_erase = all(value(rows[1], f"accuracy[{s}]") <= 0.15 for s in erased)
        met_keep = all(value(rows[1], f"accuracy[{s}]") >= value(rows[0], f"accuracy[{s}]") - 0.10
                       for s in SHAPES if s not in erased)
        tables["2"] = table + f"\n\nbars: each erased <= 15%: {met_erase}; kept within 10 points: {met_keep}"

    if "3" not in skip:
        measures = {"scaling": shape_accuracies_measure(SHAPES, settings, args.scaling_prompts)}
        variants = [Variant("unedited", None, measure="scaling")]
        variants += [Variant(f"{k} erased", "mace", tuple(SHAPES[:k]), mace_for(list(SHAPES[:k])), measure="scaling")
                     for k in args.scaling]
        rows = run_experiment(pipe, variants, measures, out=out)
        curve = [scaling_point(rows[0], r, SHAPES) for r in rows[1:]]
        plot_scaling(curve, out / "mace_scaling.png")
        columns = [*SCALING_COLUMNS, ("erase time", lambda c: f"{c['seconds']:.0f} s"),
                   ("size", lambda c: f"{c['size_kb']:.1f} KB")]
        tables["3"] = write_tables(curve, out / "scaling", columns, settings=vars(args))

    for experiment, table in tables.items():
        print(f"\n{TABLES[experiment]}:\n{table}")
        if args.docs:
            write_docs_table(args.docs, TABLES[experiment], table, command=command)
            print(f"wrote {TABLES[experiment]} into {args.docs}")
    return 0


if __name__ == "__main__":
    script_main(main)
