"""ESD on the built-in world: one shape and one texture erased with each parameter group, against the
unedited model measured in the same run. Prints the README's ESD table and writes results.json.

    python scripts/esd_world.py --out runs/esd_world            # ~15 min on 2 CPU cores
    python scripts/esd_world.py --variants esd-x:lr=1e-4,eta=2   # your own settings
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
from erasure.methods import erase  # noqa: E402

DEFAULT_VARIANTS = ["esd-x:lr=1e-4,eta=2", "esd-x-strict:lr=1e-3,eta=2", "esd-u:lr=3e-4,eta=2",
                    "esd-x:lr=3e-4,anchor=ANCHOR", "esd-x:lr=1e-4,anchor=ANCHOR"]
from erasure.experiments import REPORT_KEYS as KEYS, parse_variant  # noqa: E402, F401


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
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = SamplerSettings(steps=args.steps, guidance=args.guidance)
    pipe = load_pipeline(None)
    table = ["| concept | variant | target acc. | synonyms | held-out | in-domain retain | cross-domain retain | erase time |",
             "|---|---|---|---|---|---|---|---|"]
    results = {"settings": vars(args), "runs": []}
    for concept in args.concepts:
        attribute, value = concept.split("=")
        set_name = f"shapeworld-{attribute}-{value}"
        kw = dict(concept=(attribute, value), settings=settings, progress=False)
        base = evaluate(pipe, set_name, **kw)
        rows = [("unedited", base, None)]
        for variant in args.variants:
            method, extra = parse_variant(variant)
            anchors = dict(a.split("=") for a in args.anchors)
            extra = {k: (anchors[attribute] if v == "ANCHOR" else v) for k, v in extra.items()}
            t0 = time.time()
            edit = erase(pipe, method, [value], iterations=args.iterations, progress=False, **extra)
            seconds = time.time() - t0
            edit.apply(pipe)
            report = evaluate(pipe, set_name, **kw)
            edit.restore(pipe)
            report.save(out / f"{value}-{variant.replace(':', '_').replace(',', '_')}", force=True, baseline=base)
            rows.append((variant.replace("ANCHOR", extra.get("anchor", "")), report, seconds))
            results["runs"].append({"concept": concept, "variant": variant, "seconds": round(seconds, 1),
                                    "metrics": report.to_dict()["metrics"], "final_loss": edit.info["final_loss"]})
            print(f"{concept} {variant}: TA {report.value('target_accuracy'):.3f} ({seconds:.0f} s)", flush=True)
        results["runs"].append({"concept": concept, "variant": "unedited", "metrics": base.to_dict()["metrics"]})
        for label, r, seconds in rows:
            cells = [f"{r.value(k):.2f} [{r.metrics[k].ci_low:.2f}, {r.metrics[k].ci_high:.2f}]" if k in r.metrics else "n/a"
                     for k in KEYS]
            table.append(f"| {concept} | {label} | " + " | ".join(cells) + f" | {'' if seconds is None else f'{seconds:.0f} s'} |")
    results["table"] = table
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    print("\n".join(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
