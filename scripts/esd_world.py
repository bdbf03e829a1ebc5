"""ESD on the built-in world: one shape and one texture erased with each parameter group, against the
unedited model measured on the same seeds in the same run (erasure.experiments.run_experiment). Writes
OUT/esd_world.md/.csv/.json (rows kept in OUT/rows: a rerun resumes) and, with ``--docs``, the table between
the ``esd-world-shape`` or ``esd-world-texture`` markers of docs/methods.md (``esd-world-ATTRIBUTE`` of the
concepts' attribute; ``--table NAME`` for another table's markers).

    python scripts/esd_world.py --out runs/esd_world            # ~15 min on 2 CPU cores
    python scripts/esd_world.py --variants esd-x:lr=1e-4,eta=2   # your own settings
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
    Variant,
    check_markers,
    paper_objective,
    parse_variant,
    run_experiment,
    script_main,
    world_measure,
    write_docs_table,
    write_tables,
)
from erasure.files import write_json  # noqa: E402
from erasure.generation import SamplerSettings  # noqa: E402

DEFAULT_VARIANTS = ["esd-x:lr=1e-4,eta=2", "esd-x-strict:lr=1e-3,eta=2", "esd-u:lr=3e-4,eta=2",
                    "esd-x:lr=3e-4,anchor=ANCHOR", "esd-x:lr=1e-4,anchor=ANCHOR"]
TABLES = ("esd-world-shape", "esd-world-texture")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concepts", nargs="+", default=["shape=circle", "texture=striped"])
    p.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, help="METHOD:key=value,... (JSON values)")
    p.add_argument("--iterations", type=int, default=200)
    p.add_argument("--anchors", nargs="+", default=["shape=square", "texture=plain", "colour=gray"],
                   help="ATTRIBUTE=VALUE: the anchor a variant's anchor=ANCHOR stands for, per attribute")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--guidance", type=float, default=5.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="runs/esd_world")
    p.add_argument("--docs", nargs="?", const="docs/methods.md", default=None, metavar="FILE",
                   help="also write the table between its markers in FILE (default docs/methods.md)")
    p.add_argument("--table", default=None, help="the markers --docs writes between (default: esd-world-ATTRIBUTE, "
                   f"one of {', '.join(TABLES)}, when every concept has that attribute)")
    p.add_argument("--restart", action="store_true", help="recompute rows already in OUT/rows")
    args = p.parse_args(argv)
    command = "python scripts/esd_world.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.docs and args.table is None:
        attributes = {c.split("=")[0] for c in args.concepts}
        if len(attributes) != 1:
            p.error("--docs: the concepts have several attributes; give --table NAME for the table they go in")
        args.table = f"esd-world-{attributes.pop()}"
    if args.docs:
        check_markers(args.docs, [args.table])
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    settings = SamplerSettings(steps=args.steps, guidance=args.guidance)
    anchors = dict(a.split("=") for a in args.anchors)
    measures, variants = {}, []
    for concept in args.concepts:
        attribute, value = concept.split("=")
        measures[concept] = world_measure(f"shapeworld-{attribute}-{value}", (attribute, value), settings)
        variants.append(Variant("unedited", None, measure=concept, extra={"concept": concept}))
        for variant in args.variants:
            method, extra = parse_variant(variant)
            extra = {k: (anchors[attribute] if v == "ANCHOR" else v) for k, v in extra.items()}
            variants.append(Variant(variant.replace("ANCHOR", extra.get("anchor", "")), method, (value,),
                                    {**paper_objective(method), "iterations": args.iterations, "progress": False,
                                     **extra}, measure=concept,
                                    extra={"concept": concept}))
    write_json(out / "config.json", {**vars(args), "command": command}, force=True)
    rows = run_experiment(load_pipeline(None), variants, measures, out=out, resume=not args.restart)
    columns = [("concept", lambda r: r["extra"]["concept"]), ("variant", lambda r: r["label"]), *REPORT_COLUMNS,
               ("erase time", lambda r: "" if r["seconds_erase"] is None else f"{r['seconds_erase']:.0f} s")]
    table = write_tables(rows, out / "esd_world", columns, settings=vars(args))
    print(table)
    if args.docs:
        write_docs_table(args.docs, args.table, table, command=command)
        print(f"wrote {args.table} into {args.docs}")
    return 0


if __name__ == "__main__":
    script_main(main)
