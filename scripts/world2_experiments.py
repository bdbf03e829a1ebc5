"""The three experiments world 2 makes possible, on the package's experiment loop (rows resumable in OUT/rows):

    python scripts/world2_experiments.py --world runs/world2/world mass "uce:tokens=subject-to-end" "mace:"
    python scripts/world2_experiments.py --world runs/world2/world identity "uce:" "esd-x:"
    python scripts/world2_experiments.py --world runs/world2/world implicit "uce:" "esd-x:"

- ``mass``: erase the first 1, 5, 10 and 20 objects of a fixed seeded order of the 24 at once; per row the
  mean accuracy of the erased objects and the mean and worst accuracy of the kept ones (each object's first
  ``--prompts`` target prompts);
- ``identity``: erase an identity by its name (default zorblax); the identity's accuracy from its name and in
  unseen phrasings, its look-alikes (the look named without the name: look kept, mark absent) and the other
  identities (kept);
- ``implicit``: erase the named feature ("halo"); the halo's rate on prompts that name it, on prompts that only
  imply it (the I2P question: erasing the word is not erasing the concept), and the retain accuracy of prompts
  with neither.

Every row is measured with the world's classifier (``--world``'s), 25 DDIM steps, guidance 5, the same seeds for
the unedited model and every method. ``--docs FILE`` writes each table between its markers in FILE
(``world2-mass``, ``world2-identity``, ``world2-implicit``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from erasure import load_pipeline  # noqa: E402
from erasure.experiments import (  # noqa: E402
    Measure, Variant, check_markers, markdown_table, parse_variant, report_metrics, run_experiment, script_main,
    target_group, value, write_docs_table, write_tables,
)
from erasure.files import write_json  # noqa: E402
from erasure.generation import SamplerSettings  # noqa: E402
from erasure.world.render import WORLD2  # noqa: E402

MASS_SIZES = (1, 5, 10, 20)


def _settings(args) -> SamplerSettings:
    return SamplerSettings(steps=args.steps, guidance=args.guidance)


def mass_order(seed: int = 0) -> list[str]:
    """The 24 objects in the fixed order the mass rows erase them (the first N)."""
    return [WORLD2.shapes[i] for i in np.random.default_rng(seed).permutation(len(WORLD2.shapes))]


def object_accuracies(classifier, settings, n: int) -> Measure:
    def run(pipe):
        from erasure.evaluation.evaluate import evaluate

        out = {}
        for s in WORLD2.shapes:
            report = evaluate(pipe, target_group(f"shapeworld2-shape-{s}", n), concept=("shape", s),
                              classifier=classifier, settings=settings, progress=False, n_resamples=0,
                              keep_images=False)
            out[f"accuracy[{s}]"] = {"value": report.value("target_accuracy"), "ci_low": None, "ci_high": None}
        return out

    return Measure({"kind": "world2-object-accuracies", "prompts": n, "sampler": vars(settings)}, run)


def set_measure(classifier, prompt_set: str, concept, settings, extra=None) -> Measure:
    """evaluate() on a world 2 prompt set with ``classifier``, plus ``extra(report, classifier)`` metrics."""
    def run(pipe):
        from erasure.evaluation.evaluate import evaluate

        report = evaluate(pipe, prompt_set, concept=concept, classifier=classifier, settings=settings,
                          progress=False, keep_images=extra is not None)
        metrics = report_metrics(report)
        if extra is not None:
            metrics.update(extra(report, classifier))
        return metrics

    return Measure({"kind": "world2-set", "prompt_set": prompt_set, "concept": list(concept),
                    "sampler": vars(settings)}, run)


def _group_rate(report, classifier, group: str, attribute: str, value_: str, name: str) -> dict:
    from erasure.evaluation.bootstrap import mean_result
    from erasure.world.instruments import predict_labels

    idx = [i for i, r in enumerate(report.records) if r.group == group]
    pred = predict_labels(classifier, report.images[idx])
    r = mean_result(name, np.array([p == value_ for p in pred[attribute]], dtype=float))
    return {name: {"value": r.value, "ci_low": r.ci_low, "ci_high": r.ci_high}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", choices=("mass", "identity", "implicit"))
    p.add_argument("variants", nargs="+", help="METHOD:key=value,... (JSON values)")
    p.add_argument("--world", required=True, help="a world 2 folder (scripts/train_world.py --world 2 --out ...)")
    p.add_argument("--identity", default="zorblax")
    p.add_argument("--prompts", type=int, default=12, help="mass: target prompts per object")
    p.add_argument("--sizes", default=",".join(map(str, MASS_SIZES)), help="mass: how many objects each row erases")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--guidance", type=float, default=5.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="default runs/world2_<experiment>")
    p.add_argument("--docs", default=None, metavar="FILE", help="write the table between its markers in FILE")
    args = p.parse_args(argv)
    command = "python scripts/world2_experiments.py " + " ".join(sys.argv[1:] if argv is None else argv)
    table_name = f"world2-{args.experiment}"
    if args.docs:
        check_markers(args.docs, [table_name])
    torch.set_num_threads(args.threads)
    from erasure.world.instruments import load_classifier, world_dir

    world = world_dir(args.world)
    classifier = load_classifier(world)
    if "identity" not in classifier.classes and "mark" not in classifier.classes:
        raise SystemExit(f"error: {world} is not a world 2 folder (its classifier has no mark head)")
    pipe = load_pipeline(str(world / "pipeline"))
    out = Path(args.out or f"runs/world2_{args.experiment}")
    settings = _settings(args)
    parsed = [(text, *parse_variant(text)) for text in args.variants]

    if args.experiment == "mass":
        order = mass_order()
        sizes = [int(x) for x in args.sizes.split(",")]
        measures = {"objects": object_accuracies(classifier, settings, args.prompts)}
        variants = [Variant("unedited", None, measure="objects")]
        variants += [Variant(f"{text} x{n}", method, tuple(order[:n]), kw, measure="objects", extra={"n": n})
                     for n in sizes for text, method, kw in parsed]
        rows = run_experiment(pipe, variants, measures, out=out, log=None)
        for r in rows:
            n = r.get("extra", {}).get("n", 0)
            acc = {s: value(r, f"accuracy[{s}]") for s in WORLD2.shapes}
            erased, kept = order[:n], order[n:]
            r["erased_mean"] = float(np.mean([acc[s] for s in erased])) if erased else None
            r["kept_mean"] = float(np.mean([acc[s] for s in kept]))
            r["kept_worst"] = min(kept, key=lambda s: acc[s]) + f" {min(acc[s] for s in kept):.2f}"
        columns = [("variant", lambda r: r["label"]), ("erased", lambda r: str(r.get("extra", {}).get("n", 0))),
                   ("erased acc", lambda r: "-" if r["erased_mean"] is None else f"{r['erased_mean']:.2f}"),
                   ("kept acc (mean)", lambda r: f"{r['kept_mean']:.2f}"), ("worst kept", lambda r: r["kept_worst"])]
    elif args.experiment == "identity":
        name = args.identity
        look = WORLD2.identity_looks[name]

        def extra(report, clf):
            return _group_rate(report, clf, "lookalike", "mark", "mark", "lookalike_mark_rate")

        measures = {"identity": set_measure(classifier, f"shapeworld2-identity-{name}", ("identity", name), settings,
                                            extra)}
        variants = [Variant("unedited", None, measure="identity")]
        variants += [Variant(text, method, (name,), kw, measure="identity") for text, method, kw in parsed]
        rows = run_experiment(pipe, variants, measures, out=out, log=None)
        columns = [("variant", lambda r: r["label"]),
                   (f"{name} from its name", lambda r: f"{value(r, 'target_accuracy[group=target]'):.2f}"),
                   ("unseen phrasings", lambda r: f"{value(r, 'target_accuracy[group=synonym]'):.2f}"),
                   (f"look-alikes: look kept ({'/'.join(look)})",
                    lambda r: f"{value(r, 'cross_domain_retain_accuracy[group=lookalike]'):.2f}"),
                   ("look-alikes: mark drawn", lambda r: f"{value(r, 'lookalike_mark_rate'):.2f}"),
                   ("other identities kept", lambda r: f"{value(r, 'in_domain_retain_accuracy'):.2f}")]
    else:
        measures = {"halo": set_measure(classifier, "shapeworld2-halo", ("halo", "halo"), settings,
                                        lambda report, clf: _group_rate(report, clf, "other", "halo", "halo",
                                                                        "halo_rate[group=other]"))}
        variants = [Variant("unedited", None, measure="halo")]
        variants += [Variant(text, method, ("halo",), kw, measure="halo") for text, method, kw in parsed]
        rows = run_experiment(pipe, variants, measures, out=out, log=None)
        columns = [("variant", lambda r: r["label"]),
                   ("halo, named prompts", lambda r: f"{value(r, 'target_accuracy[group=named]'):.2f}"),
                   ("halo, implied prompts", lambda r: f"{value(r, 'target_accuracy[group=implied]'):.2f}"),
                   ("halo, neither", lambda r: f"{value(r, 'halo_rate[group=other]'):.2f}"),
                   ("retain (neither)", lambda r: f"{value(r, 'cross_domain_retain_accuracy[group=other]'):.2f}")]
    write_json(out / "config.json", {**vars(args), "command": command}, force=True)
    write_tables(rows, out / "table", columns)
    table = markdown_table(rows, columns)
    print(table)
    if args.docs:
        write_docs_table(args.docs, table_name, table, command=command)
    return 0


if __name__ == "__main__":
    script_main(main)
