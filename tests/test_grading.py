"""Grading that students cannot subvert: hostile student notebooks neither pass nor change another student's grade.

Every notebook here is a tiny two-exercise lesson written in `tmp_path`; each student notebook runs in a Python process
of its own, so the hostile ones share one `grade_notebooks` call with an honest wrong and an honest right student."""

import copy
import csv
import json
from pathlib import Path

import pytest

from ris_nb.__main__ import main  # `grade` is 19_course's: the whole command
from ris_nb.notebook_cells import read_notebook
from ris_nb.course import to_student
from ris_nb.course_files import make_course
from ris_nb.notebook_cells import HIDDEN, SOLUTION
from ris_nb.grading import grade, grade_notebooks, grading_job, place_checks, teacher_checks
from ris_nb.sandbox import landlock_abi

KEY = "kiwi"
RIGHT = {"sol-double": "def double(x): return 2 * x", "sol-think": f"think_q1 = {KEY!r}"}
REREAD = "re-read the section the question points to"  # check_choice's advice beside a wrong answer
WRONG = {"sol-double": "def double(x): return 2 * x + 1", "sol-think": "think_q1 = 'apple'"}


def code(cid: str, source: str) -> dict:
    return {"cell_type": "code", "id": cid, "metadata": {}, "execution_count": None, "outputs": [], "source": source}


def md(cid: str, source: str) -> dict:
    return {"cell_type": "markdown", "id": cid, "metadata": {}, "source": source}


TEACHER = {
    "cells": [
        md("title", "# Lesson A"),
        md("ex", "## Exercises\n\n### Write it yourself: double"),
        code("sol-double", "def double(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION"),
        code(
            "chk-double",
            "import torch\nfrom ris_nb.exercise_checks import check_function\n"
            "check_function(double, lambda x: 2 * x, lambda g: (torch.randn(3, generator=g),))",
        ),
        md("think", "### Think: the fruit"),
        code("sol-think", f"think_q1 = None\n### BEGIN SOLUTION\nthink_q1 = {KEY!r}\n### END SOLUTION"),
        code(
            "chk-think",
            "from ris_nb.exercise_checks import check_choice\ncheck_choice(think_q1, 'Q1')\n"
            f"### BEGIN HIDDEN TESTS\ncheck_choice(think_q1, 'Q1', key={KEY!r})\n### END HIDDEN TESTS",
        ),
    ],
    "metadata": {},
    "nbformat": 4,
    "nbformat_minor": 5,
}


def student(answers: dict[str, str], edit=None) -> dict:
    "The `ris_nb course` copy of the lesson with `answers` (cell id → source) filled in, then `edit(nb)` applied."
    nb = to_student(copy.deepcopy(TEACHER), backend="own", lesson="lesson_a")
    for c in nb["cells"]:
        if c.get("id") in answers:
            c["source"] = answers[c["id"]]
    if edit:
        edit(nb)
    return nb


def write(folder: Path, nb: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "lesson_a.ipynb").write_text(json.dumps(nb))
    return folder / "lesson_a.ipynb"


def wrong_with(**answers) -> dict:
    return student({**WRONG, **answers})


