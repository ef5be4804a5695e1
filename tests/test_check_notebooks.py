"""tools/check_notebooks.py (`make test`'s notebook step): a marked cell whose output changed fails the run; a changed
time, an unmarked cell or a skipped one does not."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ENV, run

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "check_notebooks.py"
spec = importlib.util.spec_from_file_location("check_notebooks", TOOL)
check_notebooks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_notebooks)


def stdout(text: str) -> dict:
    return {"output_type": "stream", "name": "stdout", "text": text.splitlines(True)}


def code(source: str, outputs: list) -> dict:
    return {"cell_type": "code", "execution_count": None, "metadata": {}, "source": source, "outputs": outputs}


def test_masks_times_rates_and_addresses_but_not_other_numbers():
    lines = check_notebooks.reader_lines
    assert lines([stdout("400 steps in 31.2 s, 880 samples/s, probe 2.86 ms <object at 0x7f3a2b1c9d00>\n")]) == lines(
        [stdout("400 steps in 4.0 s, 1,718 samples/s, probe 11.72 ms <object at 0x7f00aa11bb22>\n")]
    )
    assert lines([stdout("lavt_tiny: 2.41 M parameters\n")]) != lines([stdout("lavt_tiny: 2.42 M parameters\n")])
    a = "probe 3.1 ms on one thread, 15.90 on two; in use (pid 25253); commit 91382ccc18; swin 1.25M    4.0 s\n"
    b = "probe 2.9 ms on one thread, 2.10 on two; in use (pid 8070); commit e90a9b37d2; swin 1.25M   12.0 s\n"
    assert lines([stdout(a)]) == lines([stdout(b)])
    assert lines([stdout("15.90 on two\n")]) != lines([stdout("15.90 on three\n")])


def test_the_cpus_bf16_verdict_is_masked():
    lines = check_notebooks.reader_lines
    native = "precision: bfloat16 autocast (train.amp=bf16: this CPU computes bf16 natively)\n"
    emulated = (
        "precision: float32 (train.amp=bf16: this CPU has no native bfloat16 (emulated bf16 is slower than float32); "
        "falling back to float32)\n"
    )
    assert lines([stdout(native)]) == lines([stdout(emulated)])
    off = "precision: float32 (train.amp=off: autocast off)\n"
    assert lines([stdout(off)]) != lines([stdout(native)])


@pytest.mark.parametrize(
    "saved, now, agree",
    [
        ("step  100  loss 0.623", "step  100  loss 0.615", True),  # a trained loss on another CPU: within 5 %
        ("max abs error 3.3e-07", "max abs error 2.7e-07", True),  # float32 rounding: within 1e-5
        ("max abs error 8.3e-07", "max abs error 0.0e+00", True),
        ("max abs error 3.3e-07", "max abs error 2.7e-04", False),
        ("oIoU 50.3", "oIoU 55.3", False),
        ("worst: pred_masks 4.5e-06", "worst: l4_res_norm 4.5e-06", False),  # the text must match
    ],
)
def test_numbers_agree_within_a_tolerance_and_only_under_numbers(saved, now, agree):
    assert check_notebooks.lines_agree(saved, now, "numbers") == agree
    assert not check_notebooks.lines_agree(saved, now, "")


def test_reads_stdout_stderr_and_markdown_but_not_warnings_or_images():
    md = {
        "output_type": "display_data",
        "metadata": {},
        "data": {"text/markdown": ["| a |\n", "|---|\n", "| 1 |"], "text/plain": ["<Markdown object>"]},
    }
    png = {"output_type": "display_data", "metadata": {}, "data": {"image/png": "iVBOR", "text/plain": ["<Figure>"]}}
    err = {
        "output_type": "stream",
        "name": "stderr",
        "text": ["x.py:3: UserWarning: something\n", "  warnings.warn(\n", "error: unknown preset 'x'\n"],
    }
    assert check_notebooks.reader_lines([stdout("hi\n"), err, md, png]) == [
        "hi",
        "error: unknown preset 'x'",
        "| a |",
        "|---|",
        "| 1 |",
    ]


def test_first_difference_names_the_line():
    diff = check_notebooks.first_difference(["a", "12 presets"], ["a", "14 presets", "more"])
    assert diff.startswith("line 2 of 2 saved / 3 now") and "'12 presets'" in diff and "'14 presets'" in diff
    assert check_notebooks.first_difference(["a"], ["a"]) is None


def write_notebook(path: Path, cells: list[dict]) -> Path:
    kernel = {"name": "python3", "display_name": "Python 3", "language": "python"}
    meta = {"kernelspec": kernel, "language_info": {"name": "python"}}
    nb = {"cells": cells, "metadata": meta, "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(nb))
    return path


def test_a_changed_marked_output_fails_and_names_its_cell(tmp_path):
    nb = write_notebook(
        tmp_path / "stale.ipynb",
        [
            code("#| check_output\nprint(len(list(range(14))), 'presets')", [stdout("12 presets\n")]),  # stale
            code(
                "#| check_output\nimport time\nprint(f'took {time.perf_counter() % 7:.2f} s')",
                [stdout("took 9.99 s\n")],
            ),
            code("print('now this')", [stdout("an unmarked cell may differ\n")]),
            code("#| slow\n#| check_output\nprint('not run')", [stdout("a skipped cell is not compared\n")]),
        ],
    )
    p = run([sys.executable, TOOL, "--path", nb], check=False, cwd=ROOT, timeout=300)
    assert p.returncode == 1, p.stdout + p.stderr
    assert (
        "stale.ipynb cell 0 (#| check_output)" in p.stderr
        and "saved: '12 presets'" in p.stderr
        and "now:   '14 presets'" in p.stderr
    ), p.stderr
    assert "cell 1" not in p.stderr and "cell 2" not in p.stderr and "cell 3" not in p.stderr, p.stderr
    forced = run([sys.executable, TOOL, "--path", nb, "--flags", "slow"], check=False, cwd=ROOT, timeout=300)  # runs it
    assert "stale.ipynb cell 3" in forced.stderr and "now:   'not run'" in forced.stderr, forced.stderr


def test_outputs_as_saved_pass(tmp_path):
    nb = write_notebook(
        tmp_path / "fresh.ipynb",
        [
            code("#| check_output\nimport os\nprint('IN_TEST', os.environ.get('IN_TEST'))", [stdout("IN_TEST 1\n")]),
            code(
                "#| check_output\n{'oIoU': 89.2}",
                [
                    {
                        "output_type": "execute_result",
                        "execution_count": 1,
                        "metadata": {},
                        "data": {"text/plain": ["{'oIoU': 89.2}"]},
                    }
                ],
            ),
        ],
    )
    p = run([sys.executable, TOOL, "--path", nb], check=False, cwd=ROOT, timeout=300)
    assert p.returncode == 0 and "Success." in p.stdout, p.stdout + p.stderr


# A cell whose text depends on ATen's kernels, as a trained loss does on the CPU's vector path (make test-portable)
KERNELS = "#| check_output\nimport os\nprint('kernels', os.environ.get('ATEN_CPU_CAPABILITY', 'native'))"


def native_run(args: list) -> subprocess.CompletedProcess:
    "The tool in a child process on the CPU's own vector path (none of `PATH_VARS` set), whatever this test's path."
    env = {k: v for k, v in ENV.items() if k not in check_notebooks.PATH_VARS}
    return subprocess.run([sys.executable, TOOL, *map(str, args)], capture_output=True, text=True, env=env, cwd=ROOT)


def test_an_output_saved_on_another_vector_path_is_named_so_not_stale(tmp_path):
    nb = write_notebook(
        tmp_path / "vec.ipynb",
        [
            code(KERNELS, [stdout("kernels default\n")]),  # saved under ATEN_CPU_CAPABILITY=default
            code("#| check_output\nprint('12 presets')", [stdout("11 presets\n")]),  # stale on every path
        ],
    )
    p = native_run(["--path", nb])
    assert p.returncode == 1, p.stdout + p.stderr
    assert (
        "vec.ipynb cell 0 (#| check_output): this output depends on the CPU's vector path (reproduced under "
        "ATEN_CPU_CAPABILITY=default)" in p.stderr
    ), p.stderr
    assert "now:   'kernels native'" in p.stderr, p.stderr
    assert "vec.ipynb cell 1 (#| check_output): saved output is not what it prints now" in p.stderr, p.stderr
    assert "a stale marked output): vec.ipynb" in p.stdout, p.stdout
    nb = write_notebook(tmp_path / "vec.ipynb", [code(KERNELS, [stdout("kernels default\n")])])
    p = native_run(["--path", nb])
    assert p.returncode == 1 and "vector path, native here): vec.ipynb" in p.stdout, p.stdout + p.stderr
    assert "stale" not in p.stdout, p.stdout
    quiet = native_run(["--path", nb, "--no-vector-paths"])  # not re-run: called stale, as it cannot tell
    assert "saved output is not what it prints now" in quiet.stderr and "re-running" not in quiet.stdout, quiet.stdout


def test_a_cell_is_marked_only_where_every_vector_path_prints_it_alike(tmp_path):
    nb = write_notebook(
        tmp_path / "m.ipynb",
        [
            code(KERNELS.replace("#| check_output\n", ""), [stdout("kernels native\n")]),  # as saved natively only
            code("print('3 presets')", [stdout("3 presets\n")]),
        ],
    )
    p = native_run(["--mark", "--path", nb])
    assert p.returncode == 0, p.stdout + p.stderr
    assert "m.ipynb: marked 1 (1 exact, 0 numbers); 1 differ" in p.stdout, p.stdout
    assert (
        "cell 0: depends on the CPU's vector path: under ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2" in p.stdout
    )
    sources = ["".join(c["source"]) for c in json.loads(nb.read_text())["cells"]]
    assert not sources[0].startswith("#| check_output") and sources[1] == "#| check_output\nprint('3 presets')"


def test_marked_selects_the_notebooks_the_check_compares(tmp_path):
    marked = write_notebook(tmp_path / "a.ipynb", [code("#| check_output\nprint(1)", [stdout("1\n")])])
    run_all = write_notebook(tmp_path / "b.ipynb", [code("#| check_output: run_all\nprint(1)", [stdout("1\n")])])
    bare = write_notebook(tmp_path / "c.ipynb", [code("print(1)", [stdout("1\n")])])
    assert check_notebooks.checked_here(marked, False) and not check_notebooks.checked_here(bare, True)
    assert not check_notebooks.checked_here(run_all, False) and check_notebooks.checked_here(run_all, True)
