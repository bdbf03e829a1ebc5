#!/usr/bin/env bash
# Interop suite: exports made by erasure (main venv) loaded by the oldest supported stack (a second venv
# with no erasure in it), same-seed images compared. See docs/export.md.
#
#   bash scripts/interop.sh            # builds build/interop-venv once (~1-2 min), then ~1 min of checks
#
# Environment: INTEROP_VENV (default build/interop-venv), INTEROP_DIFFUSERS / INTEROP_TRANSFORMERS /
# INTEROP_PEFT / INTEROP_TORCH (the pinned versions below), MAIN_PY (default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."

MAIN_PY=${MAIN_PY:-.venv/bin/python}
VENV=${INTEROP_VENV:-build/interop-venv}
# The oldest stack the exports are promised to load in (issue 16): diffusers 0.31 (Oct 2024) with a
# transformers 4.x, peft of the same era, and the hub client those accept (< 1.0).
DIFFUSERS=${INTEROP_DIFFUSERS:-0.31.0}
TRANSFORMERS=${INTEROP_TRANSFORMERS:-4.57.1}
PEFT=${INTEROP_PEFT:-0.13.2}
HUB=${INTEROP_HUB:-0.36.0}
TORCH=${INTEROP_TORCH:-2.13.0}
STAMP="$VENV/.interop-$DIFFUSERS-$TRANSFORMERS-$PEFT-$HUB-$TORCH"
WORK=${INTEROP_WORK:-build/interop-work}

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS=1 PYTHONNOUSERSITE=1

if [ ! -f "$STAMP" ]; then
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    # torch first (a CPU wheel where one lies on disk), then the 2024 stack; accelerate of the same era
    "$VENV/bin/python" -m pip install -q "torch==$TORCH"
    "$VENV/bin/python" -m pip install -q "diffusers==$DIFFUSERS" "transformers==$TRANSFORMERS" "peft==$PEFT" \
        "huggingface_hub==$HUB" "accelerate==1.0.1" "safetensors>=0.4" "numpy" "pillow"
    touch "$STAMP"
fi
if "$VENV/bin/python" -I -c "import erasure" 2>/dev/null; then
    echo "interop: erasure is importable in $VENV; the check needs a venv without it" >&2
    exit 1
fi

rm -rf "$WORK"
# 1. main venv: make the edits, export them, render the reference images
"$MAIN_PY" scripts/interop_check.py make --work "$WORK"
# 2. old stack: load every export with plain diffusers, render the same seeds
"$VENV/bin/python" -I scripts/interop_check.py load --work "$WORK"
# 3. main venv: compare
"$MAIN_PY" scripts/interop_check.py compare --work "$WORK"
