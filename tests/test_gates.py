"""The two test gates: `make test` (every notebook, pytest less the tests marked `slow`) and `make test-all` (CI:
everything). Every entry of conftest's `SLOW` names a fixture, group or test that exists and says what the fast gate
still proves; the schedules name notebooks and work units that exist; `--cpu-durations` counts a child's CPU."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ENV, NUMERIC, ONE_WORKER, SLOW, SLOWEST

ROOT = Path(__file__).resolve().parents[1]
TESTS = {p.name: p.read_text() for p in (ROOT / "tests").glob("test_*.py")}


def _exists(key: str) -> bool:
    "A test function `tests/x.py::name`, a fixture defined in tests/ or an xdist group named in tests/."
    if "::" in key:
        file, name = key.split("::")
        return Path(file).name in TESTS and f"def {name}(" in TESTS[Path(file).name]
    fixture = re.compile(rf"@pytest\.fixture[^\n]*\ndef {key}\(")
    return key in ONE_WORKER or any(fixture.search(t) or f'xdist_group("{key}")' in t for t in TESTS.values())


@pytest.mark.parametrize("key", sorted(SLOW))
def test_every_slow_entry_exists_and_says_what_make_test_keeps(key):
    assert _exists(key), f"tests/conftest.py SLOW[{key!r}]: no such test, fixture or xdist group in tests/"
    assert ". make test: " in SLOW[key], f"SLOW[{key!r}] does not say what `make test` still proves of its claim"


@pytest.mark.parametrize("key", sorted(SLOWEST))
def test_every_scheduled_unit_exists(key):
    assert _exists(key), f"tests/conftest.py SLOWEST[{key!r}]: no such test, fixture or xdist group in tests/"
    assert isinstance(SLOWEST[key], (int, float)), f"tests/conftest.py SLOWEST[{key!r}]: expected seconds"


def test_the_notebook_schedule_names_notebooks():
    spec = importlib.util.spec_from_file_location("check_notebooks", ROOT / "tools" / "check_notebooks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    missing = [k for k in mod.SLOWEST if not (ROOT / "nbs" / f"{k}.ipynb").exists()]
    assert not missing, f"tools/check_notebooks.py SLOWEST names no notebook in nbs/: {missing}"


def _recipe(target: str) -> str:
    "The commands of a Makefile target (make -n, the variables expanded)."
    return subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True, check=True).stdout


def test_make_test_leaves_out_the_slow_tests_and_ci_runs_them():
    fast, full = _recipe("test"), _recipe("test-all")
    for recipe in (fast, full):
        assert "tools/check_notebooks.py" in recipe and "-m pytest tests" in recipe, recipe
    assert '-m "not slow"' in fast and "slow" not in full, (fast, full)
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test-all\b", ci, re.M) and not re.search(r"^make test\b(?!-)", ci, re.M)
    readme = (ROOT / "README.md").read_text()
    assert re.search(r"^make test\s+#.*make test-all", readme, re.M), "README names make test and CI's make test-all"


@pytest.mark.parametrize("key", sorted(NUMERIC))
def test_every_numeric_entry_exists(key):
    there = _exists(key) if "::" in key else (ROOT / key).exists()
    assert there, f"tests/conftest.py NUMERIC[{key!r}]: no such test or test file in tests/"


def test_make_test_all_runs_the_checks_again_under_each_emulated_vector_path():
    """CI (`make test-all`) runs the notebooks whose marked outputs a vector path can move and the numeric tests under
    an AVX2 machine and ATen's own kernels, each path skipped only where it is the CPU's own."""
    full = _recipe("test-all")
    for path in ("ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2", "ATEN_CPU_CAPABILITY=default"):
        assert f'for path in "{path}"' in full or f' "{path}"' in full, full
    assert "env $path OMP_NUM_THREADS=1" in full and "tools/check_notebooks.py --fractional" in full, full
    assert re.search(r"env \$path .*-m pytest tests .*-m numeric", full), full
    assert "if env $path .venv/bin/python tools/vector_path.py same-as-native; then" in full, full
    numeric = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "tests/test_engine.py",
            "-m",
            "numeric",
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=ENV,
    ).stdout
    assert "test_ddp_two_processes_match_one_process" in numeric and "test_cli_bad_inputs" not in numeric, numeric


def test_burn_a_second_in_a_child():  # the workload of the test below, skipped otherwise
    if not os.environ.get("RIS_NB_BURN"):
        pytest.skip("run by test_cpu_durations_count_child_processes")
    subprocess.run(
        [sys.executable, "-c", "import time\nt = time.process_time()\nwhile time.process_time() - t < 1: pass"]
    )


def test_cpu_durations_count_child_processes():
    p = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--cpu-durations", "3", "-k", "burn_a_second"]
        + [__file__],
        capture_output=True,
        text=True,
        env={**ENV, "RIS_NB_BURN": "1"},
        cwd=ROOT,
        timeout=300,
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    row = re.search(r"^\s*([\d.]+) CPU s\s+([\d.]+) s\s+\S+::test_burn_a_second_in_a_child$", p.stdout, re.M)
    assert row and float(row[1]) >= 0.9, p.stdout[-2000:]
    assert re.search(r"probe, 1 / 2 threads: [\d.]+ / [\d.]+ ms before, [\d.]+ / [\d.]+ ms after", p.stdout), p.stdout
