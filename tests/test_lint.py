"""The code is linted and formatted (ruff, settings in pyproject.toml; `make lint`, fixed by `make format`), and the
wrapping that `tools/format_notebooks.py` adds to ruff keeps code, nbdev directives and magics as they were."""

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINTED = ["ris_nb", "tests", "bench", "tools"]
FORMATTED = ["tests", "bench", "tools"]
spec = importlib.util.spec_from_file_location("format_notebooks", ROOT / "tools" / "format_notebooks.py")
fmt = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # registered first: its dataclass looks itself up
spec.loader.exec_module(fmt)


def ruff(*args: str) -> subprocess.CompletedProcess:
    "ruff from this Python's environment (a dev requirement in settings.ini: `make venv` installs it)."
    if importlib.util.find_spec("ruff") is None:
        pytest.fail(f"ruff is not installed in {sys.prefix}: it is a dev requirement (settings.ini); run `make venv`")
    cmd = [sys.executable, "-m", "ruff", args[0], "--no-cache", *args[1:]]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)


def test_ruff_check_passes():
    res = ruff("check", "--output-format", "concise", *LINTED)
    assert res.returncode == 0, f"ruff check found problems (fix them, or `make format`):\n{res.stdout}{res.stderr}"


def test_ruff_format_is_a_no_op():
    res = ruff("format", "--check", *FORMATTED)  # ris_nb/ is nbdev_export's own layout of formatted cells
    assert res.returncode == 0, f"ruff format would change files (run `make format`):\n{res.stdout}{res.stderr}"


LONG = "word " * 30


def test_a_long_string_is_split_into_parts_that_join_to_it(tmp_path):
    src = f'x = "{LONG.strip()}"\nraise ValueError(f"bad {{x!r}} {LONG.strip()}")\n'
    path = tmp_path / "x.py"
    path.write_text(src)
    assert fmt.format_sources([path]) == []
    out = path.read_text()
    assert all(len(line) <= fmt.MAX for line in out.split("\n")) and len(out.split("\n")) > 4, out
    assert ast.dump(ast.parse(src)) == ast.dump(ast.parse(out))  # implicit concatenation: the very same constants


def test_never_cut_inside_an_fstring_field():
    body = "a" * 50 + " {x if y else 'some words here'} " + "b" * 60
    pieces = fmt.split_string(f'f"{body}"', 60)
    assert pieces and "{x if y else 'some words here'}" in "".join(pieces)
    assert all(p.count("{") == p.count("}") for p in pieces)


def test_comments_and_docstrings_wrap_directives_and_pragmas_stay():
    src = f'#| export\ndef f():\n    "{LONG.strip()}"\n    return 1  # {LONG}\nimport os  # noqa: F401 {LONG}'
    out = fmt.wrap_cell(fmt.wrap_cell(src))
    lines = out.split("\n")
    assert lines[0] == "#| export" and lines[-1] == src.split("\n")[-1]
    assert all(len(line) <= fmt.MAX for line in lines[:-1]), out
    assert ast.get_docstring(ast.parse(out).body[0]).split() == LONG.split()
    assert " ".join(line.strip("# ") for line in lines if line.lstrip().startswith("# ")).split() == LONG.split()


def test_a_trailing_comment_continued_below_it_moves_above_its_line_whole():
    src = "x = 1  # the first part of a comment\n       # which goes on here\ny = 2\n"
    out = fmt.wrap_cell(src, strings=False)
    assert out == "# the first part of a comment which goes on here\nx = 1\ny = 2\n", out


def test_a_long_comment_line_gives_its_overflow_to_the_next_line_of_its_paragraph():
    src = f"# {LONG.strip()} end\n# of the paragraph\n#\n# another one\nx = 1"
    out = fmt.wrap_cell(src)
    assert out.split("\n")[2:] == ["#", "# another one", "x = 1"] and all(len(ln) <= fmt.MAX for ln in out.split("\n"))
    words = " ".join(line[2:] for line in out.split("\n")[:2]).split()
    assert words == LONG.split() + ["end", "of", "the", "paragraph"] and len(out.split("\n")[0]) > 100, out


def test_line_magics_and_cell_magics_are_kept():
    src = f"%time x = 1\n!ls\ny = '{LONG.strip()}'"
    out = fmt.wrap_cell(src)
    assert out.split("\n")[:2] == ["%time x = 1", "!ls"] and out != src
    cell_magic = f"%%bash\necho {LONG}"
    assert fmt.wrap_cell(cell_magic) == cell_magic


def test_a_notebook_keeps_ids_outputs_metadata_and_a_second_run_changes_nothing(tmp_path):
    code = f'#| export\ndef f(x):\n    "{LONG.strip()}"\n    return (x, "{LONG.strip()}")'
    cell = {"cell_type": "code", "execution_count": None, "id": "c0", "metadata": {}, "outputs": [], "source": code}
    kernel = {"display_name": "python3", "language": "python", "name": "python3"}  # ruff formats Python notebooks only
    nb = {"cells": [cell], "metadata": {"kernelspec": kernel}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "x.ipynb"
    path.write_text(json.dumps(nb))
    assert fmt.format_sources([path]) == []
    once = path.read_text()
    fmt.format_sources([path])
    assert path.read_text() == once
    new = json.loads(once)
    assert new["metadata"] == nb["metadata"] and {k: v for k, v in new["cells"][0].items() if k != "source"} == {
        k: v for k, v in cell.items() if k != "source"
    }
    assert once == fmt.dump(new)  # nbdev_clean's layout
