"""ESD trade-off on the built-in world: target vs retain accuracy over iterations and eta, as a plot.

Where no setting meets both bars (erase the concept, keep the rest), this shows what each setting buys.

    python scripts/esd_tradeoff.py --concept texture=striped --method esd-u --lr 3e-4 --out runs/esd_tradeoff
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from erasure.experiments import parse_variant  # noqa: E402

from erasure import load_pipeline  # noqa: E402
from erasure.evaluation.evaluate import evaluate  # noqa: E402
from erasure.generation import SamplerSettings  # noqa: E402
from erasure.methods import erase  # noqa: E402


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
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    attribute, value = args.concept.split("=")
    _, extra = parse_variant(args.method + ":" + ",".join(args.set))
    pipe = load_pipeline(None)
    kw = dict(concept=(attribute, value), settings=SamplerSettings(steps=25, guidance=5.0), progress=False,
              n_resamples=0, keep_images=False)
    set_name = f"shapeworld-{attribute}-{value}"

    def measure() -> dict:
        r = evaluate(pipe, set_name, **kw)
        return {"target": r.value("target_accuracy"), "in_domain": r.value("in_domain_retain_accuracy"),
                "cross_domain": r.value("cross_domain_retain_accuracy")}

    base = measure()
    points = []
    t0 = time.time()
    for eta in args.etas:
        for n in args.iterations:
            edit = erase(pipe, args.method, [value], iterations=n, eta=eta, lr=args.lr, progress=False, **extra)
            edit.apply(pipe)
            point = {"eta": eta, "iterations": n, **measure()}
            edit.restore(pipe)
            points.append(point)
            print(f"[{time.time() - t0:.0f}s] {point}", flush=True)
    title = f"{args.method} lr {args.lr:g} on {args.concept} {extra or ''}".strip()
    plot(points, base, out / "tradeoff.png", title)
    (out / "results.json").write_text(json.dumps({"settings": vars(args), "unedited": base, "points": points}, indent=1))
    print("| eta | iterations | target | in-domain retain | cross-domain retain |\n|---|---|---|---|---|")
    print(f"| unedited | | {base['target']:.2f} | {base['in_domain']:.2f} | {base['cross_domain']:.2f} |")
    for q in points:
        print(f"| {q['eta']:g} | {q['iterations']} | {q['target']:.2f} | {q['in_domain']:.2f} | {q['cross_domain']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
