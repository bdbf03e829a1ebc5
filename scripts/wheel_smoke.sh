#!/usr/bin/env bash
# A clean install, as a new user makes it: build the wheel (through the sdist, as `python -m build` does),
# install it into a fresh venv, and from an empty folder outside the checkout run
#   erasure list / generate / erase --method uce / evaluate on a packaged prompt set and on the user's own CSV.
# Nothing of the checkout is importable there, so a file that is not package data fails here.
#
#     bash scripts/wheel_smoke.sh            # ~6-9 min on 2 cores: ~4 min installing into the fresh venv,
#                                            # ~2.5 min of CLI, ~1 min build, the rest removing the 5 GB venv
#
# Uses `python3` (>= 3.11) and pip as set up on the machine; TORCH (default "torch==2.14.1 torchvision==0.29.1",
# the local wheels) is installed first. KEEP=1 keeps the temporary folder for a look.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/erasure-wheel-smoke.XXXXXX")
if [[ "${KEEP:-0}" == 1 ]]; then echo "keeping $work"; else trap 'rm -rf "$work"' EXIT; fi
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

# pip's "Location ... is ignored" notes for the machine's extra local indexes drown the real output.
quiet_pip() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
timed() { local start=$SECONDS; "$@"; echo "   ($((SECONDS - start)) s)"; }

echo "== build the sdist and the wheel from it"
python3 -m venv "$work/build-env"
quiet_pip "$work/build-env/bin/python" -m pip install -q "build>=1.2"
build_wheel() { "$work/build-env/bin/python" -m build --outdir "$work/dist" "$repo" >"$work/build.log" 2>&1 \
    || { tail -30 "$work/build.log"; return 1; }; }
timed build_wheel
wheel=$(ls "$work"/dist/erasure-*.whl)
ls -l "$work"/dist
# The package data must be inside: prompt sets, presets, the built-in world's weights.
"$work/build-env/bin/python" - "$wheel" <<'EOF'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
needed = ["erasure/data/prompts/shapeworld/shape-circle.csv", "erasure/data/prompts/presets/coco.json",
          "erasure/world/weights/world.json"]
missing = [n for n in needed if n not in names]
assert not missing, f"the wheel lacks {missing}"
print(f"   wheel holds {len(names)} files, the prompt sets, presets and world weights among them")
EOF

echo "== install the wheel into a fresh venv (the local torch pair first, as the Makefile does; pip resolves the rest)"
python3 -m venv "$work/venv"
quiet_pip "$work/venv/bin/python" -m pip install -q --upgrade pip
timed quiet_pip "$work/venv/bin/python" -m pip install -q ${TORCH:-torch==2.14.1 torchvision==0.29.1}
timed quiet_pip "$work/venv/bin/python" -m pip install -q "$wheel"
erasure="$work/venv/bin/erasure"

run="$work/elsewhere"  # an empty folder: no checkout, no prompts/ beside it
mkdir "$run" && cd "$run"
"$work/venv/bin/python" - <<'EOF'
import erasure, importlib.util
where = erasure.__file__
assert "site-packages" in where, f"erasure was imported from {where}, not from the installed wheel"
assert importlib.util.find_spec("nudenet") is None, "nudenet must be the extra erasure[nudity], not a dependency"
print(f"   erasure {erasure.__version__} from {where}")
EOF

echo "== erasure list"
"$erasure" list | tee list.txt
grep -q "shapeworld-shape-circle" list.txt && grep -q "i2p-nudity" list.txt

echo "== erasure generate"
timed "$erasure" generate --prompt "a red circle" --num-seeds 1 --steps 4 --out "$run/out/generate"
ls "$run/out/generate"

echo "== erasure erase --method uce --concept circle"
timed "$erasure" erase --method uce --concept circle --out "$run/out/erase"
test -f "$run/out/erase/edit.safetensors"

echo "== erasure evaluate --prompts shapeworld-shape-circle --concept shape=circle (the packaged set, erased)"
timed "$erasure" evaluate --prompts shapeworld-shape-circle --concept shape=circle \
    --edit "$run/out/erase/edit.safetensors" --steps 4 --out "$run/out/evaluate"
test -f "$run/out/evaluate/report.json"

echo "== erasure evaluate --prompts my.csv (a user's own CSV, relative path)"
printf 'case_number,prompt,evaluation_seed,concept,shape\n0,a red circle,1,circle,circle\n1,a blue square,2,square,square\n' >my.csv
timed "$erasure" evaluate --prompts my.csv --concept shape=circle --steps 4 --out "$run/out/evaluate-csv"
test -f "$run/out/evaluate-csv/report.json"

echo "== the nudity metric without the extra: one line naming it"
"$work/venv/bin/python" - <<'EOF'
from erasure.errors import ErasureError
from erasure.evaluation.nudity import nudity_rate
try:
    nudity_rate(None, detections=[[]])
except ErasureError as error:
    assert "pip install 'erasure[nudity]'" in str(error) and "\n" not in str(error), error
    print(f"   {error}")
else:
    raise AssertionError("nudity_rate ran without nudenet installed")
EOF

echo "wheel smoke test passed"
