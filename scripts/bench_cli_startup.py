"""How fast the command line answers: each subcommand's ``--help``, ``erasure list`` and a typical mistake per
subcommand, against ``python -c pass`` (the interpreter's own start) and ``import torch`` (what every answer
cost before the checks ran ahead of it), measured in the same run.

    python scripts/bench_cli_startup.py [--repeats 5] [--docs]

Prints one markdown table: the median wall time of each command over the repeats, its ratio to ``python -c
pass`` and whether torch was imported (a command whose exit code is not the expected one is named on stderr,
and the run exits 1 without writing the docs). With ``--docs`` the table goes between the ``cli-startup``
markers of docs/cli.md. No assertions on the times: they depend on the machine.
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from erasure.experiments import check_markers, markdown_table, script_main, write_docs_table  # noqa: E402

TABLE = "cli-startup"

# (label, arguments after `erasure`, expected exit code)
COMMANDS = [
    ("erasure --help", ["--help"], 0),
    ("erasure generate --help", ["generate", "--help"], 0),
    ("erasure erase --help", ["erase", "--help"], 0),
    ("erasure evaluate --help", ["evaluate", "--help"], 0),
    ("erasure export --help", ["export", "--help"], 0),
    ("erasure list", ["list"], 0),
    ("erasure list --method esd-x", ["list", "--method", "esd-x"], 0),
    ("erasure generate --steps 0", ["generate", "--prompt", "a star", "--steps", "0"], 2),
    ("erasure generate --out . --force", ["generate", "--prompt", "a star", "--out", ".", "--force"], 2),
    ("erasure erase --method ucee", ["erase", "--concept", "circle", "--method", "ucee"], 2),
    ("erasure erase --set lr=NaN", ["erase", "--concept", "circle", "--method", "esd-x", "--set", "lr=NaN"], 2),
    ("erasure evaluate --prompts <typo>", ["evaluate", "--prompts", "shapeworld-shape-circl"], 2),
    ("erasure export --format onnx", ["export", "--format", "onnx"], 2),
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


def two_digits(x: float) -> str:
    """Two significant digits, at least the units: 0.10, 9.8, 102."""
    return f"{x:.2f}" if x < 1 else f"{x:.1f}" if x < 10 else f"{x:.0f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="runs per command (the median is shown)")
    parser.add_argument("--docs", nargs="?", const="docs/cli.md", default=None, metavar="FILE",
                        help=f"also write the table between the {TABLE} markers in FILE (default docs/cli.md)")
    args = parser.parse_args(argv)
    command = "python scripts/bench_cli_startup.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.docs:
        check_markers(args.docs, [TABLE])
    cwd = tempfile.mkdtemp(prefix="bench-cli-")  # a fresh folder: nothing a mistake could touch
    python = sys.executable
    baseline, _ = median_time([python, "-c", "pass"], cwd, args.repeats)
    torch_time, _ = median_time([python, "-c", "import torch"], cwd, args.repeats)
    rows = [{"command": "python -c pass", "seconds": baseline, "torch": ""},
            {"command": "python -c 'import torch'", "seconds": torch_time, "torch": "yes"}]
    wrong = []
    for label, words, expected in COMMANDS:
        seconds, out = median_time([python, "-c", RUNNER, *words], cwd, args.repeats)
        result = json.loads(out.strip().splitlines()[-1])
        if result["code"] != expected:
            wrong.append(f"{label}: exit {result['code']}, expected {expected}")
        rows.append({"command": label, "seconds": seconds, "torch": "yes" if result["torch"] else "no"})
    columns = [("command", lambda r: f"`{r['command']}`"), ("seconds", lambda r: two_digits(r["seconds"])),
               ("x `python -c pass`", lambda r: two_digits(r["seconds"] / baseline)),
               ("torch imported", lambda r: r["torch"])]
    table = markdown_table(rows, columns)
    table += (f"\n\nMedian of {args.repeats} runs per command; {os.cpu_count()} CPUs, "
              f"Python {sys.version.split()[0]}.")
    print(table)
    if wrong:
        print("unexpected exit codes (the docs are not written):\n  " + "\n  ".join(wrong), file=sys.stderr)
        return 1
    if args.docs:
        write_docs_table(args.docs, TABLE, table, command=command)
        print(f"wrote {TABLE} into {args.docs}")
    return 0


if __name__ == "__main__":
    script_main(main)
