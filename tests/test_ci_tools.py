"""The CI's own tools run for real: tools/ci_stage.py times stages and names those past their budget,
tools/vector_path.py tells an emulated vector path from the machine's own and refuses a value no library reads, and
tools/check_notebooks.py refuses a --path that does not exist and picks the notebooks a vector path can move."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import ci_stage  # noqa: E402
import vector_path  # noqa: E402


def tool(name: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools" / name), *args], capture_output=True, text=True, env=env)


def test_stages_are_timed_recorded_and_tabled(tmp_path):
    env = {"CI_STAGES": str(tmp_path / "stages.tsv"), "PATH": "/usr/bin:/bin"}
    fast = tool("ci_stage.py", "run", "quick", "60", "--", "true", env=env)
    slow = tool("ci_stage.py", "run", "slow one", "0.2", "--", "sleep", "0.5", env=env)
    failed = tool("ci_stage.py", "run", "red", "60", "--", "false", env=env)
    assert (fast.returncode, slow.returncode, failed.returncode) == (0, 0, 1)
    assert "== stage slow one:" in slow.stdout and "PAST ITS BUDGET" in slow.stdout
    assert "PAST" not in fast.stdout
    rows = ci_stage.read_rows(env["CI_STAGES"])
    assert [r[0] for r in rows] == ["quick", "slow one", "red"] and rows[1][1] >= 0.5 and rows[2][3] == 1
    table = tool("ci_stage.py", "table", env["CI_STAGES"]).stdout
    assert "| slow one | 0 s **past** |" in table or "| slow one | 1 s **past** |" in table
    assert table.strip().endswith("stages past their budget: slow one")
    assert tool("ci_stage.py", "table", str(tmp_path / "none.tsv")).returncode == 2


def test_an_emulated_path_is_told_from_the_native_one():
    avx2_only, avx512 = {"avx2", "fma"}, {"avx2", "avx512f"}
    same = vector_path.onednn_same_as_native
    assert same(None, avx512) and same("AVX2", avx2_only) and same("avx512_core", avx2_only)
    assert not same("AVX2", avx512) and not same("AVX", avx2_only)
    # ATen's default kernels are never a machine's own: checked in a fresh process
    assert not vector_path.same_as_native({"ATEN_CPU_CAPABILITY": "default", "PATH": "/usr/bin"}, avx2_only)
    assert not vector_path.same_as_native({"ONEDNN_MAX_CPU_ISA": "AVX2"}, avx512)
    assert vector_path.same_as_native({"ONEDNN_MAX_CPU_ISA": "AVX2"}, avx2_only)
    assert not vector_path.same_as_native({}, set())  # no /proc/cpuinfo: run every path


# issue 86, item 4 (2.1, 2.2): torch reads only the exact lower-case word (`AVX2` and `avx512_vnni` ran AVX-512 here)
MISSPELT = [("ATEN_CPU_CAPABILITY", v) for v in ("bogus", "AVX2", "avx512_vnni")] + [("ONEDNN_MAX_CPU_ISA", "garbage")]


@pytest.mark.parametrize("key,value", MISSPELT)
def test_a_misspelt_vector_path_is_refused_by_name(key, value):
    with pytest.raises(SystemExit, match=f"{key}='{value}' is no value"):
        vector_path.check_environment({key: value})
    vector_path.check_environment({"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "avx2"})
    p = tool("check_notebooks.py", "--coverage", env={key: value, "PATH": "/usr/bin:/bin"})
    assert p.returncode == 1 and f"{key}='{value}'" in p.stderr


def test_a_missing_notebook_path_is_an_error(tmp_path):
    p = tool("check_notebooks.py", "--path", str(tmp_path / "nbs" / "typo.ipynb"))
    assert p.returncode == 2 and "typo.ipynb: no such notebook or folder" in p.stderr
    (tmp_path / "empty").mkdir()
    p = tool("check_notebooks.py", "--path", str(tmp_path / "empty"))
    assert p.returncode == 2 and "no notebook there" in p.stderr


def test_marked_saying_what_it_left_out(tmp_path):
    "Issue 86, item 4 (2.9): `--marked` over notebooks without a marked cell says so (was: nbdev's 'No files were …')."
    cell = {"cell_type": "code", "source": "print(1)", "outputs": [], "metadata": {}, "execution_count": None}
    nb = tmp_path / "a.ipynb"
    nb.write_text(json.dumps({"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    p = tool("check_notebooks.py", "--marked", "--path", str(nb))
    assert p.returncode == 0 and f"no notebook with a marked cell under {nb}: nothing to check" in p.stdout, p.stdout
    assert "eligible" not in p.stdout


def test_fractional_picks_the_notebooks_a_vector_path_can_move(tmp_path):
    import check_notebooks

    def notebook(name: str, text: str, marked: bool = True) -> Path:
        src = ("#| check_output\n" if marked else "") + "print(x)"
        out = [{"output_type": "stream", "name": "stdout", "text": text}]
        cell = {"cell_type": "code", "source": src, "outputs": out, "metadata": {}, "execution_count": 1}
        path = tmp_path / name
        path.write_text(json.dumps({"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
        return path

    assert check_notebooks.prints_fractions(notebook("a.ipynb", "val oIoU 54.92\n"))
    assert check_notebooks.prints_fractions(notebook("b.ipynb", "gap 3e-07\n"))
    assert not check_notebooks.prints_fractions(notebook("c.ipynb", "600 steps, 3 splits, float32\n"))
    assert not check_notebooks.prints_fractions(notebook("d.ipynb", "loss 0.693\n", marked=False))


def test_an_emulated_avx2_path_has_no_native_bfloat16(monkeypatch):
    "Under ONEDNN_MAX_CPU_ISA=AVX2 oneDNN emulates bfloat16 whatever the CPU's flags: `train.amp=auto` stays float32."
    from ris_nb.machine import amp_dtype, cpu_native_bf16

    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert not cpu_native_bf16() and amp_dtype("cpu", "bf16") is None
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx512_core_amx")
    native = cpu_native_bf16()
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    assert native == cpu_native_bf16()  # a cap at or above AMX leaves the CPU's own answer


def test_notebooks_left_out_of_the_vector_paths_print_fractions_and_say_why():
    "Each `SAME_ON_EVERY_PATH` entry is a notebook `--fractional` would otherwise re-run, with its reason."
    import check_notebooks

    for name, why in check_notebooks.SAME_ON_EVERY_PATH.items():
        assert check_notebooks.prints_fractions(ROOT / "nbs" / name) and len(why) > 20, name