# What each hostile student tries; every one of them has wrong answers besides.
SCAN = (
    "import gc, re, sys\nseen, f = set(), sys._getframe()\n"
    "while f is not None:\n"
    "    seen |= {v for v in [*f.f_locals.values(), *f.f_globals.values()] if isinstance(v, str)}\n"
    "    f = f.f_back\n"
    "for o in gc.get_objects():\n"
    "    if isinstance(o, str): seen.add(o)\n"
    "    elif isinstance(o, dict): seen |= {v for v in o.values() if isinstance(v, str)}\n"
    "    elif isinstance(o, (list, tuple)): seen |= {v for v in o if isinstance(v, str)}\n"
    "try: seen.add(open('/proc/self/fd/0').read())\n"  # the job, on stdin
    "except OSError: pass\n"
    "near = [s for s in seen if 'check_choice' in s]\n"
    'keys = sorted({k for s in near for k in re.findall(r"key\\s*=\\s*[\'\\"](\\w+)", s)})\n'
    "think_q1 = ','.join(keys) or 'nothing'"
)
SLY = (
    "class Sly(str):\n    def __eq__(self, other): return True\n    def __ne__(self, other): return False\n"
    "    __hash__ = str.__hash__\n    def strip(self, *a): return self\n    def lower(self): return self\n"
    "think_q1 = Sly('apple')"
)
PATCH = (
    "import ris_nb.exercise_checks as c\n"
    "for n in ('check_function', 'check_choice', 'compare', 'check_fields', 'check_in_range'):\n"
    "    f = getattr(c, n)\n"
    "    getattr(f, '__wrapped__', f).__code__ = (lambda *a, **k: None).__code__\n"  # the checker's own body
    "    setattr(c, n, lambda *a, **k: None)\n"
    "def double(x): return x"
)
REBIND = "check_function = check_choice = compare = lambda *a, **k: None\ndef double(x): return x"
# Issue 86 (3.11, 3.12, 3.24): the grader's list of checks sought through the frames, well-formed answers forged on
# every pipe, the checks made to raise their own source (hidden tests included). The checks never reach this process.
WALK = (
    "import sys\nf = sys._getframe()\nwhile f is not None and 'cells' not in f.f_locals:\n    f = f.f_back\n"
    "cells = f.f_locals['cells'] if f is not None else []\n"
)
FRAME_FORGE = WALK + "for c in cells:\n    c['source'] = 'pass'\ndef double(x):\n    raise NotImplementedError"
LEAK_HIDDEN = WALK + "for c in cells:\n    c['source'] = 'raise RuntimeError(' + repr('LEAK' 'ED ' + c['source']) + ')'"
PIPE_FORGE = (
    "import os\nfrom ris_nb.sandbox import encode_message\n"
    "forged = b''.join(encode_message(m) for m in [{'ok': True}, {'callable': True}, {'value': 2, 'flows': []}] * 4)\n"
    "for fd in range(3, 64):\n    try:\n        os.write(fd, forged)\n    except OSError:\n        pass\nos._exit(0)"
)


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    "One grading call: the hostile students first, then notebooks with missing or renamed checks, then two honest ones."
    tmp = tmp_path_factory.mktemp("grading")
    teacher = write(tmp / "teacher", TEACHER)
    honest_wrong = tmp / "honest_wrong" / "lesson_a.ipynb"
    writes = (
        f"open('inside.txt', 'w').write('x')\nopen('../escape.txt', 'w').write('x')\n"
        f"open({str(tmp / 'absolute.txt')!r}, 'w').write('x')\n"
        f"open({str(honest_wrong)!r}, 'w').write('{{}}')\n"  # another student's notebook, on disk
        "def double(x): return x"
    )

    def rename(nb, cid):
        cell = next(c for c in nb["cells"] if c.get("id") == cid)
        cell["id"], cell["metadata"] = "renamed", {}

    def no_ids(nb):
        nb["nbformat_minor"] = 4
        for c in nb["cells"]:
            c.pop("id", None)

    notebooks = {
        "patch_checker": wrong_with(**{"sol-double": PATCH}),
        "rebind_checks": wrong_with(**{"sol-double": REBIND}),
        "read_frames": wrong_with(**{"sol-think": SCAN}),
        "read_teacher": wrong_with(**{"sol-think": f"think_q1 = open({str(teacher)!r}).read()[-300:]"}),
        "signal_grader": wrong_with(
            **{
                "sol-think": "import os\ntry: os.kill(os.getppid(), 0); think_q1 = 'reached'\n"
                "except PermissionError: think_q1 = 'blocked'"
            }
        ),
        "str_subclass": wrong_with(**{"sol-think": SLY}),
        "os_exit": wrong_with(**{"sol-double": "import os\nos._exit(0)"}),
        "system_exit": wrong_with(**{"sol-double": "raise SystemExit(0)"}),
        "keyboard_interrupt": wrong_with(**{"sol-double": "raise KeyboardInterrupt"}),
        "writes": wrong_with(**{"sol-double": writes}),
        "frame_forge": wrong_with(**{"sol-double": FRAME_FORGE}),
        "pipe_forge": wrong_with(**{"sol-double": PIPE_FORGE}),
        "leak_hidden": wrong_with(**{"sol-double": LEAK_HIDDEN + "\ndef double(x): return x"}),
        "deleted_check": student(RIGHT, lambda nb: nb["cells"].pop(6)),
        "renamed_no_grade_id": student(RIGHT, lambda nb: rename(nb, "chk-think")),
        "nbformat_4_4": student(RIGHT, no_ids),
        "honest_wrong": student(WRONG),
        "honest_right": student(RIGHT),
    }
    paths = {name: write(tmp / name, nb) for name, nb in notebooks.items()}
    result = grade_notebooks(teacher, list(paths.values()), timeout=120)
    return {name: g for name, g in zip(paths, result)}, tmp


