"""Sweep mass-erasure settings on the built-in world: erase circle, triangle, heart and crescent at once
with each given variant and print every shape's accuracy on its first N target prompts (JSON lines),
against the unedited model measured in the same run. A quick way to pick settings before a full run of
``closed_form_world.py`` / ``adapters_world.py`` (which use all 40 prompts).

    python scripts/mass_erasure_sweep.py --prompts 20 \\
        "uce:tokens=subject-to-end,preserve_scale=2.0,guide=KEPT,templates=shapeworld-captions" \\
        "mace:anchor=KEPT,preserve_scale=10,cfr_preserve_scale=3,templates=shapeworld-captions"

``KEPT`` stands for the kept shapes (square, star, cross, diamond), one per erased shape, in order.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from erasure.experiments import shape_accuracy  # noqa: E402
from erasure.experiments import parse_variant  # noqa: E402

from erasure import load_pipeline  # noqa: E402
from erasure.generation import SamplerSettings  # noqa: E402
from erasure.methods import erase  # noqa: E402
from erasure.world.render import SHAPES  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("variants", nargs="+", help="METHOD:key=value,... (JSON values; KEPT = the kept shapes)")
    p.add_argument("--prompts", type=int, default=20, help="target prompts per shape")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--guidance", type=float, default=5.0)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    pipe = load_pipeline(None)
    settings = SamplerSettings(steps=args.steps, guidance=args.guidance)
    erased, kept = list(SHAPES[::2]), list(SHAPES[1::2])
    t0 = time.time()
    before = {s: shape_accuracy(pipe, s, settings, args.prompts) for s in SHAPES}
    print(json.dumps({"variant": "unedited", "acc": before}), flush=True)
    for variant in args.variants:
        method, kw = parse_variant(variant)
        kw = {k: (kept if v == "KEPT" else v) for k, v in kw.items()}
        if method == "mace":
            kw["progress"] = False
        result = erase(pipe, method, erased, **kw)
        result.apply(pipe)
        after = {s: shape_accuracy(pipe, s, settings, args.prompts) for s in SHAPES}
        result.restore(pipe)
        worst_erased = max(after[s] for s in erased)
        worst_drop = max(before[s] - after[s] for s in kept)
        print(json.dumps({"variant": variant, "acc": after, "max_erased": worst_erased,
                          "max_kept_drop": round(worst_drop, 3),
                          "meets": worst_erased <= 0.15 and worst_drop <= 0.10 + 1e-9,
                          "seconds": round(time.time() - t0)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
