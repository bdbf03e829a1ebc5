"""Quality at equal settings: our ESD trainer against the reference-style loop, on the built-in world.

Both erase the same concept with the same method (esd-x), anchor, lr, eta and number of training
samples; the reference-style loop (``erasure.reference.reference_loop``, the oracle tests/test_training.py
checks the trainer against: a deep-copied teacher and a fresh partial DDIM trajectory every iteration, batch 1) against ours (``sampling="frozen"``: one pool of
trajectories with cached teacher predictions), at batch 1 like the reference and at our default batch.
Each edit is measured by the evaluator on the same prompt set, seeds and sampler, and the script says
whether each of ours' numbers lies inside the reference's 95% bootstrap interval. Writes OUT/results.json and, with
``--docs``, the table between the ``esd-vs-reference`` markers of docs/methods.md.

    python scripts/esd_vs_reference.py --threads 1 --out runs/esd_vs_reference   # ~25 min on one thread
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from erasure.reference import reference_loop  # noqa: E402
from erasure.experiments import REPORT_KEYS as KEYS  # noqa: E402
from erasure.experiments import check_markers, script_main, write_docs_table  # noqa: E402
from erasure.files import write_json  # noqa: E402

from erasure import load_pipeline  # noqa: E402
from erasure.evaluation.evaluate import evaluate  # noqa: E402
from erasure.generation import SamplerSettings  # noqa: E402
from erasure.methods import erase  # noqa: E402
from erasure.methods.esd import PassCounter  # noqa: E402
from erasure.modules import parameter_group  # noqa: E402

TABLE = "esd-vs-reference"
LABELS = {"target_accuracy": "target", "target_accuracy[group=synonym]": "synonyms",
          "target_accuracy[group=held-out]": "held-out", "in_domain_retain_accuracy": "in-domain retain",
          "cross_domain_retain_accuracy": "cross-domain retain"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concept", default="shape=circle", help="ATTRIBUTE=VALUE")
    p.add_argument("--anchor", default="square")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--eta", type=float, default=1.0)
    p.add_argument("--samples", type=int, default=800, help="training samples per trainer")
    p.add_argument("--batch", type=int, default=4, help="ours' second run: its batch size")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--guidance", type=float, default=5.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/esd_vs_reference")
    p.add_argument("--docs", nargs="?", const="docs/methods.md", default=None, metavar="FILE",
                   help=f"also write the table between the {TABLE} markers in FILE (default docs/methods.md)")
    args = p.parse_args(argv)
    command = "python scripts/esd_vs_reference.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.docs:
        check_markers(args.docs, [TABLE])
    if args.samples % args.batch:
        p.error(f"--samples ({args.samples}) must be a multiple of --batch ({args.batch})")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    attribute, value = args.concept.split("=")
    set_name = f"shapeworld-{attribute}-{value}"
    settings = SamplerSettings(steps=args.steps, guidance=args.guidance)
    pipe = load_pipeline(None)
    kw = dict(concept=(attribute, value), settings=settings, progress=False)
    rows = {"unedited": (evaluate(pipe, set_name, **kw), None, None)}

    # reference-style loop: batch 1, `samples` iterations
    counter = PassCounter()
    t0 = time.time()
    new_values, _ = reference_loop(pipe, value, iterations=args.samples, lr=args.lr, eta=args.eta,
                                   counter=counter, anchor=args.anchor)
    seconds = time.time() - t0
    params = parameter_group(pipe.unet, "esd-x")
    originals = {n: p.detach().clone() for n, p in params.items()}
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(new_values[n])
    rows["reference-style loop, batch 1"] = (evaluate(pipe, set_name, **kw), seconds, counter.total)
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(originals[n])
    print(f"reference: {seconds:.0f} s, {counter.total} passes", flush=True)

    for batch in sorted({1, args.batch}):
        counter = PassCounter()
        t0 = time.time()
        edit = erase(pipe, "esd-x", [value], anchor=args.anchor, lr=args.lr, eta=args.eta, batch_size=batch,
                     iterations=args.samples // batch, sampling="frozen", progress=False, counter=counter,
                     retain_prompts=())  # the reference's objective (no retain term; the world's default has one)
        seconds = time.time() - t0
        edit.apply(pipe)
        rows[f"ours (sampling=frozen), batch {batch}"] = (evaluate(pipe, set_name, **kw), seconds, counter.total)
        edit.restore(pipe)
        print(f"ours batch {batch}: {seconds:.0f} s, {counter.total} passes", flush=True)

    ref = rows["reference-style loop, batch 1"][0]
    table = [f"| trainer | {' | '.join(LABELS[k] for k in KEYS)} | inside the reference's intervals | UNet passes | seconds |",
             "|---|" + "---|" * (len(KEYS) + 3)]
    results = {"settings": vars(args), "command": command, "rows": {}}
    for label, (report, seconds, passes) in rows.items():
        cells = [f"{report.value(k):.2f} [{report.metrics[k].ci_low:.2f}, {report.metrics[k].ci_high:.2f}]"
                 for k in KEYS]
        inside = [ref.metrics[k].ci_low <= report.value(k) <= ref.metrics[k].ci_high for k in KEYS]
        verdict = "" if label == "unedited" or label.startswith("reference") else f"{sum(inside)} of {len(KEYS)}"
        table.append(f"| {label} | {' | '.join(cells)} | {verdict} | {passes or ''} | "
                     f"{'' if seconds is None else f'{seconds:.0f}'} |")
        results["rows"][label] = {"metrics": report.to_dict()["metrics"], "seconds": seconds, "passes": passes,
                                  "inside_reference_ci": dict(zip(KEYS, inside))}
    results["table"] = table
    write_json(out / "results.json", json.loads(json.dumps(results, default=str)), force=True)
    print("\n".join(table))
    if args.docs:
        write_docs_table(args.docs, TABLE, "\n".join(table), command=command)
        print(f"wrote {TABLE} into {args.docs}")
    return 0


if __name__ == "__main__":
    script_main(main)
