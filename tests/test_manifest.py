"""One run behind every saved output: `nbs/results/run_manifest.csv` (written by `tools/run_all.py`) holds, for every
notebook, the run whose outputs it saved, and the hash of the sources that ran; a notebook edited since fails here. And
the output check's tolerant mode (`#| check_output: numbers`, tools/check_notebooks.py) and its marking. Nothing is
executed."""

import csv
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from conftest import run

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run_all, check_notebooks = load("run_all"), load("check_notebooks")
COURSE = sorted(NBS.glob("[0-8][0-9]*.ipynb"))


def manifest() -> dict[str, dict]:
    with run_all.MANIFEST.open() as f:
        return {r["notebook"]: r for r in csv.DictReader(f)}


def rerun(name: str) -> str:
    return f"re-run it: python tools/run_all.py nbs/{name}.ipynb (then commit the notebook and {run_all.MANIFEST.name})"


def test_every_course_notebook_has_a_recorded_run():
    rows = manifest()
    missing = [nb.stem for nb in COURSE if nb.stem not in rows]
    assert not missing, f"no row in nbs/results/{run_all.MANIFEST.name} for {missing}: {rerun(missing[0])}"
    gone = [name for name in rows if not (NBS / f"{name}.ipynb").exists()]
    assert not gone, f"nbs/results/{run_all.MANIFEST.name} has rows for notebooks that do not exist: {gone}"


@pytest.mark.parametrize("name", sorted(manifest()))
def test_saved_outputs_come_from_the_recorded_run_of_these_sources(name):
    row = manifest()[name]
    assert not row["error"], f"{name}: its recorded Run All stopped on an error ({row['error']}); {rerun(name)}"
    assert row["sources_sha256"], f"{name}: no run of its current sources is recorded; {rerun(name)}"
    now = run_all.sources_hash(NBS / f"{name}.ipynb")
    assert now == row["sources_sha256"], (
        f"{name}: its sources changed after the run that saved its outputs (recorded {row['sources_sha256']} at "
        f"{row['commit']} on {row['date']}, now {now}); {rerun(name)}"
    )
    lib = run_all.library_hash(NBS / f"{name}.ipynb")
    assert lib == row.get("library_sha256"), (
        f"{name}: a ris_nb module it imports changed after the run that saved its outputs (recorded "
        f"{row.get('library_sha256') or 'nothing'} at {row['commit']}, now {lib}); {rerun(name)}"
    )


def test_library_hash_follows_the_imports(tmp_path, monkeypatch):
    "A notebook's library hash covers the modules it imports and theirs (relative imports too), and nothing else."
    pkg = tmp_path / "ris_nb"
    (pkg / "models").mkdir(parents=True)
    for f, text in {
        "__init__.py": "",
        "core.py": "X = 1",
        "models/__init__.py": "",
        "models/a.py": "from ..core import X\nfrom . import b",
        "models/b.py": "LAZY = {'c': 'ris_nb.models.c'}",
        "models/c.py": "C = 3",
        "other.py": "O = 0",
    }.items():
        (pkg / f).write_text(text)
    monkeypatch.setattr(run_all, "ROOT", tmp_path)
    nb = tmp_path / "x.ipynb"
    nb.write_text(json.dumps(notebook("from ris_nb.models.a import X")))
    before = run_all.library_hash(nb)
    (pkg / "other.py").write_text("O = 1")  # not imported: the hash stays
    assert run_all.library_hash(nb) == before
    for f in ("core.py", "models/b.py", "models/c.py"):  # through a relative import, a module, a lazy table
        (pkg / f).write_text((pkg / f).read_text() + "\n# changed")
        assert run_all.library_hash(nb) != before, f
        before = run_all.library_hash(nb)


def notebook(*sources: str) -> dict:
    return {"cells": [{"cell_type": "code", "source": s, "outputs": [], "metadata": {}} for s in sources]}


