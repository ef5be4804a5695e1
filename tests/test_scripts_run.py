"""Every script in tools/ and bench/ is run, not only named: by `make` (a Makefile recipe, or bench/run_all.py, which
`make bench` runs), by `.ci/run`, or by a test that runs it (named in `RUN_BY_TESTS`). The recorders and benchmarks
that only a person ran are run here as `SCRIPT --smoke`: their own body at a tiny budget (40 scenes, 2 steps, one kept
timing) in a temporary folder, results written to temporary files and printed; each test checks what was printed. A
one-off recorder whose record is committed was deleted instead (bench/README.md, "Every script runs, or goes")."""

import csv
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ENV

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(
    str(p.relative_to(ROOT)) for d in ("tools", "bench") for p in (ROOT / d).iterdir() if p.suffix in (".py", ".sh")
)
MAKE = (ROOT / "Makefile").read_text() + (ROOT / ".ci" / "run").read_text()
RUN_ALL = (ROOT / "bench" / "run_all.py").read_text()
# helpers imported by the benchmarks `make bench` runs
HELPERS = {"bench/common.py": "from common import", "bench/official.py": "from official import"}
SMOKED = [  # run here as `SCRIPT --smoke`, each by a test below
    "tools/ddp_stress.py",
    "tools/fault_probe.py",
    "tools/learning_test_probe.py",
    "tools/mg_quickstart_record.py",
    "tools/mg_rich_table.py",
    "tools/sag_learning_seeds.py",
    "tools/ship_checkpoint.py",  # through tools/ship_sag_tiny.py --smoke, which ships with it
    "tools/ship_sag_tiny.py",
    "bench/bench_amp.py",
    "bench/bench_cli_startup.py",
    "bench/bench_impl.py",
    "bench/bench_learning.py",
    "bench/bench_ops_table.py",
    "bench/bench_optimizer.py",
    "bench/bench_parts.py",
    "bench/bench_threads.py",
]
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
    "tools/sag_ladder.py": "test_scripts_run.py",
    "tools/magnet_ladder.py": "test_scripts_run.py",
    "tools/ladder_cli.py": "test_scripts_run.py",  # both ladders' command line, run by their smoke tests
    "tools/sag_language_run.py": "test_scripts_run.py",
    **{script: "test_scripts_run.py" for script in SMOKED},
}


def run_by(script: str) -> list[str]:
    "Who runs `script`: make / .ci/run, `make bench`, a test (empty: nobody)."
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
    return out


def test_every_script_is_run():
    assert {s: run_by(s) for s in SCRIPTS if not run_by(s)} == {}
    assert set(RUN_BY_TESTS) <= set(SCRIPTS)  # no stale entry
    smoke_tests = (ROOT / "tests" / "test_scripts_run.py").read_text()
    assert [s for s in SMOKED if f'smoke("{s}")' not in smoke_tests and s != "tools/ship_checkpoint.py"] == []


def test_the_check_finds_a_script_nobody_runs():
    assert run_by("tools/nobody_runs_me.py") == []
    assert run_by("bench/bench_suite.sh") == ["make"] and "make bench" in run_by("bench/bench_data.py")


def smoke(script: str) -> str:
    "What `python SCRIPT --smoke` printed (stdout), after checking that it exited 0."
    p = subprocess.run(
        [sys.executable, str(ROOT / script), "--smoke"], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300
    )
    assert p.returncode == 0, f"{script} --smoke: exit {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
    return p.stdout


def printed_csv(out: str, name: str) -> list[dict]:
    "The rows of the CSV a smoke run printed after `smoke: NAME`."
    text = out.split(f"smoke: {name}\n", 1)[1].split("smoke: ", 1)[0]
    return list(csv.DictReader(io.StringIO(text)))


def test_ddp_stress_counts_a_clean_torchrun_exit():
    "tools/ddp_stress.py --smoke: one two-process torchrun job of the bare DDP worker, counted as a clean exit."
    assert "bare: 1/1 clean exits" in smoke("tools/ddp_stress.py")


def test_fault_probe_classifies_its_smoke_cases():
    """tools/fault_probe.py --smoke: the data and the tiny run made, three cases run through the CLI and classified; the
    table's rows, no `unclear` or `wrong` (exit 0)."""
    out = smoke("tools/fault_probe.py")
    assert "| case | exit | first line of stderr | verdict |" in out
    assert "| eval: a checkpoint holding code | 2 |" in out and "3 cases in" in out, out


def test_learning_test_probe_writes_its_row():
    "tools/learning_test_probe.py --smoke: lavt_tiny trained 2 steps and scored on val; its row in the results CSV."
    (row,) = printed_csv(smoke("tools/learning_test_probe.py"), "learning_tests.csv")
    assert row["row"] == "lavt_tiny/auto/preset/2x4/seed0" and 0 <= float(row["oIoU"]) <= 100, row
    assert 0 < float(row["best_blind_oIoU"]) < 100 and int(row["val_sentences"]) > 0, row


