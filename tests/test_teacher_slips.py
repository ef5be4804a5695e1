"""A teacher's slip is refused, loudly (issue 79, part 4): `ris_nb course`, `course --mark`, `course --nbgrader` and the
student site refuse a notebook that would publish an answer or lose a question, naming notebook, cell and line, and
write nothing. One parameter per slip, each on a tiny two-exercise teacher's notebook."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from ris_nb.__main__ import main
from ris_nb.notebook_cells import read_notebook
from ris_nb.course_files import make_course
from ris_nb.exercise_marks import _mark_exercises
from ris_nb.notebook_cells import HIDDEN, SOLUTION
from ris_nb.grading import nbgrader_course

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import build_site  # noqa: E402

SOLVE = f"def add_one(x):\n    ### {SOLUTION[0]}\n    return x + 1\n    ### {SOLUTION[1]}"
CHECK = f"assert add_one(1) == 2\n### {HIDDEN[0]}\nassert add_one(-1) == 0\n### {HIDDEN[1]}"
THINK = f"think_q1 = None\n### {SOLUTION[0]}\nthink_q1 = 'a'\n### {SOLUTION[1]}"
KEYED = f'check_choice(think_q1, "Q1")\n### {HIDDEN[0]}\ncheck_choice(think_q1, "Q1", key="a")\n### {HIDDEN[1]}'
LESSON = [  # (cell type, source): the lesson, then two exercises
    ("markdown", "# A tiny lesson\n\n> One plus one."),
    ("code", "x = 1"),
    ("markdown", "## Exercises"),
    ("code", "from ris_nb.exercise_checks import check_choice"),
    ("markdown", "### Write it yourself: one more"),
    ("code", SOLVE),
    ("code", CHECK),
    ("markdown", "### Think: which\n\n(a) this (b) that"),
    ("code", THINK),
    ("code", KEYED),
]


def _with(i: int, old: str, new: str) -> list[tuple[str, str]]:
    cells = list(LESSON)
    assert old in cells[i][1], (i, old)
    cells[i] = (cells[i][0], cells[i][1].replace(old, new))
    return cells


# slip → (the notebook's cells, the cell and line the refusal names, what it says)
SLIPS = {
    "exercises heading one level down (3.9)": (_with(2, "## ", "### "), "cell 2 (id c2), line 1", "### Exercises"),
    "misspelt solution markers (3.2)": (_with(5, "SOLUTION", "SOLUTON"), "cell 5 (id c5), line 2", "looks like"),
    "lower-case solution markers (3.3)": (_with(5, "### BEGIN", "### begin"), "cell 5 (id c5), line 2", "looks like"),
    "a key outside the hidden tests (3.12)": (
        _with(9, KEYED, 'check_choice(think_q1, "Q1")\ncheck_choice(think_q1, "Q1", key="a")'),
        "cell 9 (id c9), line 2",
        "outside a",
    ),
    "a key that is no letter (3.11)": (_with(9, 'key="a"', "key=1"), "cell 9 (id c9), line 3", "no letter"),
    "a check with no solution region (3.5)": (
        _with(5, SOLVE, "def add_one(x):\n    return x + 1  # NOMARKSECRET"),
        "cell 6 (id c6), line 1",
        "no BEGIN SOLUTION region",
    ),
    "a solution above the exercises": (
        [*LESSON[:2], ("code", SOLVE), *LESSON[2:]],
        "cell 2 (id c2), line 2",
        "outside",
    ),
}


def write_lesson(folder: Path, cells: list[tuple], dup: bool = False) -> Path:
    """The teacher's notebook `tiny_lesson.ipynb` of `cells` ((type, source[, metadata])) in `folder` (ids c0, c1, …;
    `dup`: a repeated id)."""
    nb = {
        "cells": [
            {"cell_type": t, "id": f"c{i}", "metadata": dict(*meta), "source": s}
            | ({"execution_count": None, "outputs": []} if t == "code" else {})
            for i, (t, s, *meta) in enumerate(cells)
        ],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    if dup:
        nb["cells"][-1]["id"] = nb["cells"][6]["id"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny_lesson.ipynb").write_text(json.dumps(nb))
    return folder / "tiny_lesson.ipynb"


def refused_everywhere(tmp_path: Path, path: Path, where: str, says: str, capsys) -> None:
    "`course`, `course --mark`, `course --nbgrader` and the student site each refuse `path` by cell and line."
    before = path.read_text()
    named = f"tiny_lesson.ipynb, {where}"
    with pytest.raises(ValueError) as e:
        make_course(path.parent, tmp_path / "course", verbose=False)
    assert named in str(e.value) and says in str(e.value), str(e.value)
    assert not (tmp_path / "course").exists(), "a student copy was written"
    with pytest.raises(ValueError) as e:
        nbgrader_course(path.parent, tmp_path / "nbg", verbose=False)
    assert named in str(e.value), str(e.value)
    assert not (tmp_path / "nbg").exists(), "an nbgrader course was written"
    with pytest.raises(ValueError) as e:
        build_site.edition_notebooks(["tiny_lesson"], "student", path.parent)
    assert named in str(e.value), str(e.value)
    assert main(["course", "--mark", str(path.parent)]) == 2
    err = capsys.readouterr().err
    assert named in err and says in err, err
    assert path.read_text() == before, "--mark wrote the notebook"


def test_the_tiny_lesson_itself_is_accepted(tmp_path):
    path = write_lesson(tmp_path / "nbs", LESSON)
    assert [p.name for p in make_course(path.parent, tmp_path / "course", verbose=False)] == ["tiny_lesson.ipynb"]
    student = json.dumps(read_notebook(tmp_path / "course" / "tiny_lesson.ipynb"))
    assert SOLUTION[0] not in student and "key=" not in student


@pytest.mark.parametrize("slip", SLIPS)
def test_a_teachers_slip_is_refused_by_name(tmp_path, slip, capsys):
    cells, where, says = SLIPS[slip]
    refused_everywhere(tmp_path, write_lesson(tmp_path / "nbs", cells), where, says, capsys)


def test_duplicate_cell_ids_are_refused_by_name(tmp_path, capsys):
    "3.6 / 3.7: two cells with one id become one grade id twice, which nbgrader rejects later without naming it."
    path = write_lesson(tmp_path / "nbs", LESSON, dup=True)
    refused_everywhere(tmp_path, path, "cell 9 (id c6), line 1", "cell id 'c6' is cell 6's too", capsys)


def _at(i: int, *cells: tuple) -> list[tuple]:
    "The tiny lesson with `cells` inserted before its cell `i`."
    return [*LESSON[:i], *cells, *LESSON[i:]]


def _meta(**m) -> dict:
    "A cell's metadata: nbgrader's (schema 3), `m` over a locked cell's."
    return {"nbgrader": {"grade": False, "locked": True, "solution": False, "schema_version": 3, "grade_id": "x"} | m}


PRINTED = f'print("### {SOLUTION[0]}")\nLESSONSECRET = 1\nprint("### {SOLUTION[1]}")'
# issue 86, item 2 (fault probe round s10, 4.5, 4.8, 4.9, 4.13, 4.14): slip → (cells, where, says, nbgrader refuses it)
SLIPS_86 = {
    "a marker printed by a lesson cell (4.8, 4.9)": (_at(1, ("code", PRINTED)), "cell 1 (id c1), line 1", "outside", 1),
    "a marker in a lesson string, mid-line": (
        _at(1, ("code", f"note = 'x ### {HIDDEN[0]}'\nend = 'y ### {HIDDEN[1]}'")),
        "cell 1 (id c1), line 1",
        "outside",
        1,
    ),
    "a check cell saved as raw (4.13, 4.14)": (
        [*LESSON[:6], ("raw", CHECK), *LESSON[7:]],
        "cell 6 (id c6), line 1",
        "a raw cell that is a check",
        1,
    ),
    "a check cell saved as markdown": (
        [*LESSON[:6], ("markdown", "assert add_one(1) == 2"), *LESSON[7:]],
        "cell 6 (id c6), line 1",
        "a markdown cell that is a check",
        0,
    ),
    "a raw cell graded by its nbgrader metadata (4.13 marked)": (
        _at(7, ("raw", "add_one(1)", _meta(grade=True, points=2))),
        "cell 7 (id c7), line 1",
        "a raw cell that nbgrader's metadata grades",
        1,
    ),
    "a lesson section after the exercises (4.5)": (
        _at(7, ("markdown", "## What it costs\n\nA lesson section.")),
        "cell 7 (id c7), line 1",
        "heading '## What it costs' after '## Exercises'",
        0,
    ),
    "solution markers in a raw cell of the exercises": (
        _at(8, ("raw", f"### {SOLUTION[0]}\nBecause.\n### {SOLUTION[1]}")),
        "cell 8 (id c8), line 1",
        "'BEGIN SOLUTION' in a raw cell that is no solution cell",
        1,
    ),
    "hidden tests in a markdown cell": (
        _at(8, ("markdown", f"Why?\n### {HIDDEN[0]}\nsecret\n### {HIDDEN[1]}")),
        "cell 8 (id c8), line 2",
        "is no check cell",
        1,
    ),
    "a mark scheme region (nbgrader's task cells)": (
        _at(8, ("markdown", "Why?\n### BEGIN MARK SCHEME\nsecret\n### END MARK SCHEME")),
        "cell 8 (id c8), line 2",
        "is no task cell",
        1,
    ),
    "'AUTOTEST' in a code cell": (_at(1, ("code", "y = 2  # AUTOTEST y")), "cell 1 (id c1), line 1", "AUTOTEST", 1),
    "a grade cell without points": (
        _at(8, ("markdown", "Why?", _meta(grade=True, solution=True, locked=False))),
        "cell 8 (id c8), line 1",
        "points=None",
        1,
    ),
    "a markdown grade cell that is no solution cell": (
        _at(8, ("markdown", "Why?", _meta(grade=True, points=1))),
        "cell 8 (id c8), line 1",
        "not both",
        1,
    ),
    "a grade id twice": (_at(8, ("markdown", "Why?", _meta(grade_id="c5"))), "cell 8 (id c8), line 1", "'c5'", 1),
    "an old nbgrader schema": (
        _at(8, ("markdown", "Why?", _meta(schema_version=1))),
        "cell 8 (id c8), line 1",
        "schema_version 3",
        1,
    ),
}


def nbgrader_refuses(nb: dict, db: Path) -> bool:
    "Whether `nbgrader generate_assignment`'s preprocessors (its database in `db`) refuse the marked `nb`."
    import nbformat
    from nbgrader import preprocessors as pre
    from nbgrader.api import Gradebook

    url = f"sqlite:///{db}"
    with Gradebook(url) as gb:
        gb.update_or_create_assignment("a")
    resources = {"nbgrader": {"notebook": "tiny_lesson", "assignment": "a", "db_url": url}}
    node = nbformat.from_dict(json.loads(json.dumps(nb)))
    steps = [pre.InstantiateTests, pre.LockCells, pre.ClearSolutions, pre.CheckCellMetadata, pre.ComputeChecksums]
    steps += [pre.SaveCells, pre.ClearHiddenTests, pre.ClearMarkScheme, pre.CheckCellMetadata]
    try:
        for step in steps:
            node, resources = step().preprocess(node, resources)
    except Exception:
        return True
    return False


@pytest.fixture
def venv_on_path(monkeypatch):
    "nbgrader's database runs `alembic` from the virtualenv's bin."
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")


def test_nbgrader_takes_the_tiny_lesson_as_marked(tmp_path, venv_on_path):
    "The baseline of SLIPS_86: the marked tiny lesson passes nbgrader generate_assignment's preprocessors."
    nb = read_notebook(write_lesson(tmp_path / "nbs", LESSON))
    assert not nbgrader_refuses(_mark_exercises(nb, "tiny"), tmp_path / "gb.db")


@pytest.mark.parametrize("slip", SLIPS_86)
def test_a_slip_nbgrader_or_a_grader_would_trip_on_is_refused_by_name(tmp_path, slip, capsys, venv_on_path):
    "Issue 86, item 2: refused by `course`, `--mark`, `--nbgrader` and the site, as nbgrader would (was: exit 0)."
    cells, where, says, nbgrader_too = SLIPS_86[slip]
    path = write_lesson(tmp_path / "nbs", cells)
    if nbgrader_too:  # our rule is nbgrader's: its own preprocessors refuse the notebook as marked
        assert nbgrader_refuses(_mark_exercises(read_notebook(path), "tiny"), tmp_path / "gb.db"), slip
    refused_everywhere(tmp_path, path, where, says, capsys)
