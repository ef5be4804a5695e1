"""nbgrader that a student cannot fool (issue 79, part 3): the course's nbgrader_config.py, on a tiny two-exercise
lesson (a function worth 2 points, a Think question worth 1), through nbgrader itself with hostile and clumsy
submissions: a moved `## Exercises` heading, patched checks printing the keys, a read of the teacher's `source/`, a
duplicated grade id placed first, a solution cell given points, check cells unlocked and emptied, nbformat 5.

Each gets the right score, or is named and exported as `not graded` (never 0.0), and none stops the others; the
feedback shows no key, no hidden test and nothing the student's code printed. One nbgrader course, one worker."""

from __future__ import annotations

import copy
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ENV
from ris_nb.notebook_cells import read_notebook
from ris_nb.course import nbgrader_available
from ris_nb.notebook_cells import HIDDEN
from ris_nb.grading import nbgrader_course
from ris_nb.sandbox import landlock_abi
from test_grading import PIPE_FORGE, WALK
from test_teacher_slips import LESSON, write_lesson

pytestmark = [
    pytest.mark.xdist_group("nbgrader_hostile"),
    pytest.mark.skipif(not nbgrader_available(), reason="nbgrader not installed"),
]

BIN = Path(sys.executable).parent
NB_ENV = {**ENV, "PATH": f"{BIN}{os.pathsep}{ENV.get('PATH', '')}"}  # nbgrader calls `alembic` from PATH
# Without Landlock a student's process can read source/ (the documented limit of `ris_nb grade`): that case is not
# contained there, so it is not checked there.
UNCONFINED = set() if landlock_abi() else {"readsource"}
EXCHANGE_STUDENT = "via_exchange"  # the student who fetches and submits through nbgrader's exchange
LEAK = "LEAKED"  # what a hostile submission prints beside anything secret it finds (its code writes 'LEAK' 'ED')
PATCH = (
    "import ris_nb.exercise_checks as _C\n"
    "_C.fresh_checks = lambda: {n: (lambda *a, **k: print('LEAK' 'ED', a, k)) for n in _C.CHECK_NAMES}\n"
    "check_choice = check_function = compare = lambda *a, **k: print('LEAK' 'ED', a, k)\n"
)


UNREADABLE = {"utf16": lambda text: text.encode("utf-16"), "empty": lambda text: b""}  # a notebook saved so


