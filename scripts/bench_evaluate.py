"""Benchmark the evaluator on the built-in world: generation images/s by batch size, and metric throughput.

Generation: the same prompts and seeds at each batch size; the baseline is batch size 1 in the same
process, so the table shows what batching buys. The last column is the largest pixel difference from
batch size 1 (CPU kernels differ by a rounding step between batch sizes; for a fixed batch size the
images are exact, and `generate_to_folder` pads every batch to it).
Metrics: the world's classifier (labels and FID features), its CLIP image tower, FID and KID on those
features, and a bootstrap interval, each as items/s on the same images.

    python scripts/bench_evaluate.py [--images 64] [--batch-sizes 1 4 16 32 64] [--threads 1] [--repeats 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from erasure.evaluation.bootstrap import mean_result  # noqa: E402
from erasure.evaluation.distances import fid, kid  # noqa: E402
from erasure.evaluation.evaluate import WORLD_SETTINGS  # noqa: E402
from erasure.generation import generate_images  # noqa: E402
from erasure.models import load_pipeline  # noqa: E402
from erasure.world.instruments import (  # noqa: E402
    classifier_features,
    clip_embed_images,
    load_classifier,
    load_clip,
    predict_labels,
)
from erasure.world.render import COLOURS, SHAPES  # noqa: E402


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 16, 32, 64])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    pipe = load_pipeline(None, device="cpu", dtype="fp32")
    pipe.set_progress_bar_config(disable=True)
    colours = list(COLOURS)
    prompts = [f"a {colours[i % len(colours)]} {SHAPES[(i // len(colours)) % len(SHAPES)]}" for i in range(args.images)]
    seeds = list(range(args.images))
    generate_images(pipe, prompts[:4], seeds[:4], WORLD_SETTINGS, batch_size=4, progress=False)  # warm-up

    print(f"built-in world, {args.images} images, {WORLD_SETTINGS.steps} steps, guidance {WORLD_SETTINGS.guidance}, "
          f"threads {args.threads}, median of {args.repeats}")
    print("\n| generation batch size | seconds | images/s | speed vs batch 1 | max pixel diff vs batch 1 (0-255) |"
          "\n|---|---|---|---|---|")
    rows, images = {}, None
    for bs in args.batch_sizes:
        holder = {}

        def run():
            holder["images"] = generate_images(pipe, prompts, seeds, WORLD_SETTINGS, batch_size=bs, progress=False)

        rows[bs] = _median_time(run, args.repeats)
        if images is None:
            images = holder["images"]
        diff = int(np.abs(images.astype(int) - holder["images"].astype(int)).max())
        print(f"| {bs} | {rows[bs]:.2f} | {args.images / rows[bs]:.1f} | {rows[args.batch_sizes[0]] / rows[bs]:.2f}x "
              f"| {diff} |", flush=True)

    classifier, clip = load_classifier(), load_clip()
    many = np.concatenate([images] * max(1, 1024 // len(images)))[:1024]
    feats = classifier_features(classifier, many)
    half = len(feats) // 2
    scores = (np.arange(len(many)) % 3 == 0).astype(float)
    metrics = [
        ("classifier labels", len(many), lambda: predict_labels(classifier, many)),
        ("classifier features (FID/KID)", len(many), lambda: classifier_features(classifier, many)),
        ("world CLIP image embeddings", len(many), lambda: clip_embed_images(clip, many)),
        (f"FID, {half} vs {half} features, no interval", 2 * half,
         lambda: fid(feats[:half], feats[half:], n_resamples=0)),
        (f"KID, {half} vs {half} features, 1000 resamples", 2 * half,
         lambda: kid(feats[:half], feats[half:], n_resamples=1000)),
        ("bootstrap 95% interval, 1000 resamples", len(many), lambda: mean_result("x", scores, n_resamples=1000)),
    ]
    print("\n| metric | items | seconds | items/s | share of generating them |\n|---|---|---|---|---|")
    gen_per_image = rows[max(rows, key=lambda b: args.images / rows[b])] / args.images
    for name, n, fn in metrics:
        fn()  # warm-up
        s = _median_time(fn, args.repeats)
        print(f"| {name} | {n} | {s:.3f} | {n / s:.0f} | {s / (n * gen_per_image):.3f}x |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