def test_sag_learning_seeds_writes_its_row():
    """tools/sag_learning_seeds.py --smoke: test_learning's `train_sag` for 2 steps; its row, with the shipped entity
    module's best entity (fixed weights) already on the shapes."""
    (row,) = printed_csv(smoke("tools/sag_learning_seeds.py"), "sag_learning_test.csv")
    assert row["recipe"] == "sag_tiny" and row["steps"] == "2" and 0 <= float(row["val_mIoU"]) <= 100, row
    assert float(row["best_entity_mIoU"]) > 50, row


def test_mg_quickstart_record_records_a_real_study_once():
    """tools/mg_quickstart_record.py --smoke: a study by `ris_nb experiments` at a tiny budget, recorded twice: its four
    runs and its three floors once."""
    out = smoke("tools/mg_quickstart_record.py")
    assert "4 runs added (4 in all)" in out and "0 runs added (4 in all)" in out, out[-2000:]
    runs = printed_csv(out, "mg_quickstart_plain.csv")
    assert sorted(r["row"] for r in runs) == ["lavt", "lavt_mg", "magnet", "magnet_no_mg"], runs
    assert all(r["scenes"] == "40" and r["steps"] == "2" and 0 <= float(r["val_oIoU"]) <= 100 for r in runs), runs
    assert len(printed_csv(out, "mg_quickstart_floors.csv")) == 3


def test_mg_rich_table_scores_a_run():
    "tools/mg_rich_table.py --smoke: a 2-step lavt_mg_tiny run on the rich language; its row, rare words split out."
    lines = smoke("tools/mg_rich_table.py").splitlines()
    (row,) = csv.DictReader(lines[next(i for i, l in enumerate(lines) if l.startswith("preset,mg_weight,")) :])
    assert row["preset"] == "lavt_mg_tiny" and row["step"] == "2" and int(row["n_rare"]) > 0, row
    assert all(0 <= float(row[k]) <= 100 for k in ("oIoU", "rare_mIoU", "common_mIoU")), row


def test_ship_sag_tiny_trains_with_11s_cells_and_ships():
    """tools/ship_sag_tiny.py --smoke: 11_sag's cells as nbdev_test runs them (300 scenes, 20 steps), the model shipped
    by tools/ship_checkpoint.py into a temporary folder, loaded back and scored again in float16."""
    out = smoke("tools/ship_sag_tiny.py")
    assert "20 steps in" in out and "shipped/sag_tiny.pt (" in out, out[-2000:]
    trained, shipped = (
        float(re.search(rf"val, {what}: {{'oIoU': ([\d.]+)", out)[1])
        for what in ("float32 as trained", "float16 as shipped")
    )
    assert abs(trained - shipped) < 1, out[-2000:]


def test_bench_amp_writes_a_run_and_a_speed_row():
    "bench/bench_amp.py --smoke: a 2-step `ris_nb train` run's row and lavt_tiny's fp32 / bf16 step times."
    out = smoke("bench/bench_amp.py")
    (run,) = printed_csv(out, "amp_13a.csv")
    assert run["preset"] == "lavt_tiny" and run["samples"] == "8" and 0 <= float(run["oIoU"]) <= 100, run
    (speed,) = printed_csv(out, "amp_speed_13a.csv")
    assert float(speed["fp32_ms"]) > 0 and float(speed["bf16_ms"]) > 0 and float(speed["speedup"]) > 0, speed


def test_bench_cli_startup_times_each_command():
    "bench/bench_cli_startup.py --smoke: one round of each command; the table, and torch imported by neither command."
    out = smoke("bench/bench_cli_startup.py")
    assert "| command | median s | min s | max s | runs | torch imported |" in out
    assert re.search(r"\| `python -m ris_nb presets` \| [\d.]+ \| [\d.]+ \| [\d.]+ \| 1 \| no \|", out), out


def test_bench_impl_times_both_forms():
    "bench/bench_impl.py --smoke: each block and a training step in both forms; a row each, a positive speed-up."
    rows = printed_csv(smoke("bench/bench_impl.py"), "impl_speed.csv")
    assert len(rows) == 6 and rows[-1]["what"].startswith("quickstart training step (magnet_tiny, batch 4"), rows
    assert all(float(r["reference ms"]) > 0 and float(r["fast speed-up"]) > 0 for r in rows), rows