def test_sources_hash_ignores_outputs_metadata_and_check_marks_but_not_code(tmp_path):
    p = tmp_path / "x.ipynb"

    def hashed(nb: dict) -> str:
        p.write_text(json.dumps(nb))
        return run_all.sources_hash(p)

    base = hashed(notebook("#| export\nx = 1", "print(x)"))
    ran = notebook("#| export\nx = 1", "print(x)")
    ran["cells"][1] |= {"outputs": [{"output_type": "stream", "name": "stdout", "text": "1\n"}], "execution_count": 3}
    ran["metadata"] = {"kernelspec": {"name": "python3"}}
    assert hashed(ran) == base
    assert hashed(notebook("#| export\nx = 1", "#| check_output: numbers\nprint(x)")) == base
    assert hashed(notebook("#| export\nx = 1", "#| check_output\nprint(x)")) == base
    assert hashed(notebook("#| export\nx = 2", "print(x)")) != base
    md = notebook("#| export\nx = 1", "print(x)")
    md["cells"][1]["cell_type"] = "markdown"
    assert hashed(md) != base


def test_statement_rounds_up_and_says_when_run_beside_another():
    row = {"seconds": "61.0", "probe_1t_ms": "2.3", "jobs": "1"}
    assert run_all.statement(row).startswith("**Run All:** about 2 min") and "beside" not in run_all.statement(row)
    assert "beside another notebook" in run_all.statement(row | {"jobs": "2"})
    assert run_all.STATEMENT.search("intro\n\n" + run_all.statement(row))


def stdout(text: str) -> dict:
    return {"output_type": "stream", "name": "stdout", "text": text}


def test_numbers_mode_compares_numbers_within_the_tolerance_and_the_rest_exactly():
    diff = check_notebooks.first_difference
    saved = ["val oIoU 50.4, loss 0.6931 after 1,800 steps", "tensor([0.1250, 2.0000])"]
    cpu = ["val oIoU 50.7, loss 0.6925 after 1,800 steps", "tensor([0.1262, 2.0010])"]
    assert diff(saved, cpu) is not None and diff(saved, cpu, "numbers") is None
    assert diff(saved, ["val oIoU 35.2, loss 0.6931 after 1,800 steps", saved[1]], "numbers")  # beyond 5 %
    assert diff(saved, ["val mIoU 50.4, loss 0.6931 after 1,800 steps", saved[1]], "numbers")  # other text
    assert diff(saved, saved[:1], "numbers")  # a line less
    assert diff(["float32 lavt_tiny 12"], ["float16 lavt_tiny 12"], "numbers")  # a number inside a name is text
    assert check_notebooks.numbers_close("3", "4") and not check_notebooks.numbers_close("3", "5")
    assert check_notebooks.numbers_close("3.25e-05", "3.3e-05") and not check_notebooks.numbers_close("40", "400")


def test_a_source_links_line_is_masked():
    link = "[source](https://github.com/ris-nb/ris_nb/blob/main/ris_nb/train.py#L{})"
    lines = check_notebooks.reader_lines
    assert lines([stdout(link.format(784))]) == lines([stdout(link.format(786))])


def test_mark_modes_are_read_from_the_directives():
    mode = check_notebooks.mark_mode
    assert mode({}) is None and mode({"check_output": []}) == "" and mode({"check_output:": ["numbers"]}) == "numbers"
    assert mode({"check_output:": ["run_all", "numbers"]}) == "run_all numbers"
    with pytest.raises(ValueError, match="check_output"):
        mode({"check_output:": ["loose"]})