def outcome(g) -> dict[str, tuple[bool, str]]:
    return {r.name: (r.passed, r.message) for r in g.results}


HOSTILE = [
    "patch_checker",
    "rebind_checks",
    "read_frames",
    "str_subclass",
    "os_exit",
    "system_exit",
    "keyboard_interrupt",
    "writes",
    "frame_forge",
    "pipe_forge",
    "leak_hidden",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_student_passes_nothing(graded, name):
    g = graded[0][name]
    assert not g.refused and [r.name for r in g.results] == ["chk-double", "chk-think"], g
    assert not any(r.passed for r in g.results), f"{name}: {outcome(g)}"


def test_honest_students_graded_as_ever_after_the_hostile_ones(graded):
    "Patches, rebinding and file writes of the notebooks graded before change nothing for the honest ones after them."
    wrong, right = graded[0]["honest_wrong"], graded[0]["honest_right"]
    assert outcome(right) == {"chk-double": (True, ""), "chk-think": (True, "")}, outcome(right)
    got = outcome(wrong)
    assert not got["chk-double"][0] and "value:" in got["chk-double"][1], got
    assert got["chk-think"] == (False, f"Q1: 'apple' is not the expected answer; {REREAD}"), got
    assert not wrong.ended and not right.ended


def test_how_each_hostile_notebook_failed(graded):
    g = graded[0]
    assert "value:" in outcome(g["patch_checker"])["chk-double"][1]  # the check ran from a fresh import
    assert "value:" in outcome(g["rebind_checks"])["chk-double"][1]
    assert "a Sly, not plain data" in outcome(g["str_subclass"])["chk-think"][1]
    assert "exited with code 0 in cell 2" in g["os_exit"].ended
    assert g["system_exit"].ended == "the notebook ended: SystemExit: 0 raised in cell 2"
    assert g["keyboard_interrupt"].ended == "the notebook ended: KeyboardInterrupt raised in cell 2"
    assert all(m.startswith("not run: ") for _, m in outcome(g["os_exit"]).values())


def test_no_check_reaches_the_student_process(graded):
    "The student's process runs the student's cells only: no check source, key or hidden test is in it to be found."
    assert outcome(graded[0]["read_frames"])["chk-think"][1].startswith("Q1: 'nothing' is not the expected answer")
    checks = teacher_checks(TEACHER, "teacher")
    nb = student(WRONG)
    job = grading_job(nb, checks, place_checks(nb, checks, 1), 1)
    theirs = json.dumps([c for c in job if c["kind"] != "check"])
    assert KEY not in theirs and "check_choice" not in theirs and "check_function" not in theirs
    assert [c["kind"] for c in job] == ["student", "check", "student", "check"]


def test_forged_answers_and_frame_walks_score_nothing_and_leak_nothing(graded):
    "3.11, 3.12, 3.24: no point, and no line of a check or hidden test in any message of any notebook."
    g = graded[0]
    assert "not written yet" in outcome(g["frame_forge"])["chk-double"][1], outcome(g["frame_forge"])
    assert "exited with code 0" in g["pipe_forge"].ended or "garbled" in g["pipe_forge"].ended, g["pipe_forge"]
    messages = [r.message for x in g.values() for r in x.results] + [x.ended for x in g.values()]
    assert not [m for m in messages if KEY in m or "LEAKED" in m or "check_" in m or "HIDDEN" in m], messages


def test_writes_outside_the_scratch_copy(graded):
    "Relative writes land in the scratch copy (removed after); others are refused under Landlock; grades stay apart."
    tmp = graded[1]
    assert not (tmp / "writes" / "inside.txt").exists() and not (tmp / "escape.txt").exists()
    if landlock_abi():
        assert not (tmp / "absolute.txt").exists() and (tmp / "honest_wrong" / "lesson_a.ipynb").read_text() != "{}"
    else:  # not contained: the teacher's rights
        assert (tmp / "absolute.txt").exists()
        assert (tmp / "honest_wrong" / "lesson_a.ipynb").read_text() == "{}"  # overwritten, graded as it was read


@pytest.mark.skipif(not landlock_abi(), reason="no Landlock in this kernel: reads and signals are not contained")
def test_landlock_contains_reads_and_signals(graded):
    "Under Landlock a student's process cannot read the teacher's notebook by its path, nor signal the grader (ABI 6)."
    read = outcome(graded[0]["read_teacher"])["chk-think"]
    assert not read[0] and KEY not in read[1], read
    if landlock_abi() >= 6:
        blocked = outcome(graded[0]["signal_grader"])["chk-think"][1]
        assert blocked.startswith("Q1: 'blocked' is not the expected answer"), blocked


def test_missing_and_renamed_checks(graded):
    g = graded[0]
    assert outcome(g["deleted_check"])["chk-think"][0] is False
    assert outcome(g["deleted_check"])["chk-think"][1].startswith("missing: ")
    assert outcome(g["deleted_check"])["chk-double"] == (True, "")  # 1/2, not 1/1
    assert outcome(g["renamed_no_grade_id"])["chk-think"][1].startswith("missing: ")
    assert outcome(g["nbformat_4_4"]) == {"chk-double": (True, ""), "chk-think": (True, "")}


def test_another_lesson_is_refused(tmp_path):
    other = student(RIGHT, lambda nb: nb["metadata"].update(ris_nb={"lesson": "lesson_b"}))
    teacher = write(tmp_path / "teacher", TEACHER)
    with pytest.raises(ValueError, match="is a copy of lesson 'lesson_b', not 'lesson_a'"):
        grade(write(tmp_path / "s1", other), teacher)
    unrelated = {"cells": [md("m", "## Exercises"), code("x", "check_choice(q, 'Q1')")], "metadata": {}}
    with pytest.raises(ValueError, match="holds none of the 2 checks of lesson 'lesson_a'"):
        grade(write(tmp_path / "s2", unrelated), teacher)


def test_a_moved_exercises_heading_is_named(tmp_path):
    "The `## Exercises` heading moved below the exercise cells: refused, saying so (was: 'holds none of the checks')."
    moved = student(RIGHT, lambda nb: nb["cells"].append(nb["cells"].pop(1)))
    with pytest.raises(ValueError, match="heading \\(cell 6\\) comes after the exercise cells"):
        grade(write(tmp_path / "s", moved), write(tmp_path / "teacher", TEACHER))


def test_hanging_student_times_out_and_the_next_is_graded(tmp_path):
    teacher = write(tmp_path / "teacher", TEACHER)
    hang = write(tmp_path / "hang", wrong_with(**{"sol-double": "while True: pass"}))
    wrong = write(tmp_path / "wrong", student(WRONG))
    g_hang, g_wrong = grade_notebooks(teacher, [hang, wrong], timeout=5)
    assert g_hang.ended == "timed out after 5 s (in cell 2)", g_hang.ended
    assert not any(r.passed for r in g_hang.results)
    assert outcome(g_wrong)["chk-think"] == (False, f"Q1: 'apple' is not the expected answer; {REREAD}")


def test_changed_package_files_stop_grading(tmp_path, monkeypatch):
    import ris_nb.grading as grading

    digests = iter(["before", "after"])
    monkeypatch.setattr(grading, "_package_digest", lambda: next(digests))
    teacher = write(tmp_path / "teacher", TEACHER)
    with pytest.raises(ValueError, match="ris_nb's own files changed while .* was graded"):
        grade_notebooks(teacher, [write(tmp_path / "s", student(RIGHT))], timeout=120)


def test_cli_prints_a_table_and_writes_a_csv(tmp_path, capsys):
    teacher = write(tmp_path / "teacher", TEACHER)
    right = write(tmp_path / "right", student(RIGHT))
    other = write(tmp_path / "other", student(RIGHT, lambda nb: nb["metadata"].update(ris_nb={"lesson": "lesson_b"})))
    out = tmp_path / "grades.csv"
    assert main(["grade", str(teacher), str(right), str(other), "--csv", str(out), "--timeout", "120"]) == 2
    printed = capsys.readouterr()
    # points: write it yourself 2, one Think question 1 (19_course's rule)
    assert f"{right}     3/3" in printed.out and "refused: " in printed.out, printed.out
    assert "ris_nb grade: error: 1 of 2 notebooks not graded" in printed.err
    rows = list(csv.DictReader(out.open()))
    assert [(r["notebook"], r["check"], r["passed"]) for r in rows] == [
        (str(right), "chk-double", "True"),
        (str(right), "chk-think", "True"),
        (str(other), "", "False"),
    ]
    assert [(r["score"], r["points"]) for r in rows] == [("2", "2"), ("1", "1"), ("", "")], rows
    assert rows[2]["message"].startswith("refused: ") and not list(tmp_path.glob("*.tmp*"))


def test_unbalanced_markers_name_notebook_and_cell(tmp_path):
    bad = copy.deepcopy(TEACHER)
    bad["cells"][5]["source"] = bad["cells"][5]["source"].replace("### END SOLUTION", "")
    (tmp_path / "nbs").mkdir()
    (tmp_path / "nbs" / "lesson_a.ipynb").write_text(json.dumps(bad))
    for backend in ("own", "nbgrader", "auto"):
        with pytest.raises(ValueError, match=r"lesson_a.ipynb, cell 5 \(id sol-think\): line 2: 'BEGIN SOLUTION' with"):
            make_course(tmp_path / "nbs", tmp_path / f"course_{backend}", backend=backend, verbose=False)
    bad["cells"][6]["source"] += "\n### BEGIN HIDDEN TESTS"
    with pytest.raises(ValueError, match=r"teacher, cell 5"):
        teacher_checks(bad, "teacher")
    with pytest.raises(ValueError, match="key=KEYS\\['q1'\\]\\) is an expression"):
        keyed = code("k", "check_choice(q, 'Q1', key=KEYS['q1'])")
        teacher_checks({**TEACHER, "cells": TEACHER["cells"][:6] + [keyed]}, "t")


def test_student_copies_carry_the_check_names(tmp_path):
    (tmp_path / "nbs").mkdir()
    (tmp_path / "nbs" / "lesson_a.ipynb").write_text(json.dumps(TEACHER))
    nb = read_notebook(make_course(tmp_path / "nbs", tmp_path / "course", verbose=False)[0])
    assert nb["metadata"]["ris_nb"] == {"lesson": "lesson_a"}
    names = {c["id"]: c["metadata"].get("nbgrader", {}).get("grade_id") for c in nb["cells"]}
    assert names == {  # marked for nbgrader: every exercise code cell, its grade_id its cell id
        "title": None,
        "ex": None,
        "sol-double": "sol-double",
        "chk-double": "chk-double",
        "think": None,
        "sol-think": "sol-think",
        "chk-think": "chk-think",
    }
    assert SOLUTION[0] not in json.dumps(nb) and HIDDEN[0] not in json.dumps(nb) and KEY not in json.dumps(nb)


def test_a_failed_check_shows_its_message_not_a_traceback():
    "In Jupyter (IPython) a failed check prints one line; the student's own error shows its own frames only; a"
    "traceback formatted by Python (execnb, a script) holds one checker frame, not the checker's inner calls."
    from execnb.shell import CaptureShell

    shell = CaptureShell()
    out = shell.run(
        "import torch\nfrom ris_nb.exercise_checks import check_function\n"
        "check_function(lambda x: x + 1, lambda x: x, lambda g: (torch.zeros(2),), name='f')"
    )
    text = "".join(t for o in out if o.get("output_type") == "stream" for t in o["text"])
    assert text.strip().splitlines() == [
        "CheckError: f, random input #1, output: value: 2 of 2 entries differ "
        "(largest |difference| 1); first at index [0]: got 1, expected 0",
        "  on these inputs:",
        "    argument 0: tensor([0, 0]) of shape (2,), torch.float32",
    ], text
    out = shell.run("def mine(x):\n    return x.nope\ncheck_function(mine, lambda x: x, lambda g: (torch.zeros(2),))")
    lines = "".join(t for o in out if o.get("output_type") == "stream" for t in o["text"]).strip().splitlines()
    assert lines[-1].startswith("CheckError: mine raised AttributeError") and "checks.py" not in "\n".join(lines), lines
    assert len(lines) <= 6, lines
    out = shell.run("check_function(lambda x: x + 1, lambda x: x, lambda g: (torch.zeros(2),), name='f', grad=True)")
    printed = "".join(next(o for o in out if o["output_type"] == "error")["traceback"])  # as execnb saves it
    frames = [l for l in printed.splitlines() if l.lstrip().startswith("File ") and "checks.py" in l]
    assert len(frames) == 1 and printed.rstrip().endswith("argument 0: tensor([0, 0]) of shape (2,), torch.float32")
    assert "first at index [0]: got 1, expected 0\n  on these inputs:" in printed, printed


def test_an_answer_of_another_shape_is_trusted_in_nothing():
    "Bytes on the answer pipe that are no saved dict (a forged record, junk, a huge length) end the process, named."
    from ris_nb.sandbox import StudentBudget, StudentEnded, StudentSession, encode_message

    junk = {
        "not torch.save": (5).to_bytes(8, "big") + b"junk!",
        "not a dict": encode_message([1, 2]),
        "a pickle that builds an object": encode_message({"x": __import__("argparse").Namespace(a=1)}),
        "a huge length": (1 << 40).to_bytes(8, "big"),
    }
    for why, data in junk.items():
        cell = "import os\nfor fd in range(3, 64):\n    try:\n"
        cell += f"        os.write(fd, {data!r})\n    except OSError:\n        pass\n"
        with StudentSession(None, 30, None, StudentBudget()) as s:
            with pytest.raises(StudentEnded) as e:
                s.ask({"op": "run", "index": 3, "source": cell + "import time\ntime.sleep(60)"})
        assert str(e.value) in (
            "its answer to the grader is garbled; none of it is trusted (in cell 3)",
            "it answered with over 64 MiB (in cell 3)",
        ), (why, str(e.value))
    closes = (
        "import os, time\nfor fd in range(3, 64):\n    try:\n        os.close(fd)\n    except OSError:\n        pass\n"
    )
    with StudentSession(None, 30, None, StudentBudget()) as s:  # its answers closed, then it runs on
        with pytest.raises(StudentEnded, match=r"^it stopped answering the grader \(in cell 3\)$"):
            s.ask({"op": "run", "index": 3, "source": closes + "time.sleep(60)"})
