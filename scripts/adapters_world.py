"""Adapter-based erasure on the built-in world: LoRA-ESD, SPM (with and without facilitated transport)
and MACE, against the unedited model (and ESD-x) measured in the same run.

1. one concept (``--concept``, default shape=circle, anchor square: ESD's best setting) with each
   variant: target / synonym / held-out accuracy, in-domain and cross-domain retain (bootstrap CIs),
   erase time, adapter size, peak memory;
2. MACE erasing 4 shapes at once: each shape's accuracy on its target prompts, before and after;
3. MACE scaling: erase the first k shapes, k = 1..7: erased and kept shapes' mean accuracy.

Peak memory is the process's peak resident set (VmHWM), reset before each erasure through
/proc/self/clear_refs, so it includes the loaded model (~the RSS before the erasure, also reported).

    python scripts/adapters_world.py --out runs/adapters_world      # ~40 min on one CPU thread
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from erasure.experiments import plot_scaling, shape_accuracy  # noqa: E402
from erasure.experiments import REPORT_KEYS as KEYS, parse_variant  # noqa: E402

from erasure import load_pipeline  # noqa: E402
from erasure.adapters import Adapter, facilitated_transport  # noqa: E402
from erasure.evaluation.evaluate import evaluate  # noqa: E402
from erasure.generation import SamplerSettings  # noqa: E402
from erasure.methods import erase  # noqa: E402
from erasure.world.render import SHAPES  # noqa: E402

DEFAULT_VARIANTS = ["esd-x:lr=3e-4,anchor=ANCHOR", "lora-esd:anchor=ANCHOR", "spm:anchor=ANCHOR"]
MACE_SHAPES = list(SHAPES[::2])  # circle, triangle, heart, crescent: the closed-form mass-erasure split


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def reset_peak() -> int:
    """Reset the peak RSS (Linux) and return the current RSS in KB."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return _rss_kb("VmRSS")


def timed_erase(pipe, method, concepts, **settings):
    rss0 = reset_peak()
    t0 = time.time()
    result = erase(pipe, method, concepts, progress=False, **settings)
    seconds = time.time() - t0
    stats = {"seconds": round(seconds, 1), "peak_rss_mb": round(_rss_kb("VmHWM") / 1024, 1),
             "rss_before_mb": round(rss0 / 1024, 1)}
    if isinstance(result, Adapter):
        stats["size_kb"] = round(result.size_bytes / 1024, 1)
        stats["size_kb_per_concept"] = round(result.size_bytes / 1024 / len(result.concepts), 1)
    else:
        stats["size_kb"] = round(sum(t.numel() * t.element_size() for t in result.tensors.values()) / 1024, 1)
    return result, stats


