# `make demo` and `make test` each create .venv when missing (torch/torchvision from local wheels).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.erasure-installed
export HF_HUB_OFFLINE := 1

.PHONY: demo test world quality bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[dev]"
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

world: $(STAMP)
	$(PY) scripts/train_world.py

quality: $(STAMP)
	$(PY) scripts/world_quality.py --seeds 4 --guidance 5

bench: $(STAMP)
	$(PY) scripts/bench_generate.py

clean:
	rm -rf outputs .pytest_cache
