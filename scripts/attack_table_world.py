"""Robustness table on the built-in world: pre-ASR and ASR of every attack against each method's erasure of each
concept, with 95% bootstrap CIs, as a markdown table (with ``--docs``, between the ``attacks-world`` markers of
docs/attacks.md, with its command; each attack's seconds are printed after the table).

    python scripts/attack_table_world.py --threads 1 --methods uce --concepts circle --prompts 12 \\
        --set unlearndiffatk:timesteps=3 --set unlearndiffatk:steps_per_timestep=5 --set cce:steps=50 [--docs]

The unedited model's row is its baseline: its pre-ASR is how often the concept comes out at all. Each method
erases with its spec's world-test settings (a short run that erases on the world), or with ``--defaults`` at its
defaults, and the anchor below.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from erasure.experiments import check_markers, markdown_table, script_main, write_docs_table  # noqa: E402

TABLE = "attacks-world"
ANCHORS = {"circle": "square", "striped": "plain"}


def with_ci(m) -> str:
    return f"{m.value:.2f} [{m.ci_low:.2f}, {m.ci_high:.2f}]"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["uce"])
    parser.add_argument("--concepts", nargs="+", default=["circle", "striped"])
    parser.add_argument("--attacks", nargs="+", default=["unlearndiffatk", "ring-a-bell", "completion", "cce"])
    parser.add_argument("--prompts", type=int, default=40)
    parser.add_argument("--set", action="append", default=[], help="ATTACK:KEY=VALUE, repeatable")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unedited model's row")
    parser.add_argument("--defaults", action="store_true",
                        help="each method erases at its defaults (what `erasure erase` runs) instead of its spec's "
                             "short world-test settings; the concept's anchor either way")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="keep each (concept, method) row's numbers in DIR as it finishes; a rerun reads them back")
    parser.add_argument("--docs", nargs="?", const="docs/attacks.md", default=None, metavar="FILE",
                        help=f"also write the table between the {TABLE} markers in FILE (default docs/attacks.md)")
    args = parser.parse_args(argv)
    command = "python scripts/attack_table_world.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.docs:
        check_markers(args.docs, [TABLE])
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
    import hashlib
    from types import SimpleNamespace

    from erasure.files import write_json

    pipe = erasure.load_pipeline("shapeworld")
    rows = []
    out = Path(args.out) if args.out else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    for concept in args.concepts:
        for method in ([None] if not args.no_baseline else []) + list(args.methods):
            result, label = None, method or "unedited"
            spec = METHODS.get(method) if method is not None else None
            kwargs = dict(spec.world_test_settings) if spec is not None and not args.defaults else {}
            if spec is not None and spec.anchor_setting and concept in ANCHORS:
                kwargs[spec.anchor_setting] = ANCHORS[concept]
            key = hashlib.sha256(json.dumps([concept, method, kwargs, args.attacks, settings, args.prompts, args.seed],
                                            sort_keys=True, default=str).encode()).hexdigest()[:20]
            cached = out / f"{key}.json" if out is not None else None
            if cached is not None and cached.is_file():
                stored = json.loads(cached.read_text())
                cells = {a: SimpleNamespace(metrics={k: SimpleNamespace(**m) for k, m in ms.items()})
                         for a, ms in stored["cells"].items()}
                rows.append({"concept": concept, "method": stored["method"], "cells": cells,
                             "seconds": stored["seconds"]})
                print(f"{concept} / {stored['method']}: read back from {cached}")
                continue
            if method is not None:
                # kwargs: the concept's anchor, over the world-test settings' own (written for the circle: a
                # texture anchored to "square" is not erased, which the table would show as the attack's success)
                if spec.anchor_setting in kwargs:
                    label = f"{method} ({spec.anchor_setting} {kwargs[spec.anchor_setting]})"
                result = erase(pipe, method, [concept], **kwargs)
            cells, seconds = {}, {}
            cache: dict = {}  # the plain prompts' images of both models, made by the first attack, reused by the rest
            for name in args.attacks:
                start = time.perf_counter()
                report = attack(pipe, name, concept, None, result=result, limit=args.prompts, seed=args.seed,
                                original_pipe=pipe if result is None else None, attack_settings=settings.get(name, {}),
                                image_cache=cache)
                cells[name] = report
                seconds[name] = time.perf_counter() - start
            rows.append({"concept": concept, "method": label, "cells": cells, "seconds": seconds})
            if cached is not None:
                write_json(cached, {"concept": concept, "method": label, "seconds": seconds, "cells": {
                    a: {k: {"value": m.value, "ci_low": m.ci_low, "ci_high": m.ci_high}
                        for k, m in r.metrics.items() if k in ("pre_asr", "asr")} for a, r in cells.items()}},
                           force=True)
    print(f"Built-in world, first {args.prompts} prompts naming the concept, judge: the world's classifier, methods at "
          f"{'their defaults' if args.defaults else 'their world-test settings'}. "
          f"Attack settings: {settings}")
    # pre-ASR: the first attack's (every attack starts from the same prompts and seeds)
    columns = [("concept", lambda r: r["concept"]), ("method", lambda r: r["method"]),
               ("pre-ASR", lambda r: with_ci(next(iter(r["cells"].values())).metrics["pre_asr"]))]
    columns += [(f"{a} ASR", lambda r, a=a: with_ci(r["cells"][a].metrics["asr"])) for a in args.attacks]
    table = markdown_table(rows, columns)
    print(table)
    for r in rows:
        print(f"seconds, {r['concept']} / {r['method']}: "
              + ", ".join(f"{a} {s:.0f}" for a, s in r["seconds"].items()))
    if args.docs:
        write_docs_table(args.docs, TABLE, table, command=command)
        print(f"wrote {TABLE} into {args.docs}")
    return 0


if __name__ == "__main__":
    script_main(main)