def test_bench_learning_trains_and_scores_a_preset():
    "bench/bench_learning.py --smoke: lavt_tiny trained 2 steps and scored; its row beside the language-blind answers."
    out = smoke("bench/bench_learning.py")
    row = next(l for l in out.splitlines() if l.startswith("| lavt_tiny | 1 | 2 × 4 |"))
    assert 0 <= float(row.split(" | ")[5]) <= 100, row  # val oIoU
    assert "| *largest shape* (no model) |" in out


def test_bench_ops_table_measures_head():
    "bench/bench_ops_table.py --smoke: bench_ops.py's quickstart part against HEAD's ris_nb; its row in the CSV."
    (row,) = printed_csv(smoke("bench/bench_ops_table.py"), "bench_ops.csv")
    assert float(row["qs_step_ms"]) > 0 and int(row["qs_aten_calls"]) > int(row["qs_launches"]) > 0, row


def test_bench_optimizer_times_each_kernel():
    "bench/bench_optimizer.py --smoke: each AdamW kernel timed; a 2-step run's losses equal under fused and foreach."
    out = smoke("bench/bench_optimizer.py")
    assert all(f"| optimizer step | {k} |" in out for k in ("fused", "foreach", "loop")), out
    assert float(re.search(r"largest \|Δloss\| at any step ([\d.e+-]+)", out)[1]) < 1e-3, out


def test_bench_threads_times_a_step():
    "bench/bench_threads.py --smoke: the quickstart step (batch 4) on one thread; its row with samples/s."
    out = smoke("bench/bench_threads.py")
    assert "| threads | samples/s |" in out and float(re.search(r"\n\| 1 \| ([\d.]+) \|", out)[1]) > 0, out


def test_bench_parts_times_each_variant():
    "bench/bench_parts.py --smoke: the quickstart step (batch 4) with each part off; a row per variant with samples/s."
    out = smoke("bench/bench_parts.py")
    rates = {m[1]: float(m[2]) for m in re.finditer(r"\n\| ([^|]+?) \| ([\d.]+) \|", out)}
    assert set(rates) == {
        "the quickstart step",
        "no refine head",
        "no CAM",
        "no Mask Grounding",
        "no CAL loss",
        "2 decoder layers, not 4",
        "all five at once",
    }, out
    assert all(r > 0 for r in rates.values()), out
    params = {m[1]: int(m[2]) for m in re.finditer(r"\n\| ([^|]+?) \| [\d.]+ \| [\d.]+ \| (\d+) \|", out)}
    assert all(n < params["the quickstart step"] for v, n in params.items() if v != "the quickstart step"), params


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


def magnet_ladder():
    "tools/magnet_ladder.py as a module."
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import magnet_ladder

        return magnet_ladder
    finally:
        sys.path.pop(0)


def test_magnet_ladder_ends_at_magnet_tiny_and_starts_at_the_paper_form():
    "The ladder's top rung is magnet_tiny itself; its bottom rung sets magnet_paper's values (but the lattice shift)."
    from ris_nb.core import flat_config
    from ris_nb.presets import get_preset

    ml = magnet_ladder()
    tiny = get_preset("magnet_tiny")
    assert tiny.override(ml.ladder_overrides(len(ml.MAGNET_LADDER) - 1)) == tiny
    assert tiny.override(ml.ladder_overrides(len(ml.MAGNET_LADDER) - 2)) != tiny  # each rung changes something
    paper_values = flat_config(get_preset("magnet_paper"))
    for key, value in ml.PAPER_FORM.items():
        want = 0.0 if key.endswith("offset_init_shift") else paper_values[key]  # the official init: on the lattice
        assert value == want, (key, value, want)


@pytest.mark.parametrize("script", ["magnet_ladder.py", "sag_ladder.py"])
def test_ladder_trains_each_rung_end_to_end(script):
    """tools/magnet_ladder.py and tools/sag_ladder.py --smoke: the paper-form rung and the shipped preset trained for
    real (2 steps on 40 scenes), each scored into a row of its table."""
    p = subprocess.run(
        [sys.executable, str(ROOT / "tools" / script), "--smoke"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
        timeout=600,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert "smoke: 2 rows" in p.stdout, p.stdout[-2000:]


@pytest.mark.parametrize("script", ["magnet_ladder.py", "sag_ladder.py"])
@pytest.mark.parametrize(
    "args,says",
    [([], "--data and --out are required"), (["--data", "d", "--out", "o", "--rungs", "99"], "--rungs [99]")],
)
def test_ladder_refuses_a_missing_folder_or_a_rung_off_the_ladder(script, args, says):
    "Both ladders' shared command line (tools/ladder_cli.py) names what is wrong before training anything."
    p = subprocess.run(
        [sys.executable, str(ROOT / "tools" / script), *args], capture_output=True, text=True, cwd=ROOT, env=ENV
    )
    assert p.returncode == 2 and says in p.stderr, p.stderr[-2000:]
