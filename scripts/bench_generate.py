"""Benchmark `erasure generate` on the built-in world: 16 images at 25 steps.

Baseline, in the same process: one plain diffusers pipeline call for the same 16 prompts
(one shared generator), so the ratio shows what per-image seeding costs.

    python scripts/bench_generate.py [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from erasure.generation import SamplerSettings, generate_images  # noqa: E402
from erasure.models import load_pipeline  # noqa: E402

PROMPTS = ["a red star", "a striped blue heart", "a dotted yellow crescent", "a checkered green square"] * 4


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--guidance", type=float, default=7.5)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t = time.perf_counter()
    pipe = load_pipeline(args.model, device="cpu", dtype="fp32")
    load_s = time.perf_counter() - t
    pipe.set_progress_bar_config(disable=True)
    settings = SamplerSettings(steps=args.steps, guidance=args.guidance)
    seeds = list(range(len(PROMPTS)))

    def ours():
        generate_images(pipe, PROMPTS, seeds, settings, batch_size=16, progress=False)

    def plain():
        with torch.no_grad():
            pipe(PROMPTS, num_inference_steps=args.steps, guidance_scale=args.guidance,
                 generator=torch.Generator().manual_seed(0), output_type="np")

    ours(), plain()  # warm-up
    rows = {}
    for name, fn in (("diffusers pipeline call (baseline)", plain), ("erasure generate_images", ours)):
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        rows[name] = statistics.median(times)
    base = rows["diffusers pipeline call (baseline)"]
    print(f"model: {args.model or 'shapeworld'}  load: {load_s:.2f} s  threads: {args.threads}  "
          f"images: {len(PROMPTS)}  steps: {args.steps}  guidance: {args.guidance}  repeats: {args.repeats} (median)")
    print("| run | seconds for 16 images | images/s | ratio to baseline |\n|---|---|---|---|")
    for name, s in rows.items():
        print(f"| {name} | {s:.2f} | {len(PROMPTS) / s:.1f} | {s / base:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
