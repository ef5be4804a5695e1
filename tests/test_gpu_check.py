"tools/gpu_check.py on the CPU (`--device cpu --tiny`): one row per check, finite falling losses, an exact resume."

import csv
import importlib.util
import math
import sys
from pathlib import Path

import pytest

from conftest import run

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "gpu_check.py"
EXPECTED = {
    ("precision", "magnet_tiny"),
    ("precision", "sag_tiny"),
    ("torchrun_cli", "magnet_tiny"),
    ("nccl_ddp", "magnet_tiny"),
    ("paper_step", "magnet_tiny"),
    ("paper_step", "sag_tiny"),
    ("paper_eval", "magnet_tiny"),
    ("paper_eval", "sag_tiny"),
}


def _tool():
    spec = importlib.util.spec_from_file_location("gpu_check", TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cpu_rows_never_go_to_the_committed_table():
    gc = _tool()
    with pytest.raises(SystemExit):
        gc.parse_args(["--device", "cpu", "--tiny"])  # GPU rows only there
    a = gc.parse_args(["--device", "cpu", "--tiny", "--out", "x.csv"])
    assert (a.steps, a.threads, a.out) == (4, 1, Path("x.csv"))


def test_tiny_cpu_check_writes_a_row_per_check(tmp_path):
    out = tmp_path / "gpu_check.csv"
    # a larger budget than the default: this 2-core machine is shared, and a check skipped for time would be no test
    p = run([sys.executable, TOOL, "--device", "cpu", "--tiny", "--out", out, "--budget-s", "600"], timeout=900)
    with open(out) as f:
        reader = csv.DictReader(f)
        cols, rows = reader.fieldnames, list(reader)
    assert cols == _tool().COLUMNS
    assert {(r["check"], r["preset"]) for r in rows} == EXPECTED and len(rows) == len(EXPECTED), p.stdout
    assert {r["device"] for r in rows} == {"cpu"} and all(r["torch"] and r["date"] for r in rows)
    trained = [r for r in rows if r["check"] in ("precision", "torchrun_cli", "nccl_ddp")]
    for r in trained:
        first, last = float(r["loss_first"]), float(r["loss_last"])
        assert math.isfinite(first) and math.isfinite(last), r
        assert last < first, r  # every run here takes ≥ 2 steps: the loss falls
    assert all(r["resume_identical"] == "True" for r in rows if r["check"] == "precision"), p.stdout
    for r in rows:
        if r["check"] == "paper_step":
            assert float(r["step_ms"]) > 0 and float(r["peak_mem_mb"]) > 0, r
        if r["check"] == "paper_eval":
            assert float(r["samples_per_s"]) > 0, r
    assert p.stdout.count("\n") >= len(EXPECTED)  # one printed line per check
