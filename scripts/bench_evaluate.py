"""Benchmark the evaluator on the built-in world: generation images/s by batch size, and metric throughput.

Generation: the same prompts and seeds at each batch size; the baseline is batch size 1 in the same
process, so the table shows what batching buys. The last column is the largest pixel difference from
batch size 1 (CPU kernels differ by a rounding step between batch sizes; for a fixed batch size the
images are exact, and `generate_to_folder` pads every batch to it).
Metrics: the world's classifier (labels and FID features), its CLIP image tower, FID and KID on those
features, and a bootstrap interval, each as items/s on the same images.

    python scripts/bench_evaluate.py [--images 64] [--batch-sizes 1 4 16 32 64] [--threads 1] [--repeats 2] [--docs]

Prints both tables as markdown; with ``--docs`` writes them between the ``evaluate-throughput`` and
``evaluate-metrics-cost`` markers of docs/evaluation.md.
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
from erasure.experiments import check_markers, markdown_table, script_main, write_docs_table  # noqa: E402
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

TABLES = ("evaluate-throughput", "evaluate-metrics-cost")  # generation by batch size; the metrics' cost


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _items_per_s(x: float) -> str:
    """303, 5.9k, 175k."""
    return f"{x:.0f}" if x < 1000 else f"{x / 1000:.1f}k" if x < 10_000 else f"{x / 1000:.0f}k"


def _seconds(x: float) -> str:
    return f"{x:.2f}" if x >= 1 else f"{x:.3f}"


def _cost(x: float) -> str:
    return "<0.001x" if x < 0.001 else f"{x:.3f}x"


def _print_row(row: dict, columns) -> None:
    print(markdown_table([row], columns).splitlines()[-1], flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 16, 32, 64])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--docs", nargs="?", const="docs/evaluation.md", default=None, metavar="FILE",
                   help=f"also write the tables between the {' and '.join(TABLES)} markers in FILE "
                        "(default docs/evaluation.md)")
    args = p.parse_args(argv)
    command = "python scripts/bench_evaluate.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.docs:
        check_markers(args.docs, TABLES)
    torch.set_num_threads(args.threads)
    pipe = load_pipeline(None, device="cpu", dtype="fp32")
    pipe.set_progress_bar_config(disable=True)
    colours = list(COLOURS)
    prompts = [f"a {colours[i % len(colours)]} {SHAPES[(i // len(colours)) % len(SHAPES)]}" for i in range(args.images)]
    seeds = list(range(args.images))
    generate_images(pipe, prompts[:4], seeds[:4], WORLD_SETTINGS, batch_size=4, progress=False)  # warm-up

    print(f"built-in world, {args.images} images, {WORLD_SETTINGS.steps} steps, guidance {WORLD_SETTINGS.guidance}, "
          f"threads {args.threads}, median of {args.repeats}")
    first = args.batch_sizes[0]  # the baseline (1 by default)
    gen_columns = [("generation batch size", lambda r: r["batch_size"]), ("seconds", lambda r: f"{r['seconds']:.2f}"),
                   ("images/s", lambda r: f"{args.images / r['seconds']:.1f}"),
                   (f"speed vs batch {first}", lambda r: f"{r['speed']:.2f}x"),
                   (f"max pixel diff vs batch {first} (0-255)", lambda r: r["diff"])]
    print("\n" + markdown_table([], gen_columns))
    rows, images, gen_rows = {}, None, []
    for bs in args.batch_sizes:
        holder = {}

        def run():
            holder["images"] = generate_images(pipe, prompts, seeds, WORLD_SETTINGS, batch_size=bs, progress=False)

        rows[bs] = _median_time(run, args.repeats)
        if images is None:
            images = holder["images"]
        diff = int(np.abs(images.astype(int) - holder["images"].astype(int)).max())
        gen_rows.append({"batch_size": bs, "seconds": rows[bs], "speed": rows[first] / rows[bs],
                         "diff": diff})
        _print_row(gen_rows[-1], gen_columns)

    classifier, clip = load_classifier(), load_clip()
    many = np.concatenate([images] * max(1, 1024 // len(images)))[:1024]
    feats = classifier_features(classifier, many)
    half = len(feats) // 2
    scores = (np.arange(len(many)) % 3 == 0).astype(float)
    metrics = [
        ("classifier labels", len(many), lambda: predict_labels(classifier, many)),
        ("classifier features (FID/KID)", len(many), lambda: classifier_features(classifier, many)),
        ("world CLIP image embeddings", len(many), lambda: clip_embed_images(clip, many)),
        (f"FID, {half} vs {half}, no interval", 2 * half,
         lambda: fid(feats[:half], feats[half:], n_resamples=0)),
        (f"KID, {half} vs {half}, 1000 bootstrap resamples", 2 * half,
         lambda: kid(feats[:half], feats[half:], n_resamples=1000)),
        ("bootstrap 95% interval, 1000 resamples", len(many), lambda: mean_result("x", scores, n_resamples=1000)),
    ]
    gen_per_image = rows[max(rows, key=lambda b: args.images / rows[b])] / args.images  # the fastest batch size
    metric_columns = [(f"metric (on {len(many)} generated images)", lambda r: r["name"]),
                      ("seconds", lambda r: _seconds(r["seconds"])),
                      ("items/s", lambda r: _items_per_s(r["items"] / r["seconds"])),
                      ("cost relative to generating them",
                       lambda r: _cost(r["seconds"] / (r["items"] * gen_per_image)))]
    print("\n" + markdown_table([], metric_columns))
    metric_rows = []
    for name, n, fn in metrics:
        fn()  # warm-up
        metric_rows.append({"name": name, "items": n, "seconds": _median_time(fn, args.repeats)})
        _print_row(metric_rows[-1], metric_columns)
    if args.docs:
        for table, (table_rows, columns) in zip(TABLES, [(gen_rows, gen_columns), (metric_rows, metric_columns)]):
            write_docs_table(args.docs, table, markdown_table(table_rows, columns), command=command)
        print(f"wrote {' and '.join(TABLES)} into {args.docs}")
    return 0


if __name__ == "__main__":
    script_main(main)
