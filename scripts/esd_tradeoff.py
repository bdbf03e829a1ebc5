"""ESD trade-off on the built-in world: target vs retain accuracy over iterations and eta, as a plot.

Where no setting meets both bars (erase the concept, keep the rest), this shows what each setting buys. On the
package's experiment loop (erasure.experiments.run_experiment: rows kept in OUT/rows, a rerun resumes); writes
OUT/tradeoff.md/.csv/.json and the plot, and with ``--docs`` the table between the ``esd-tradeoff`` markers of
docs/methods.md.

    python scripts/esd_tradeoff.py --concept texture=striped --method esd-u --lr 3e-4 --out runs/esd_tradeoff
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from erasure import load_pipeline  # noqa: E402
from erasure.experiments import (  # noqa: E402
    Variant,
    check_markers,
    paper_objective,
    parse_variant,
    run_experiment,
    script_main,
    value,
    world_measure,
    write_docs_table,
    write_tables,
)
from erasure.files import write_json  # noqa: E402
from erasure.generation import SamplerSettings  # noqa: E402

TABLE = "esd-tradeoff"
KEYS = {"target": "target_accuracy", "in_domain": "in_domain_retain_accuracy",
        "cross_domain": "cross_domain_retain_accuracy"}


def plot(points: list[dict], base: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for eta in sorted({p["eta"] for p in points}):
        row = sorted((p for p in points if p["eta"] == eta), key=lambda p: p["iterations"])
        ax.plot([p["target"] for p in row], [p["in_domain"] for p in row], "o-", label=f"eta {eta:g}")
        for p in row:
            ax.annotate(str(p["iterations"]), (p["target"], p["in_domain"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    ax.plot([base["target"]], [base["in_domain"]], "k*", markersize=10, label="unedited")
    ax.axvline(0.10, color="gray", ls=":", lw=1)
    ax.axhline(base["in_domain"] - 0.05, color="gray", ls=":", lw=1)
    ax.set_xlabel("target accuracy (lower = erased)")
    ax.set_ylabel("in-domain retain accuracy")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concept", default="texture=striped", help="ATTRIBUTE=VALUE")
    p.add_argument("--method", default="esd-u")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--etas", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    p.add_argument("--iterations", type=int, nargs="+", default=[100, 200, 400])
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more settings (JSON values)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/esd_tradeoff")
    p.add_argument("--docs", nargs="?", const="docs/methods.md", default=None, metavar="FILE",
                   help=f"also write the table between the {TABLE} markers in FILE (default docs/methods.md)")
    args = p.parse_args(argv)
    command = "python scripts/esd_tradeoff.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.docs:
        check_markers(args.docs, [TABLE])
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    attribute, concept = args.concept.split("=")
    _, extra = parse_variant(args.method + ":" + ",".join(args.set))
    measures = {"tradeoff": world_measure(f"shapeworld-{attribute}-{concept}", (attribute, concept),
                                          SamplerSettings(steps=25, guidance=5.0), n_resamples=0)}
    variants = [Variant("unedited", None, measure="tradeoff")]
    for eta in args.etas:
        for n in args.iterations:
            variants.append(Variant(f"eta {eta:g}, {n} iterations", args.method, (concept,),
                                    {**paper_objective(args.method), "iterations": n, "eta": eta, "lr": args.lr,
                                     "progress": False, **extra},
                                    measure="tradeoff", extra={"eta": eta, "iterations": n}))
    write_json(out / "config.json", {**vars(args), "command": command}, force=True)
    rows = run_experiment(load_pipeline(None), variants, measures, out=out)
    points = [{**r["extra"], **{k: value(r, m) for k, m in KEYS.items()}} for r in rows]
    base, points = points[0], points[1:]
    title = f"{args.method} lr {args.lr:g} on {args.concept} {extra or ''}".strip()
    plot(points, base, out / "tradeoff.png", title)
    columns = [("eta", lambda q: f"{q['eta']:g}" if "eta" in q else "unedited"),
               ("iterations", lambda q: q.get("iterations", "")),
               ("target", lambda q: f"{q['target']:.2f}"), ("in-domain retain", lambda q: f"{q['in_domain']:.2f}"),
               ("cross-domain retain", lambda q: f"{q['cross_domain']:.2f}")]
    table = write_tables([base, *points], out / "tradeoff", columns, settings=vars(args))
    print(table)
    if args.docs:
        write_docs_table(args.docs, TABLE, table, command=command)
        print(f"wrote {TABLE} into {args.docs}")
    return 0


if __name__ == "__main__":
    script_main(main)
