"""Does the evaluator agree with the world's quality table? (issue 3's "done when")

Runs `erasure.evaluate` on the quality table's own captions ("a {texture} {colour} {shape}", seeds 0..3,
25 steps, guidance 5), then reads each shape's target accuracy from the report and pools them over the
seen and held-out combinations: the numbers must match the README's quality table (same images, same
classifier, computed by two code paths).

    python scripts/check_evaluator_vs_quality.py [--seeds 4] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from erasure import load_pipeline  # noqa: E402
from erasure.evaluation.classifier_metrics import target_accuracy  # noqa: E402
from erasure.evaluation.evaluate import WORLD_SETTINGS, evaluate  # noqa: E402
from erasure.evaluation.prompts import PromptRecord, PromptSet  # noqa: E402
from erasure.world.instruments import load_classifier, predict_labels  # noqa: E402
from erasure.world.quality import generation_cases  # noqa: E402
from erasure.world.render import SHAPES  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quality-json", default="runs/world/quality.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    pipe = load_pipeline()
    cases = generation_cases()
    records = tuple(PromptRecord(case_number=i, prompt=c.prompt, evaluation_seed=0, concept=c.shape,
                                 group="held-out" if c.held_out else "seen",
                                 extra={"shape": c.shape, "colour": c.colour, "texture": c.texture})
                    for i, c in enumerate(cases))
    pset = PromptSet(name="quality-captions", records=records)
    report = evaluate(pipe, pset, settings=WORLD_SETTINGS, samples_per_prompt=args.seeds, progress=False)
    predictions = predict_labels(load_classifier(), report.images)
    expanded = tuple(r for r in records for _ in range(args.seeds))
    out = {}
    for group in ("seen", "held-out"):
        hits = n = 0
        for shape in SHAPES:
            res = target_accuracy(expanded, predictions, ("shape", shape), n_resamples=0)
            key = f"target_accuracy[group={group}]"
            if key in res:
                hits += res[key].value * res[key].n
                n += res[key].n
        out[group] = {"evaluator_shape_accuracy": hits / n, "n": n}
    quality = json.loads(Path(args.quality_json).read_text())["generated"] if Path(args.quality_json).is_file() else {}
    print("| combinations | evaluator (target accuracy pooled over shapes) | quality table | n |\n|---|---|---|---|")
    for group, r in out.items():
        q = quality.get(group, {}).get("shape")
        print(f"| {group} | {r['evaluator_shape_accuracy']:.4f} | {q if q is None else f'{q:.4f}'} | {r['n']} |")
    ok = all(quality.get(g, {}).get("shape") is not None and
             np.isclose(out[g]["evaluator_shape_accuracy"], quality[g]["shape"], atol=1.5 / out[g]["n"]) for g in out)
    print("agree within one image" if ok else "DISAGREE (or no quality.json to compare with)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
