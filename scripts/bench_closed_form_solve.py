"""Solve-only timing of the closed-form edit on the SD 1.5 k/v shapes (no model build, no text encoding).

32 random matrices of SD 1.5's cross-attention widths (10 x 320, 10 x 640, 12 x 1280, all reading 768-wide
embeddings) and random correlated embeddings; for each size, ``solve_closed_form`` against a dense float64
baseline in the same process (W M A^-1 for every matrix, the straightforward form of the same solution),
with the largest difference between the two. Full benchmark with text encoding: bench_closed_form.py.

    python scripts/bench_closed_form_solve.py --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from erasure.methods.closed_form import solve_closed_form  # noqa: E402


def dense_baseline(weights, c_e, g_e, c_p, lamb):
    c_e, g_e, c_p = c_e.double(), g_e.double(), c_p.double()
    eye = torch.eye(c_e.shape[1], dtype=torch.float64)
    a = lamb * eye + c_e.T @ c_e + c_p.T @ c_p
    m = lamb * eye + g_e.T @ c_e + c_p.T @ c_p
    transform = torch.linalg.solve(a, m.T).T
    return {k: w.double() @ transform for k, w in weights.items()}


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(args.seed)
    widths = [320] * 10 + [640] * 10 + [1280] * 12
    weights = {f"w{i}": torch.randn(o, 768, generator=g) * 0.02 for i, o in enumerate(widths)}
    base = torch.randn(1, 768, generator=g)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); 32 matrices of SD 1.5 k/v shapes")
    print("| concepts | preserved | ours s | dense float64 s | speed-up | max abs diff |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n, m in [(1, 100), (10, 1000), (100, 1000), (1000, 1000)]:
        c = base + 0.5 * torch.randn(n, 768, generator=g)
        guide = base + 0.5 * torch.randn(n, 768, generator=g)
        keep = base + 0.5 * torch.randn(m, 768, generator=g)
        ours_s, ours = median_time(lambda: solve_closed_form(weights, c, guide, keep, lamb=0.5), args.repeats)
        dense_s, dense = median_time(lambda: dense_baseline(weights, c, guide, keep, 0.5), args.repeats)
        diff = max(float((ours[k] - dense[k]).abs().max()) for k in weights)
        print(f"| {n} | {m} | {ours_s:.3f} | {dense_s:.3f} | {dense_s / ours_s:.2f}x | {diff:.1e} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
