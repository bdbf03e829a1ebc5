# `make demo` and `make test` each create .venv when missing (torch/torchvision from local wheels).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.erasure-installed
# The oldest-versions venv: pyproject.toml's lower bounds pinned (.ci/lower_bounds.py), the same local torch pair.
OLDEST ?= .venv-oldest
OLDEST_STAMP := $(OLDEST)/.erasure-installed
TORCH := torch==2.14.1 torchvision==0.29.1
# The inner loop: the tests marked fast, except those also marked slow (they run in `make test`).
FAST := fast and not slow
# the oldest-versions job runs more than the quick loop: everything but the trained world, slow and multi-process
OLDEST_TESTS := not world and not slow and not distributed
export HF_HUB_OFFLINE := 1

.PHONY: demo test test-fast test-oldest lint wheel-smoke world quality bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[dev,nudity]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/erasure generate --force --out outputs/demo --num-seeds 4 --guidance 5 \
		--prompt "a red star" --prompt "an orange star" --prompt "a striped blue heart" --prompt "a dotted yellow crescent" \
		--prompt "a checkered green square on a black background"
	$(VENV)/bin/erasure erase --force --out outputs/demo-erase --method uce --concept circle --guide square \
		--tokens subject-to-end --preserve-scale 0.02 --evaluate
	$(VENV)/bin/erasure export --force --edit outputs/demo-erase/edit.safetensors \
		--report outputs/demo-erase/eval-circle/report.json --out outputs/demo-export
	@echo "images: outputs/demo/grid.png"
	@echo "report: outputs/demo-erase/eval-circle/report.md, before|after grids: outputs/demo-erase/eval-circle/compare-<group>.png"
	@echo "export: outputs/demo-export/ (diffusers/, model.safetensors + model-config/, lora/, lora-kohya.safetensors, edit.safetensors, README.md)"

# The tests, then the notebooks executed by nbmake (quickstart ~1 min, methods comparison ~3 min on 1 CPU thread;
# your_checkpoint skips every cell without a model).
test: $(STAMP)
	OMP_NUM_THREADS=1 $(VENV)/bin/pytest tests notebooks --nbmake --nbmake-timeout=600

# The quick loop while editing (target: under a minute).
test-fast: $(STAMP)
	OMP_NUM_THREADS=1 $(VENV)/bin/pytest tests -m "$(FAST)"

lint: $(STAMP)
	$(VENV)/bin/ruff check erasure

# The fast tests on the oldest versions pyproject.toml allows, so its lower bounds are true. The venv is built
# anew whenever pyproject.toml changes, so no newer version is left over from an earlier install.
$(OLDEST_STAMP): pyproject.toml .ci/lower_bounds.py
	rm -rf $(OLDEST)
	python3 -m venv $(OLDEST)
	$(OLDEST)/bin/python -m pip install -q --upgrade pip
	$(OLDEST)/bin/python -m pip install -q $(TORCH)
	$(OLDEST)/bin/python .ci/lower_bounds.py pyproject.toml --extra unlearncanvas > $(OLDEST)/lower-bounds.txt
	$(OLDEST)/bin/python -m pip install -q -c $(OLDEST)/lower-bounds.txt -e ".[unlearncanvas]" "pytest>=8"
	touch $(OLDEST_STAMP)

test-oldest: $(OLDEST_STAMP)
	@echo "lower bounds: $$(tr '\n' ' ' < $(OLDEST)/lower-bounds.txt)"
	OMP_NUM_THREADS=1 $(OLDEST)/bin/python -m pytest tests -m "$(OLDEST_TESTS)" -p no:cacheprovider

# Build the wheel, install it in a fresh venv and use the CLI from another folder (scripts/wheel_smoke.sh).
wheel-smoke:
	bash scripts/wheel_smoke.sh

world: $(STAMP)
	$(PY) scripts/train_world.py

quality: $(STAMP)
	$(PY) scripts/world_quality.py --seeds 4 --guidance 5

bench: $(STAMP)
	$(PY) scripts/bench_generate.py

clean:
	rm -rf outputs .pytest_cache
