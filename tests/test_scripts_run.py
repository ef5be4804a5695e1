"""Every script in tools/ and bench/ is run, not only named: by `make` (a Makefile recipe, or bench/run_all.py, which
`make bench` runs), by `.ci/run`, by a test that runs it (named in `RUN_BY_TESTS`), or by the smoke run here: `SCRIPT
--help` for each of `SMOKE`, which executes its imports and its argument parser, so that a library name it uses that
moved or went away fails in `make test`, not at the next recording."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(
    str(p.relative_to(ROOT)) for d in ("tools", "bench") for p in (ROOT / d).iterdir() if p.suffix in (".py", ".sh")
)
MAKE = (ROOT / "Makefile").read_text() + (ROOT / ".ci" / "run").read_text()
RUN_ALL = (ROOT / "bench" / "run_all.py").read_text()
# helpers imported by the benchmarks `make bench` runs
HELPERS = {"bench/common.py": "from common import", "bench/official.py": "from official import"}
RUN_BY_TESTS = {  # script: the test file (or the worker a test starts) that runs it
    "tools/gpu_check.py": "test_gpu_check.py",
    "tools/rerun_notebook.py": "test_tools.py",
    "tools/move_names.py": "test_tools.py",
    "tools/sag_gather_probe.py": "test_tools.py",
    "tools/sag_oracle_gather.py": "test_tools.py",
    "tools/gloo_threads.py": "ddp_worker.py",
    "tools/check_notebooks.py": "test_check_notebooks.py",
    "tools/format_notebooks.py": "test_lint.py",
    "tools/ci_stage.py": "test_ci_tools.py",
    "tools/vector_path.py": "test_ci_tools.py",
    "bench/bench_quickstart.py": "test_scripts_run.py",
}
# record-keeping and one-off measuring scripts: each names the results file it wrote; smoke-run here
SMOKE = [
    "tools/ddp_stress.py",
    "tools/entity_variants_record.py",
    "tools/fault_probe.py",
    "tools/learning_test_probe.py",
    "tools/mg_quickstart_record.py",
    "tools/mg_rich_table.py",
    "tools/sag_language_run.py",
    "tools/sag_learning_seeds.py",
    "tools/ship_checkpoint.py",
    "tools/ship_sag_tiny.py",
    "bench/bench_amp.py",
    "bench/bench_cli_startup.py",
    "bench/bench_impl.py",
    "bench/bench_learning.py",
    "bench/bench_ops_table.py",
    "bench/bench_optimizer.py",
    "bench/bench_threads.py",
]


def run_by(script: str) -> list[str]:
    "Who runs `script`: make / .ci/run, `make bench`, a test, the smoke run here (empty: nobody)."
    name = Path(script).name
    out = []
    if re.search(rf"(^|\s){re.escape(script)}(\s|$)", MAKE, re.M):
        out.append("make")
    if script.startswith("bench/") and f'"{name}"' in RUN_ALL:
        out.append("make bench")
    if script in HELPERS and any(
        HELPERS[script] in (ROOT / "bench" / f).read_text() for f in re.findall(r'"(bench_\w+\.py)"', RUN_ALL)
    ):
        out.append("make bench (imported)")
    if script in RUN_BY_TESTS and Path(script).stem in (ROOT / "tests" / RUN_BY_TESTS[script]).read_text():
        out.append(RUN_BY_TESTS[script])
    if script in SMOKE:
        out.append("smoke")
    return out


def test_every_script_is_run():
    assert {s: run_by(s) for s in SCRIPTS if not run_by(s)} == {}
    assert set(SMOKE) <= set(SCRIPTS) and set(RUN_BY_TESTS) <= set(SCRIPTS)  # no stale entry


def test_the_check_finds_a_script_nobody_runs():
    assert run_by("tools/nobody_runs_me.py") == []
    assert run_by("bench/bench_suite.sh") == ["make"] and "make bench" in run_by("bench/bench_data.py")


SMOKE_RUN = """
import contextlib, io, os, runpy, sys
for script in sys.argv[1:]:
    sys.argv, out = [script, "--help"], io.StringIO()
    sys.path[0] = os.path.dirname(os.path.abspath(script))  # as `python SCRIPT` sets it
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_path(script, run_name="__main__")
        code = None
    except SystemExit as e:
        code = e.code
    print(script, code, out.getvalue().startswith("usage:"))
"""


@pytest.mark.parametrize("folder", ["tools", "bench"])
def test_smoke_run(folder):
    "`SCRIPT --help` for each smoke-run script of `folder`, in one process (torch and ris_nb imported once)."
    scripts = [s for s in SMOKE if s.startswith(folder + "/")]
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    p = subprocess.run(
        [sys.executable, "-c", SMOKE_RUN, *scripts],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.split("\n")[:-1] == [f"{s} 0 True" for s in scripts], p.stdout + p.stderr[-3000:]


def test_bench_quickstart_runs_a_recipe_end_to_end(tmp_path):
    "bench/bench_quickstart.py --smoke: a recipe trained for real (4 steps on 60 scenes), its row with val scores."
    p = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_quickstart.py"), "--smoke", "--recipe", "today"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert p.returncode == 0, p.stderr[-3000:]
    row = [line for line in p.stdout.splitlines() if line.startswith("| today |")]
    assert len(row) == 1 and row[0].endswith("| 0 |") and row[0].count(": ") == 2, p.stdout  # two val scores
    assert "512³ matmul probe" in p.stdout and "CPU: " in p.stdout
