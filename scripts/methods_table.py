"""The README's methods table: every registered method on two concepts of the built-in world, through the benchmark.

Each method runs at its spec defaults with the anchor (or guide, for the closed-form family) named after the
concept (``--concepts ATTRIBUTE=VALUE:ANCHOR ...``), measured by ``erasure.benchmark.run_benchmark`` (the unedited
model on the same seeds, 2 images per prompt, 95% bootstrap intervals; one benchmark folder per concept in OUT,
its rows kept, so a rerun resumes; its leaderboard.md holds every number). The table joins each method's spec
(family, paper, trains, result kind) with its headline numbers per concept: target accuracy, mean in-domain retain
and the worst kept concept's drop against the unedited model; with ``--docs`` it is written between the
``methods`` markers of README.md.

    python scripts/methods_table.py --threads 1 --out runs/methods_table --docs    # ~50 min on one CPU thread
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from erasure import load_pipeline  # noqa: E402
from erasure.benchmark import UNEDITED, compact_cell as _cell, compact_drop, run_benchmark  # noqa: E402
from erasure.errors import ErasureError  # noqa: E402
from erasure.experiments import check_markers, markdown_table, script_main, write_docs_table  # noqa: E402
from erasure.methods import METHODS  # noqa: E402

TABLE = "methods"
ALIASES = ("esd",)  # registered names that are another method under a second name


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
    p.add_argument("--concepts", nargs="+", default=["shape=circle:square", "texture=striped:plain"],
                   metavar="ATTRIBUTE=VALUE:ANCHOR", help="concepts to erase, each with the anchor / guide every "
                   "method gets for it")
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
    concepts = []
    for item in args.concepts:
        concept, sep, anchor = item.rpartition(":")
        if not sep or "=" not in concept or not anchor:
            raise ErasureError(f"--concepts takes ATTRIBUTE=VALUE:ANCHOR (e.g. shape=circle:square), got {item!r}")
        concepts.append((concept, anchor))
    torch.set_num_threads(args.threads)
    pipe = load_pipeline(None)
    boards = {}
    for concept, anchor in concepts:
        settings = {m: {s.anchor_setting: anchor} for m, s in specs.items() if s.anchor_setting}
        board = run_benchmark(pipe, methods, [concept], out=Path(args.out) / concept.replace("=", "-"),
                              settings=settings, samples_per_prompt=args.samples_per_prompt, limit=args.limit)
        boards[concept] = {e["method"]: e for e in board["entries"]}

    def spec_cell(field):
        return lambda m: "" if m == UNEDITED else field(specs[m])

    columns = [
        ("method", lambda m: m if m == UNEDITED else f"`{m}`"),
        ("family", spec_cell(lambda s: s.family)),
        ("paper", spec_cell(lambda s: _short_paper(s.paper))),
        ("trains", spec_cell(lambda s: "yes" if s.trains else "no")),
        ("result", spec_cell(lambda s: s.result)),
    ]
    for concept, _ in concepts:
        value = concept.split("=", 1)[1]
        by = boards[concept]
        columns += [
            (f"{value}: target acc.", lambda m, by=by: _cell(by[m], "target_accuracy")),
            (f"{value}: in-domain retain", lambda m, by=by: _cell(by[m], "in_domain_retain_accuracy", interval=False)),
            (f"{value}: worst kept drop", lambda m, by=by: compact_drop(by[m])),
            (f"{value}: held-out phrasing, worst kept drop",
             lambda m, by=by: compact_drop(by[m], "phrasing:worst_kept_drop")),
        ]
    first = boards[concepts[0][0]]
    columns.append((f"erase time ({concepts[0][0].split('=', 1)[1]})", lambda m: _seconds(first[m])))
    table = markdown_table([UNEDITED, *methods], columns)
    note = ("; ".join(f"{c}: anchor / guide `{a}`" for c, a in concepts)
            + f"; each method's defaults otherwise; {args.samples_per_prompt} images per prompt, 25 DDIM steps, "
              "guidance 5, 95% bootstrap intervals on target accuracy. Worst kept drop: the kept concept (any "
              "shape, colour, texture, background) that lost most against the unedited model on the same seeds, "
              "how many lost more than 10 points, and how many of those with p < 0.05 (the exact McNemar test of "
              "their images paired by prompt and seed, per concept, not corrected for the ~40 kept concepts); held-out "
              "phrasing: the same on the concept's held-out phrasing set (word orders, filler words, no article, other "
              "sentence forms the training captions never use). "
              f"Every number with its interval, held-out phrasing and costs: `{args.out}/<concept>/leaderboard.md`. "
              f"Erase time on {args.threads or torch.get_num_threads()} CPU thread(s).")
    text = f"{table}\n{note}"
    print(text)
    if args.docs:
        write_docs_table(args.docs, TABLE, text, command=command)
        print(f"wrote {TABLE} into {args.docs}")
    return 0


if __name__ == "__main__":
    script_main(main)