def nbgrader(course: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [str(BIN / "nbgrader"), *args]
    return subprocess.run(cmd, cwd=course, env=NB_ENV, capture_output=True, text=True, timeout=600)


def submissions(release: dict, teacher: dict, source: Path) -> dict[str, dict]:
    "Each student's notebook: honest, untouched, and the hostile and clumsy ones of the probe (2.6–2.19)."
    solved = copy.deepcopy(release)
    answers = {c["id"]: c["source"] for c in teacher["cells"]}
    for c in solved["cells"]:
        if c["metadata"].get("nbgrader", {}).get("solution"):
            c["source"] = answers[c["id"]]
    by_id = {c["id"]: i for i, c in enumerate(release["cells"])}
    head = next(i for i, c in enumerate(release["cells"]) if c["source"].startswith("## Exercises"))

    def changed(nb: dict, edit) -> dict:
        nb = copy.deepcopy(nb)
        edit(nb["cells"])
        return nb

    def moved(cells):
        cells.append(cells.pop(head))

    def patched(cells):  # 2.17: wrong answers, the checks patched to pass and print what they are given
        cells[by_id["c5"]]["source"] = PATCH + "def add_one(x):\n    return x"
        cells[by_id["c8"]]["source"] = "think_q1 = 'b'"

    def reads_source(cells):  # 2.18: the teacher's notebook read by its full path, its hidden tests raised
        cells[by_id["c5"]]["source"] = (
            f"try:\n    raise RuntimeError('LEAK' 'ED ' + open({str(source)!r}).read())\n"
            "except PermissionError:\n    pass\n" + answers["c5"]
        )

    def dup_first(cells):  # 2.7: a copy of a check cell, its metadata too, above the original
        cells.insert(by_id["c6"], {**copy.deepcopy(cells[by_id["c6"]]), "id": "copied"})

    def sol_graded(cells):  # 2.11
        cells[by_id["c5"]]["metadata"]["nbgrader"] |= {"grade": True, "points": 100}

    def checks_unlocked(cells):  # 2.9
        for k in ("c6", "c9"):
            cells[by_id[k]]["metadata"]["nbgrader"] |= {"grade": False, "locked": False}
            cells[by_id[k]]["source"] = "pass"

    def frame_forge(cells):  # issue 86, 3.11: the checks still to come sought through the frames, set to `pass`
        cells[by_id["c5"]]["source"] = (
            WALK + "for c in cells:\n    c['source'] = 'pass'\ndef add_one(x):\n    raise NotImplementedError"
        )
        cells[by_id["c8"]]["source"] = "think_q1 = 'b'"

    def pipe_forge(cells):  # 3.12: well-formed answers written on every open pipe, then exit
        cells[by_id["c5"]]["source"] = PIPE_FORGE

    def leak_hidden(cells):  # 3.24: every check made to raise its own source, hidden tests included
        raising = "for c in cells:\n    c['source'] = 'raise RuntimeError(' + repr('LEAK' 'ED ' + c['source']) + ')'\n"
        cells[by_id["c5"]]["source"] = WALK + raising + "def add_one(x):\n    return x"
        cells[by_id["c8"]]["source"] = "think_q1 = 'b'"

    def stray_marker(cells):  # 3.22: a clumsy paste ends an answer cell with a marker: the student's text, graded
        cells[by_id["c5"]]["source"] += f"\n### {HIDDEN[0]}"

    nbf5 = copy.deepcopy(solved) | {"nbformat": 5}  # 2.13
    return {
        "honest": solved,
        "untouched": release,
        "headmoved": changed(release, moved),  # 2.15: the stubs left in
        "headmoved_solved": changed(solved, moved),
        "patchchecks": changed(solved, patched),
        "readsource": changed(solved, reads_source),
        "dupid_before": changed(solved, dup_first),
        "solgrade": changed(solved, sol_graded),
        "gradefalse": changed(solved, checks_unlocked),
        "nbf5": nbf5,
        "frame_forge": changed(release, frame_forge),
        "pipe_forge": changed(solved, pipe_forge),
        "leak_hidden": changed(release, leak_hidden),
        "stray_marker": changed(solved, stray_marker),
    }


def by_exchange(course: Path, home: Path, answered: dict) -> dict:
    """README's teacher path, issue 86 item 7: release, a student's fetch and submit, collect, through the exchange the
    shipped config sets beside it (no other setup): the submission lands in submitted/<the student's user name>/."""
    student = ["--course", "ris_nb", f"--Exchange.root={course / 'exchange'}"]
    home.mkdir(exist_ok=True)
    for args, cwd in [
        (["release_assignment", "tiny_lesson"], course),
        (["fetch_assignment", "tiny_lesson", *student], home),
    ]:
        out = subprocess.run([str(BIN / "nbgrader"), *args], cwd=cwd, env=NB_ENV, capture_output=True, text=True)
        assert out.returncode == 0, (args, out.stdout + out.stderr)
    (home / "tiny_lesson" / "tiny_lesson.ipynb").write_text(json.dumps(answered))
    cmd = [str(BIN / "nbgrader"), "submit", "tiny_lesson", *student, f"--CourseDirectory.student_id={EXCHANGE_STUDENT}"]
    out = subprocess.run(cmd, cwd=home, env=NB_ENV, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    out = nbgrader(course, "collect", "tiny_lesson")
    assert out.returncode == 0, out.stdout + out.stderr
    assert (course / "submitted" / EXCHANGE_STUDENT / "tiny_lesson" / "tiny_lesson.ipynb").is_file()
    return answered


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    "The tiny lesson through nbgrader: generate_assignment, autograde, generate_feedback and export."
    root = tmp_path_factory.mktemp("hostile")
    (source,) = nbgrader_course(write_lesson(root / "nbs", LESSON).parent, root / "course", verbose=False)
    course = root / "course"
    out = nbgrader(course, "generate_assignment", "tiny_lesson")
    assert out.returncode == 0, out.stdout + out.stderr
    release = read_notebook(course / "release" / "tiny_lesson" / "tiny_lesson.ipynb")
    subs = submissions(release, read_notebook(source), source)
    for student, nb in subs.items():
        p = course / "submitted" / student / "tiny_lesson" / "tiny_lesson.ipynb"
        p.parent.mkdir(parents=True)
        p.write_text(json.dumps(nb))
    for student, data in UNREADABLE.items():  # 3.16, 3.18: files nbgrader itself cannot read
        p = course / "submitted" / student / "tiny_lesson" / "tiny_lesson.ipynb"
        p.parent.mkdir(parents=True)
        p.write_bytes(data(json.dumps(subs["honest"])))
    subs[EXCHANGE_STUDENT] = by_exchange(course, root / "student", subs["honest"])
    auto = nbgrader(course, "autograde", "tiny_lesson", "--create")
    feedback = nbgrader(course, "generate_feedback", "tiny_lesson")
    export = nbgrader(course, "export")
    assert export.returncode == 0, export.stdout + export.stderr
    with open(course / "grades.csv") as f:
        scores = {r["student_id"]: r["score"] for r in csv.DictReader(f)}
    return course, {**subs, **dict.fromkeys(UNREADABLE)}, auto.stdout + auto.stderr, feedback, scores


def test_each_submission_gets_the_right_score_or_is_named_not_graded(hostile):
    course, subs, log, _, scores = hostile
    assert set(scores) == set(subs), scores
    assert "old version of the nbgrader metadata" not in log, log[-3000:]
    want = {"honest": 3.0, "untouched": 0.0, "headmoved": 0.0, "headmoved_solved": 3.0, "patchchecks": 0.0}
    want |= {"readsource": 3.0, "dupid_before": 3.0, "solgrade": 3.0, "gradefalse": 3.0}
    want |= {"frame_forge": 0.0, "pipe_forge": 0.0, "leak_hidden": 0.0, EXCHANGE_STUDENT: 3.0, "stray_marker": 3.0}
    got = {s: float(v) for s, v in scores.items() if s not in {"nbf5", *UNREADABLE, *UNCONFINED}}
    want = {s: v for s, v in want.items() if s not in UNCONFINED}
    assert got == want, f"nbgrader's export {got}, expected {want}"
    assert scores["nbf5"] == "not graded", scores
    assert "nbf5" in log and "nbformat version 5" in log, log[-3000:]


def test_a_file_nbgrader_cannot_read_is_named_in_one_line(hostile):
    """3.16, 3.18: a UTF-16, empty or nbformat 5 submission: `not graded`, named in one line, nbgrader's traceback cut
    to its last."""
    _, _, log, _, scores = hostile
    said = {"utf16": "is not a notebook: not valid JSON", "empty": "is not a notebook: not valid JSON"}
    for student, words in (said | {"nbf5": "is an nbformat 5 notebook; nbgrader reads nbformat 4"}).items():
        assert scores[student] == "not graded", scores
        line = next((s for s in log.splitlines() if f"{student}, tiny_lesson: " in s), None)
        assert line and words in line and "not graded" in line, log[-3000:]
    assert log.count("nbgrader's own error: ") == 3, log[-3000:]
    theirs = ("UnicodeDecodeError", "NotJSONError", "Unsupported nbformat version")  # nbgrader's errors for the three
    shown = [s for s in log.splitlines() if any(e in s for e in theirs) and "nbgrader's own error: " not in s]
    assert not shown, f"nbgrader's traceback for an unreadable file, not cut to one line: {shown}"


def test_the_feedback_shows_no_key_no_hidden_test_and_nothing_a_student_printed(hostile):
    course, subs, _, feedback, _ = hostile
    assert "Error" not in feedback.stderr.replace("No module named 'jupyter_server'", ""), feedback.stderr[-2000:]
    hidden = ["add_one(-1) == 0", 'key="a"', HIDDEN[0]]
    for student in set(subs) - {"nbf5", *UNREADABLE} - UNCONFINED:
        page = (course / "feedback" / student / "tiny_lesson" / "tiny_lesson.html").read_text()
        theirs = {HIDDEN[0]} if student == "stray_marker" else set()  # the marker it pasted: its own text, shown
        shown = [s for s in [*hidden, LEAK] if s in page and s not in theirs]
        assert not shown, f"{student}'s feedback shows {shown}"
    page = (course / "feedback" / "honest" / "tiny_lesson" / "tiny_lesson.html").read_text()
    assert "passed (graded by ris_nb): 1 point\n" in page and "1 points" not in page, "the honest feedback's verdict"


def test_no_submission_waits_for_a_manual_grade(hostile):
    "The 0-point Your reasoning cells are scored 0 by autograde: the formgrader lists no submission as unfinished."
    from nbgrader.api import Gradebook

    course = hostile[0]
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        subs = gb.assignment_submissions("tiny_lesson")
        skip = {"nbf5", *UNREADABLE}  # not graded
        waiting = [s.student.id for s in subs if s.needs_manual_grade and s.student.id not in skip]
    assert not waiting, f"needs manual grade: {waiting}"