def cells(r) -> list[str]:
    return [f"{r.value(k):.2f} [{r.metrics[k].ci_low:.2f}, {r.metrics[k].ci_high:.2f}]" if k in r.metrics else "n/a"
            for k in KEYS]


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
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = SamplerSettings(steps=args.steps, guidance=args.guidance)
    pipe = load_pipeline(None)
    skip = set(args.skip.split(","))
    results: dict = {"settings": vars(args), "command": "python scripts/adapters_world.py " + " ".join(argv or sys.argv[1:])}
    md: list[str] = []
    t_start = time.time()
    _, mace_settings = parse_variant("mace:" + args.mace)

    def mace_for(erased: list[str]) -> dict:
        """--mace settings; anchor=KEPT: each erased shape's anchor is a kept shape, in order (cyclically)."""
        if mace_settings.get("anchor") != "KEPT":
            return mace_settings
        kept = [s for s in SHAPES if s not in erased]
        return {**mace_settings, "anchor": [kept[i % len(kept)] for i in range(len(erased))]}

    if "1" not in skip:
        attribute, value = args.concept.split("=")
        set_name = f"shapeworld-{attribute}-{value}"
        kw = dict(concept=(attribute, value), settings=settings, progress=False)
        base = evaluate(pipe, set_name, **kw)
        rows = [("unedited", base, {})]
        runs = []
        for variant in args.variants:
            method, extra = parse_variant(variant)
            extra = {k: (args.anchor if v == "ANCHOR" else v) for k, v in extra.items()}
            result, stats = timed_erase(pipe, method, [value], iterations=args.iterations, **extra)
            label = variant.replace("ANCHOR", args.anchor)
            result.apply(pipe)
            report = evaluate(pipe, set_name, **kw)
            rows.append((label, report, stats))
            runs.append({"variant": label, **stats, "metrics": report.to_dict()["metrics"]})
            if method == "spm":
                with facilitated_transport(pipe) as ft:
                    report_ft = evaluate(pipe, set_name, **kw)
                mults = [v for rec in ft["multipliers"] for m in rec.values() for v in m]
                stats_ft = {**stats, "multiplier_mean": round(sum(mults) / max(1, len(mults)), 3),
                            "multiplier_min": round(min(mults), 3)}
                rows.append((label + " + facilitated transport", report_ft, stats_ft))
                runs.append({"variant": label + " + FT", **stats_ft, "metrics": report_ft.to_dict()["metrics"]})
            result.restore(pipe)
            print(f"[{time.time() - t_start:.0f}s] {label}: TA {report.value('target_accuracy'):.3f} {stats}", flush=True)
        table = ["| variant | target acc. | synonyms | held-out | in-domain retain | cross-domain retain | erase time | size | peak RSS |",
                 "|---|---|---|---|---|---|---|---|---|"]
        for label, r, s in rows:
            extra = (f" | {s['seconds']:.0f} s | {s['size_kb']:.1f} KB | {s['peak_rss_mb']:.0f} MB "
                     f"(before {s['rss_before_mb']:.0f})" if s else " | | | ")
            table.append(f"| {label} | " + " | ".join(cells(r)) + extra + " |")
        results["single"] = {"concept": args.concept, "runs": runs,
                             "unedited": base.to_dict()["metrics"], "table": table}
        md += [f"## One concept: {args.concept} (anchor {args.anchor}), {args.iterations} iterations", "", *table, ""]
        print("\n".join(table), flush=True)

    if "2" not in skip:
        erased = list(args.mace_shapes)
        before = {s: shape_accuracy(pipe, s, settings, None) for s in SHAPES}
        result, stats = timed_erase(pipe, "mace", erased, **mace_for(erased))
        result.apply(pipe)
        after = {s: shape_accuracy(pipe, s, settings, None) for s in SHAPES}
        result.restore(pipe)
        table = ["| shape | role | unedited | MACE | change |", "|---|---|---|---|---|"]
        for s in SHAPES:
            table.append(f"| {s} | {'erased' if s in erased else 'kept'} | {before[s]:.2f} | {after[s]:.2f} | "
                         f"{after[s] - before[s]:+.2f} |")
        met_erase = all(after[s] <= 0.15 for s in erased)
        met_keep = all(after[s] >= before[s] - 0.10 for s in SHAPES if s not in erased)
        results["mace"] = {"erased": erased, "before": before, "after": after, **stats,
                           "info": dict(result.info), "bars": {"erased<=0.15": met_erase, "kept within 10": met_keep},
                           "table": table}
        md += [f"## MACE, {len(erased)} shapes at once ({stats['seconds']:.0f} s, {stats['size_kb']:.1f} KB, "
               f"{stats['size_kb_per_concept']:.1f} KB per concept, peak RSS {stats['peak_rss_mb']:.0f} MB)", "",
               *table, "", f"bars: each erased <= 15%: {met_erase}; kept within 10 points: {met_keep}", ""]
        print("\n".join(table), flush=True)

    if "3" not in skip:
        n = args.scaling_prompts
        before = {s: shape_accuracy(pipe, s, settings, n) for s in SHAPES}
        curve = []
        for k in args.scaling:
            erased, kept = list(SHAPES[:k]), list(SHAPES[k:])
            result, stats = timed_erase(pipe, "mace", erased, **mace_for(erased))
            result.apply(pipe)
            acc_erased = [shape_accuracy(pipe, s, settings, n) for s in erased]
            acc_kept = [shape_accuracy(pipe, s, settings, n) for s in kept]
            result.restore(pipe)
            point = {"erased": k, "erased_acc": sum(acc_erased) / k, "erased_max": max(acc_erased),
                     "kept_acc": sum(acc_kept) / len(kept), "kept_acc_before": sum(before[s] for s in kept) / len(kept),
                     "worst_kept_change": min(a - before[s] for s, a in zip(kept, acc_kept)), **stats}
            curve.append(point)
            print(f"[{time.time() - t_start:.0f}s] {point}", flush=True)
        results["scaling"] = curve
        plot_scaling(curve, out / "mace_scaling.png")
        table = ["| shapes erased | erased acc. (mean / max) | kept acc. (before -> after) | worst kept shape's change "
                 "| erase time | size |", "|---|---|---|---|---|---|"]
        for c in curve:
            table.append(f"| {c['erased']} | {c['erased_acc']:.2f} / {c['erased_max']:.2f} | "
                         f"{c['kept_acc_before']:.2f} -> {c['kept_acc']:.2f} | {c['worst_kept_change']:+.2f} | "
                         f"{c['seconds']:.0f} s | {c['size_kb']:.1f} KB |")
        md += [f"## MACE scaling (first k shapes of {', '.join(SHAPES)}; {n} target prompts per shape)", "", *table, ""]

    results["seconds"] = round(time.time() - t_start, 1)
    md = [f"# Adapter erasure on the built-in world", "", f"`{results['command']}`", "", *md]
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    (out.parent / f"{out.name}.out").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
