"""tools/gpu_check.py on the CPU (`--device cpu --tiny`): one row per check, finite falling losses, an exact resume;
its profile mode (`--profile`): sweep, profile and graphs rows with numbers, and the markdown tables beside the CSV."""

import csv
import importlib.util
import math
import re
import sys
from collections import Counter
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


PROFILE_EXPECTED = {  # (check, preset): rows of `--profile --device cpu --tiny`
    **{("paper_step", p): 1 for p in ("magnet_tiny", "sag_tiny")},
    **{("sweep", p): 3 for p in ("magnet_tiny", "sag_tiny")},
    ("profile", "magnet_tiny"): 2,  # model.impl reference and fast (on CUDA also fast + regional compile)
    ("profile", "sag_tiny"): 1,
    ("msda", "magnet_tiny"): 3,  # the reference, the image and the table form
    ("graphs", "magnet_tiny"): 2,  # eager in each form, as the profile
    ("graphs", "sag_tiny"): 1,
}


def test_profile_flag_and_verdict():
    gc = _tool()
    a = gc.parse_args(["--device", "cpu", "--tiny", "--profile", "--out", "d/x.csv"])
    assert a.checks == gc.PROFILE_CHECKS and vars(a)["md"] == Path("d/x_profile.md")
    with pytest.raises(SystemExit):
        gc.parse_args(["--device", "cpu", "--profile", "--checks", "sweep", "--out", "x.csv"])
    assert "GPU-bound" in gc.verdict(100.0, 190.0) and "host-bound" in gc.verdict(100.0, 110.0)
    assert gc.verdict(100.0, 150.0).endswith("mixed")
    assert gc.profile_forms("magnet_paper", "cuda:0") == ["reference", "fast", "fast+compile"]
    assert gc.profile_forms("magnet_tiny", "cpu") == ["reference", "fast"]
    assert gc.profile_forms("sag_tiny", "cuda:0") == ["reference"]
    a = gc.parse_args(["--device", "cuda", "--checks", "graphs", "--forms", "fast+compile", "--out", "x.csv"])
    assert gc.profile_forms("magnet_tiny", a.device, a.forms) == ["fast+compile"]


def test_old_csv_gains_the_commit_column(tmp_path):
    gc = _tool()
    out = tmp_path / "g.csv"
    out.write_text(",".join(gc.COLUMNS[:-1]) + "\npaper_step,NVIDIA H100,auto,magnet_paper,8,12,597.5,,,,,,n,d,t\n")
    gc.write_rows(out, [{"check": "sweep", "device": "cpu", "batch": 4, "commit": "abc"}])
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert [r["commit"] for r in rows] == ["", "abc"] and rows[0]["step_ms"] == "597.5"


def _numbers(line: str) -> list[float]:
    "The numeric cells of a markdown table row."
    out = []
    for c in line.strip("|").split("|"):
        try:
            out.append(float(c.strip().replace(",", "").rstrip(" %")))
        except ValueError:
            pass
    return out


def test_tiny_cpu_profile_mode_writes_rows_and_tables(tmp_path):
    out = tmp_path / "gpu_check.csv"
    cmd = [sys.executable, TOOL, "--device", "cpu", "--tiny", "--profile", "--out", out, "--budget-s", "600"]
    p = run(cmd, timeout=900)
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert Counter((r["check"], r["preset"]) for r in rows) == PROFILE_EXPECTED, p.stdout
    assert all(r["device"] == "cpu" and r["date"] and r["commit"] for r in rows)
    for r in rows:  # every row measured something: a positive step time and peak memory
        assert float(r["step_ms"]) > 0 and float(r["peak_mem_mb"]) > 0, r
    sweep = [r for r in rows if r["check"] == "sweep"]
    assert sorted(int(r["batch"]) for r in sweep) == [4, 4, 8, 8, 16, 16]
    for r in sweep:
        assert float(r["samples_per_s"]) > 0, r
        assert ("batch 8 / batch 4 = " in r["note"]) == (r["batch"] == "8"), r
    for r in (r for r in rows if r["check"] == "profile"):
        calls = re.search(r"top-level aten calls ([\d,]+)", r["note"])
        assert calls and int(calls[1].replace(",", "")) > 100, r["note"]
    assert all("CUDA graphs skipped" in r["note"] for r in rows if r["check"] == "graphs")
    md = out.with_name("gpu_check_profile.md").read_text()
    heads = ("### Batch sweep", "### Two-step profile", "### Deformable attention alone", "### CUDA graphs")
    for head in heads + ("#### magnet_tiny, batch 2", "##### form: reference", "##### form: fast"):
        assert head in md, md
    ops = [l for l in md.splitlines() if l.startswith("| aten::")]
    assert len(ops) >= 20, md  # top 15 CPU ops of each model (the rest may be torchvision's or the profiler's)
    assert all(len(_numbers(l)) == 3 and _numbers(l)[0] >= 1 for l in ops), ops
    assert "nan" not in md.lower() and "timed out" not in md, md
