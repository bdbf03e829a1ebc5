"""Robustness table on the built-in world: pre-ASR and ASR of every attack against each method's erasure of each
concept, with 95% bootstrap CIs, as a markdown table (docs/attacks.md holds the one this produced, with its
command).

    python scripts/attack_table_world.py --threads 1 --methods uce --concepts circle --prompts 12 \\
        --set unlearndiffatk:timesteps=3 --set unlearndiffatk:steps_per_timestep=5 --set cce:steps=50

The unedited model's row is its baseline: its pre-ASR is how often the concept comes out at all. Each method
erases with its spec's world-test settings (a short run that erases on the world) and the anchor below.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ANCHORS = {"circle": "square", "striped": "plain"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["uce"])
    parser.add_argument("--concepts", nargs="+", default=["circle", "striped"])
    parser.add_argument("--attacks", nargs="+", default=["unlearndiffatk", "ring-a-bell", "completion", "cce"])
    parser.add_argument("--prompts", type=int, default=40)
    parser.add_argument("--set", action="append", default=[], help="ATTACK:KEY=VALUE, repeatable")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unedited model's row")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    import erasure
    from erasure.attacks import attack
    from erasure.methods import METHODS, erase

    settings: dict[str, dict] = {a: {} for a in args.attacks}
    for item in args.set:
        name, _, rest = item.partition(":")
        key, _, value = rest.partition("=")
        try:
            settings.setdefault(name, {})[key] = json.loads(value)
        except json.JSONDecodeError:
            settings.setdefault(name, {})[key] = value
    pipe = erasure.load_pipeline("shapeworld")
    rows = []
    for concept in args.concepts:
        for method in ([None] if not args.no_baseline else []) + list(args.methods):
            result = None
            if method is not None:
                spec = METHODS.get(method)
                kwargs = dict(spec.world_test_settings)
                if spec.anchor_setting and concept in ANCHORS:
                    kwargs.setdefault(spec.anchor_setting, ANCHORS[concept])
                result = erase(pipe, method, [concept], **kwargs)
            cells, seconds = {}, {}
            for name in args.attacks:
                start = time.perf_counter()
                report = attack(pipe, name, concept, None, result=result, limit=args.prompts, seed=args.seed,
                                original_pipe=pipe if result is None else None, attack_settings=settings.get(name, {}))
                cells[name] = report
                seconds[name] = time.perf_counter() - start
            rows.append((concept, method or "unedited", cells, seconds))
    print(f"Built-in world, first {args.prompts} prompts naming the concept, judge: the world's classifier. "
          f"Attack settings: {settings}")
    header = "| concept | method | pre-ASR | " + " | ".join(f"{a} ASR" for a in args.attacks) + " |"
    print(header)
    print("|" + "---|" * (3 + len(args.attacks)))
    for concept, method, cells, seconds in rows:
        first = next(iter(cells.values())).metrics["pre_asr"]
        values = " | ".join(f"{r.metrics['asr'].value:.2f} [{r.metrics['asr'].ci_low:.2f}, {r.metrics['asr'].ci_high:.2f}] "
                            f"({seconds[a]:.0f} s)" for a, r in cells.items())
        print(f"| {concept} | {method} | {first.value:.2f} [{first.ci_low:.2f}, {first.ci_high:.2f}] | {values} |")


if __name__ == "__main__":
    main()
