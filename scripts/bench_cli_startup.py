"""How fast the command line answers: each subcommand's ``--help``, ``erasure list`` and a typical mistake per
subcommand, against ``python -c pass`` (the interpreter's own start) and ``import torch`` (what every answer
cost before the checks ran ahead of it), measured in the same run.

    python scripts/bench_cli_startup.py [--repeats 5]

Prints one table: the median wall time of each command over the repeats, its ratio to ``python -c pass``,
its exit code, and whether torch was imported. No assertions: the numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

# (label, arguments after `erasure`, expected exit code)
COMMANDS = [
    ("erasure --help", ["--help"], 0),
    ("generate --help", ["generate", "--help"], 0),
    ("erase --help", ["erase", "--help"], 0),
    ("evaluate --help", ["evaluate", "--help"], 0),
    ("export --help", ["export", "--help"], 0),
    ("list", ["list"], 0),
    ("list --method esd-x", ["list", "--method", "esd-x"], 0),
    ("generate --steps 0", ["generate", "--prompt", "a star", "--steps", "0"], 2),
    ("generate --out .", ["generate", "--prompt", "a star", "--out", ".", "--force"], 2),
    ("erase --method ucee", ["erase", "--concept", "circle", "--method", "ucee"], 2),
    ("erase --set lr=NaN", ["erase", "--concept", "circle", "--method", "esd-x", "--set", "lr=NaN"], 2),
    ("evaluate unknown prompt set", ["evaluate", "--prompts", "shapeworld-shape-circl"], 2),
    ("export --format onnx", ["export", "--format", "onnx"], 2),
]

# Runs one command in a fresh interpreter and reports whether it imported torch.
RUNNER = """
import json, sys
from erasure.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as e:  # --help
    code = e.code
print(json.dumps({"code": code, "torch": "torch" in sys.modules}), file=sys.__stdout__)
"""


def timed(argv: list[str], cwd: str) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    return time.perf_counter() - start, done.stdout


def median_time(argv: list[str], cwd: str, repeats: int) -> tuple[float, str]:
    runs = [timed(argv, cwd) for _ in range(repeats)]
    return statistics.median(t for t, _ in runs), runs[-1][1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs per command (the median is shown)")
    args = parser.parse_args()
    cwd = tempfile.mkdtemp(prefix="bench-cli-")  # a fresh folder: nothing a mistake could touch
    python = sys.executable
    baseline, _ = median_time([python, "-c", "pass"], cwd, args.repeats)
    torch_time, _ = median_time([python, "-c", "import torch"], cwd, args.repeats)
    rows = [("python -c pass", baseline, "", ""), ("python -c 'import torch'", torch_time, "", "yes")]
    for label, words, expected in COMMANDS:
        seconds, out = median_time([python, "-c", RUNNER, *words], cwd, args.repeats)
        result = json.loads(out.strip().splitlines()[-1])
        code = str(result["code"]) + ("" if result["code"] == expected else f" (expected {expected})")
        rows.append((label, seconds, code, "yes" if result["torch"] else "no"))
    print(f"CLI startup, median of {args.repeats} runs, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print(f"{'command':32s} {'seconds':>8s} {'x python':>9s} {'exit':>5s} {'torch':>6s}")
    for label, seconds, code, torch_imported in rows:
        print(f"{label:32s} {seconds:8.3f} {seconds / baseline:9.1f} {code:>5s} {torch_imported:>6s}")


if __name__ == "__main__":
    main()
