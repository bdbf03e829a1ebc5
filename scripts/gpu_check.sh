#!/usr/bin/env bash
# One command for a lent GPU: the CUDA contract tests (every method x SD 1.x/2.x x fp32/fp16/bf16) and the
# SD 1.5-shape benchmarks on the GPU, printing their tables. Without a GPU it says so and exits 0.
#   bash scripts/gpu_check.sh            (from the repository root; uses .venv when present)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export HF_HUB_OFFLINE=1
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_check: no CUDA device here; skipped (the CPU tests cover the same contract in fp32/bf16/fp16)"
    exit 0
fi
"$PY" -c "import torch; print('GPU:', torch.cuda.get_device_name(), '| torch', torch.__version__, '| CUDA', torch.version.cuda)"
status=0
echo "== CUDA contract tests =="
"$PY" -m pytest tests/test_gpu.py -q -p no:cacheprovider || status=1
echo "== SD 1.5-shape benchmarks on the GPU =="
"$PY" scripts/bench_gpu.py --device cuda || status=1
exit $status