def test_marks_go_where_the_output_matches_after_the_leading_directives(tmp_path):
    cells = [
        "#| echo: false\nprint('exact')",
        "print('loss', 0.6931)",
        "print('steps', 400)",
        "print('unchanged since the run')",
        "%%time\nprint(1)",
    ]
    p = tmp_path / "m.ipynb"
    p.write_text(json.dumps(notebook(*cells)))
    collected = {
        0: (["exact"], ["exact"], cells[0]),
        1: (["loss 0.6931"], ["loss 0.6925"], cells[1]),
        2: (["steps 400"], ["steps 40"], cells[2]),  # IN_TEST runs fewer
        3: (["same"], ["same"], "print('edited after the run')"),
        4: (["1"], ["1"], cells[4]),
        5: ([], [], ""),  # no text output: nothing to mark
    }
    marks, differ = check_notebooks.proposed_marks(collected)
    assert marks == {0: "", 1: "numbers", 3: "", 4: ""} and differ == [2]
    assert check_notebooks.add_marks(p, marks, {i: c[2] for i, c in collected.items()}) == 2
    got = ["".join(c["source"]) for c in json.loads(p.read_text())["cells"]]
    assert got[0] == "#| echo: false\n#| check_output\nprint('exact')"
    assert got[1] == "#| check_output: numbers\nprint('loss', 0.6931)"
    assert got[2:] == cells[2:]  # differs; edited since the run; a cell magic must stay first


def test_coverage_counts_cells_with_text_output(tmp_path):
    nb = notebook("#| check_output\nprint(1)", "print(2)", "x = 3", "#| check_output: run_all numbers\nprint(4)")
    for i in (0, 1, 3):
        nb["cells"][i]["outputs"] = [stdout(f"{i}\n")]
    (tmp_path / "lesson.ipynb").write_text(json.dumps(nb))
    assert check_notebooks.coverage([tmp_path / "lesson.ipynb"]) == {"lesson": (3, 2, 1)}


def write_notebook(path: Path, cells: list[tuple[str, str]]) -> Path:
    "A runnable notebook of (source, saved stdout) code cells."
    kernel = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb = notebook(*(source for source, _ in cells))
    for cell, (_, out) in zip(nb["cells"], cells):
        cell["outputs"] = [stdout(out)] if out else []
    nb |= {"metadata": {"kernelspec": kernel, "language_info": {"name": "python"}}, "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(nb))
    return path


def test_marking_then_the_run_all_check(tmp_path):
    "--mark marks what matches under IN_TEST; --mark --run-all the rest that matches as Run All; each check passes."
    tool = ROOT / "tools" / "check_notebooks.py"
    steps = "import os\nsteps = 40 if os.environ.get('IN_TEST') else 400\n"
    nb = write_notebook(
        tmp_path / "m.ipynb",
        [
            ("print('3 presets')", "3 presets\n"),
            ("print('loss', 0.6925)", "loss 0.6931\n"),
            (steps + "print(steps, 'steps')", "400 steps\n"),  # saved by Run All: differs under IN_TEST
            ("print('stale')", "old\n"),
        ],
    )
    sources = lambda: ["".join(c["source"]) for c in json.loads(nb.read_text())["cells"]]  # noqa: E731
    marked = run([sys.executable, tool, "--mark", "--path", nb], check=False, cwd=ROOT, timeout=300)
    assert "marked 2 (1 exact, 1 numbers); 2 differ" in marked.stdout, marked.stdout + marked.stderr
    assert "cell 2: line 1 of 1 saved / 1 now" in marked.stdout and "'400 steps'" in marked.stdout, marked.stdout
    run([sys.executable, tool, "--mark", "--run-all", "--path", nb], cwd=ROOT, timeout=300)
    assert sources() == [
        "#| check_output\nprint('3 presets')",
        "#| check_output: numbers\nprint('loss', 0.6925)",
        "#| check_output: run_all\n" + steps + "print(steps, 'steps')",
        "print('stale')",
    ]
    assert "Success." in run([sys.executable, tool, "--path", nb], cwd=ROOT, timeout=300).stdout  # run_all: skipped


def test_the_course_table_has_a_row_per_course_notebook():
    lines = run_all.table(manifest()).splitlines()
    assert len(lines) == len(COURSE) + 2 and all(line.count("|") == 9 for line in lines), lines[:3]
    assert [line.split(" | ")[0].strip("| ") for line in lines[2:]] == [nb.stem for nb in COURSE]
