"""The README's methods table: every registered method on one concept of the built-in world, through the benchmark.

Each method runs at its spec defaults with the anchor (or guide, for the closed-form family) set to ``--anchor``,
on ``--concept``, measured by ``erasure.benchmark.run_benchmark`` (the unedited model on the same seeds, 2 images
per prompt, 95% bootstrap intervals; rows kept in OUT/rows, so a rerun resumes). The table joins each method's
spec (family, paper, trains, result kind) with its headline numbers; with ``--docs`` it is written between the
``methods`` markers of README.md.

    python scripts/methods_table.py --threads 1 --out runs/methods_table --docs    # ~30 min on one CPU thread
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from erasure import load_pipeline  # noqa: E402
from erasure.benchmark import UNEDITED, run_benchmark  # noqa: E402
from erasure.experiments import check_markers, markdown_table, script_main, write_docs_table  # noqa: E402
from erasure.methods import METHODS  # noqa: E402

TABLE = "methods"
ALIASES = ("esd",)  # registered names that are another method under a second name


def _cell(entry, name: str) -> str:
    m = entry["metrics"].get(name)
    if m is None or m.get("value") is None:
        return "n/a"
    return f"{m['value']:.2f} [{m['ci_low']:.2f}, {m['ci_high']:.2f}]" if m.get("ci_low") is not None \
        else f"{m['value']:.2f}"


def _seconds(entry) -> str:
    m = entry["metrics"].get("erase_seconds")
    return "" if m is None or m.get("value") is None else f"{m['value']:.0f} s"


def _short_paper(paper: str) -> str:
    """'Gandikota et al., Erasing Concepts from Diffusion Models, ICCV 2023' -> 'Gandikota et al., ICCV 2023'."""
    parts = [p.strip() for p in paper.split(",")]
    return f"{parts[0]}, {parts[-1]}" if len(parts) >= 3 else paper


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default=",".join(n for n in METHODS.names() if n not in ALIASES),
                   help="comma-separated registered methods (default: every one but aliases)")
    p.add_argument("--concept", default="shape=circle", help="ATTRIBUTE=VALUE")
    p.add_argument("--anchor", default="square", help="each method's anchor / guide")
    p.add_argument("--samples-per-prompt", type=int, default=2)
    p.add_argument("--limit", type=int, default=None, help="only the first N prompts of each group (a quick look)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/methods_table")
    p.add_argument("--docs", nargs="?", const="README.md", default=None, metavar="FILE",
                   help=f"also write the table between the {TABLE} markers in FILE (default README.md)")
    args = p.parse_args(argv)
    command = "python scripts/methods_table.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.docs:
        check_markers(args.docs, [TABLE])
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    specs = {m: METHODS.get(m) for m in methods}
    settings = {m: {s.anchor_setting: args.anchor} for m, s in specs.items() if s.anchor_setting}
    torch.set_num_threads(args.threads)
    board = run_benchmark(load_pipeline(None), methods, [args.concept], out=args.out, settings=settings,
                          samples_per_prompt=args.samples_per_prompt, limit=args.limit)
    by_method = {e["method"]: e for e in board["entries"]}

    def spec_cell(field):
        return lambda m: "" if m == UNEDITED else field(specs[m])

    rows = [UNEDITED, *methods]
    columns = [
        ("method", lambda m: m if m == UNEDITED else f"`{m}`"),
        ("family", spec_cell(lambda s: s.family)),
        ("paper", spec_cell(lambda s: _short_paper(s.paper))),
        ("trains", spec_cell(lambda s: "yes" if s.trains else "no")),
        ("result", spec_cell(lambda s: s.result)),
        ("target acc.", lambda m: _cell(by_method[m], "target_accuracy")),
        ("in-domain retain", lambda m: _cell(by_method[m], "in_domain_retain_accuracy")),
        ("cross-domain retain", lambda m: _cell(by_method[m], "cross_domain_retain_accuracy")),
        ("held-out phrasing: target", lambda m: _cell(by_method[m], "phrasing:target_accuracy")),
        ("erase time", lambda m: _seconds(by_method[m])),
    ]
    table = markdown_table(rows, columns)
    note = (f"{args.concept}, anchor / guide `{args.anchor}`, each method's defaults otherwise; "
            f"{args.samples_per_prompt} images per prompt, 25 DDIM steps, guidance 5, 95% bootstrap intervals; "
            "erase time on one CPU thread.")
    text = f"{table}\n{note}"
    print(text)
    if args.docs:
        write_docs_table(args.docs, TABLE, text, command=command)
        print(f"wrote {TABLE} into {args.docs}")
    return 0


if __name__ == "__main__":
    script_main(main)
