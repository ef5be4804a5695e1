"""nbgrader out of the box: the teacher notebooks carry nbgrader's metadata (written by `mark_for_nbgrader`), and
nbgrader 0.9 grades them as `ris_nb grade` does, point for point.

The round trip runs three teaching notebooks with fast exercise sections through nbgrader itself (generate_assignment,
autograde, generate_feedback) with four submissions each, and `ris_nb grade` over the same files. It costs a Jupyter
kernel per submission and nbgrader's start-up three times: one module-scoped fixture, one xdist worker."""

from __future__ import annotations

import ast
import copy
import html
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import key_leaks
from conftest import ENV
from ris_nb.notebook_cells import read_notebook
from ris_nb.course import nbgrader_available
from ris_nb.exercise_marks import FRESH_LINE, REASONING_POINTS, exercise_start, mark_for_nbgrader
from ris_nb.notebook_cells import HIDDEN, SOLUTION
from ris_nb.grading import NBGRADER_CONFIG, grade_notebooks, nbgrader_course, teacher_checks

pytestmark = [
    pytest.mark.xdist_group("nbgrader"),
    pytest.mark.skipif(not nbgrader_available(), reason="nbgrader not installed"),
]

ROOT = Path(__file__).resolve().parents[1]
LESSONS = ["01_metrics", "02a_first_model", "04_transforms"]  # exercise sections of well under a second each
BIN = Path(sys.executable).parent
NB_ENV = {**ENV, "PATH": f"{BIN}{os.pathsep}{ENV.get('PATH', '')}"}  # nbgrader calls `alembic` from PATH
REBIND = "check_function = check_choice = check_fields = check_in_range = compare = lambda *a, **k: None"


def nbgrader(*args: str, cwd: Path) -> subprocess.Popen:
    "Start `nbgrader ARGS` in the course folder `cwd` (wait with `finish`)."
    cmd = [str(BIN / "nbgrader"), *args]
    return subprocess.Popen(cmd, cwd=cwd, env=NB_ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(p: subprocess.Popen, timeout: float = 900) -> str:
    out = p.communicate(timeout=timeout)[0]
    assert p.returncode == 0, f"{' '.join(p.args)} failed ({p.returncode}):\n{out[-4000:]}"
    return out


def _keyed(src: str) -> list[tuple[str, str, str]]:
    "(answer expression, question, key) of each keyed check_choice call of a check cell."
    out = []
    for n in ast.walk(ast.parse(src)):
        if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "check_choice":
            kw = {k.arg: k.value for k in n.keywords}
            if "key" in kw:
                out.append((ast.unparse(n.args[0]), ast.literal_eval(n.args[1]), ast.literal_eval(kw["key"])))
    return out


def _digests(src: str) -> dict[str, str]:
    "The `digest=` of each check_choice call of a check cell that has one, by question."
    calls = [
        n for n in ast.walk(ast.parse(src)) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "check_choice"
    ]
    return {
        ast.literal_eval(n.args[1]): ast.literal_eval(k.value) for n in calls for k in n.keywords if k.arg == "digest"
    }


def _locked_only(m: dict) -> bool:
    "nbgrader metadata of a cell nbgrader restores when grading that is neither an answer nor a check."
    return bool(m.get("locked")) and not m.get("grade") and not m.get("solution")


def submissions(teacher: dict, release: dict) -> tuple[dict[str, dict], str]:
    """The four submissions of a lesson (the released copy untouched; the teacher's solutions in it; those with the
    first Think answer wrong and the locked imports cell emptied; the untouched copy rebinding the checks atop each
    solution cell) and the check the wrong answer fails."""
    solutions = {c["id"]: c["source"] for c in teacher["cells"] if SOLUTION[0] in c["source"]}
    untouched, solved, rebind = (copy.deepcopy(release) for _ in range(3))
    for c in solved["cells"]:
        c["source"] = solutions.get(c["id"], c["source"])
    for c in rebind["cells"]:
        if c["cell_type"] == "code" and c["id"] in solutions:
            c["source"] = f"{REBIND}\n{c['source']}"
    wrong, teacher_src = copy.deepcopy(solved), {c["id"]: c["source"] for c in teacher["cells"]}
    cells = wrong["cells"]
    at = next(i for i, c in enumerate(cells) if c["cell_type"] == "code" and _keyed(teacher_src[c["id"]]))
    name, _, key = _keyed(teacher_src[cells[at]["id"]])[0]
    answer = next(c for c in reversed(cells[:at]) if c["id"] in solutions and c["cell_type"] == "code")
    answer["source"] += f"\n{name} = {next(x for x in 'abcd' if x != str(key).lower())!r}"
    imports = next(c for c in cells if c["cell_type"] == "code" and _locked_only(c["metadata"].get("nbgrader", {})))
    imports["source"] = "# the student emptied a locked cell (the imports): both graders run the teacher's"
    return {"untouched": untouched, "solution": solved, "wrong": wrong, "rebind": rebind}, cells[at]["id"]


def nbgrader_scores(course: Path, lesson: str, student: str) -> tuple[dict[str, float], dict[str, float]]:
    "nbgrader's score of each graded code cell, and the points of each cell graded by hand, by grade id."
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        grades = gb.find_submission_notebook(lesson, lesson, student).grades
        auto = {g.name: g.score for g in grades if g.cell_type == "code"}
        manual = {g.name: g.max_score for g in grades if g.cell_type == "markdown"}
    return auto, manual


def visible_text(page: str) -> str:
    "The text a feedback page shows: tags dropped, entities decoded."
    return html.unescape(re.sub(r"<[^>]+>", "", page))


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory):
    "The three lessons through nbgrader (generate_assignment, autograde, generate_feedback) and `ris_nb grade`."
    course, t0 = tmp_path_factory.mktemp("nbgrader_course"), time.perf_counter()
    sources = {p.parent.name: p for p in nbgrader_course(ROOT / "nbs", course, LESSONS, verbose=False)}
    finish(nbgrader("generate_assignment", "*", cwd=course))
    t_assign, subs, wrong_check = time.perf_counter() - t0, {}, {}
    for lesson in LESSONS:
        release = read_notebook(course / "release" / lesson / f"{lesson}.ipynb")
        subs[lesson], wrong_check[lesson] = submissions(read_notebook(sources[lesson]), release)
        if lesson != LESSONS[0]:
            del subs[lesson]["rebind"]  # one lesson shows it: a kernel fewer for each other lesson
        for student, nb in subs[lesson].items():
            path = course / "submitted" / student / lesson / f"{lesson}.ipynb"
            path.parent.mkdir(parents=True)
            path.write_text(json.dumps(nb))
    t1 = time.perf_counter()
    autograde = nbgrader("autograde", "*", cwd=course)  # meanwhile, ris_nb grade on the same files
    ours = {
        lesson: dict(
            zip(
                subs[lesson],
                grade_notebooks(
                    sources[lesson], [course / "submitted" / s / lesson / f"{lesson}.ipynb" for s in subs[lesson]]
                ),
            )
        )
        for lesson in LESSONS
    }
    t_ours = time.perf_counter() - t1
    finish(autograde)
    t_auto = time.perf_counter() - t1
    finish(nbgrader("generate_feedback", "*", cwd=course))
    timing = {
        "layout + generate_assignment": t_assign,
        "ris_nb grade (beside autograde)": t_ours,
        "autograde": t_auto,
        "generate_feedback": time.perf_counter() - t1 - t_auto,
    }
    print("round trip seconds:", {k: round(v, 1) for k, v in timing.items()})
    return course, sources, subs, wrong_check, ours


def test_scores_untouched_zero_solution_full_wrong_partial(round_trip):
    course, sources, subs, wrong_check, _ = round_trip
    for lesson in LESSONS:
        auto = {s: nbgrader_scores(course, lesson, s)[0] for s in subs[lesson]}
        full = {c.name: c.points for c in teacher_checks(read_notebook(sources[lesson]), lesson)}
        assert set(auto["solution"]) == set(full), f"{lesson}: nbgrader grades {sorted(auto['solution'])}"
        assert sum(auto["untouched"].values()) == 0, f"{lesson}: the untouched copy scores {auto['untouched']}"
        assert auto["solution"] == full, f"{lesson}: the teacher's solution scores {auto['solution']} of {full}"
        assert auto["wrong"] == {**full, wrong_check[lesson]: 0}, f"{lesson}: one wrong answer: {auto['wrong']}"
        assert sum(auto.get("rebind", {}).values()) == 0, f"{lesson}: rebinding the checks scores {auto['rebind']}"
    assert "rebind" in subs[LESSONS[0]]


def test_ris_nb_grade_gives_the_same_points_by_the_same_ids(round_trip):
    "Per check, by grade id = cell id: the points nbgrader gives are the points `ris_nb grade` gives."
    course, _, subs, _, ours = round_trip
    for lesson in LESSONS:
        for student in subs[lesson]:
            g = ours[lesson][student]
            assert not g.refused, g.refused
            mine = {r.name: (r.points if r.passed else 0) for r in g.results}
            auto, manual = nbgrader_scores(course, lesson, student)
            assert mine == auto, f"{lesson}/{student}: ris_nb grade {mine}, nbgrader {auto}"
            ids = {c["id"] for c in subs[lesson][student]["cells"]}
            assert set(auto) | set(manual) <= ids, f"{lesson}: grade ids that are no cell id: {set(auto) - ids}"
            if student == "rebind":
                messages = [r.message for r in g.results]
                assert all(m and "_ris_nb_checks_fresh" not in m for m in messages), messages


def test_feedback_holds_no_key_and_no_hidden_test(round_trip):
    course, sources, subs, _, _ = round_trip
    for lesson in LESSONS:
        teacher = read_notebook(sources[lesson])
        release = json.dumps(read_notebook(course / "release" / lesson / f"{lesson}.ipynb"))
        hidden = {
            line.strip()
            for c in teacher["cells"]
            if HIDDEN[0] in c["source"]
            for line in c["source"].split(HIDDEN[0])[1].split(HIDDEN[1])[0].splitlines()[1:]
            if line.strip() and line.strip() not in release
        }
        assert hidden, f"{lesson}: no hidden test to look for"
        for student in subs[lesson]:
            page = visible_text((course / "feedback" / student / lesson / f"{lesson}.html").read_text())
            assert "BEGIN HIDDEN" not in page and not re.search(r"\bkey\s*=\s*['\"]", page), f"{lesson}/{student}"
            shown = sorted(line for line in hidden if line in page)
            assert not shown, f"{lesson}/{student}: the feedback shows hidden tests: {shown[:3]}"


def test_marking_gives_every_exercise_cell_its_metadata():
    "Grade id = cell id everywhere; checks graded, locked, fresh; no digest of a key; reasoning 0 points; idempotent."
    for lesson in LESSONS:
        nb = mark_for_nbgrader(read_notebook(ROOT / "nbs" / f"{lesson}.ipynb"), lesson)
        assert mark_for_nbgrader(copy.deepcopy(nb), lesson) == nb, f"{lesson}: marking twice changes it"
        start = exercise_start(nb)
        points = {c.name: c.points for c in teacher_checks(nb, lesson)}
        for c in nb["cells"][start:]:
            m = c["metadata"].get("nbgrader")
            if c["cell_type"] == "markdown":
                assert (m is not None) == (SOLUTION[0] in c["source"]), c["id"]
                assert m is None or (m["grade"], m["solution"], m["points"]) == (True, True, REASONING_POINTS), m
                continue
            assert m["grade_id"] == c["id"] and m["schema_version"] == 3, (lesson, c["id"], m)
            if SOLUTION[0] in c["source"]:
                assert (m["solution"], m["grade"], m["locked"]) == (True, False, False), m
            elif c["id"] in points:
                assert (m["grade"], m["locked"], m["points"]) == (True, True, points[c["id"]]), m
                body = [line for line in c["source"].splitlines() if not line.startswith("#|")]
                assert body[0] == FRESH_LINE, c["source"][:200]
                assert len(_keyed(c["source"])) <= 1, f"{c['id']}: more than one Think question in a check cell"
                assert not _digests(c["source"]) and "digest=" not in c["source"], c["source"]
            else:
                assert (m["grade"], m["solution"], m["locked"]) == (False, False, True), m


def test_every_notebook_with_exercises_is_marked():
    "The teacher notebooks in nbs/ are marked (`ris_nb course --mark nbs`): marking them again changes nothing."
    unmarked = []
    for p in sorted((ROOT / "nbs").glob("*.ipynb")):
        nb = read_notebook(p)
        if exercise_start(nb) is not None and mark_for_nbgrader(copy.deepcopy(nb), p.name) != nb:
            unmarked.append(p.name)
    assert not unmarked, f"not marked for nbgrader: {unmarked}; run `python -m ris_nb course --mark nbs`"


def test_the_repository_config_is_the_one_the_course_gets():
    assert (ROOT / "nbgrader_config.py").read_text() == NBGRADER_CONFIG


def test_release_and_feedback_hold_nothing_key_derived(round_trip):
    "nbgrader's release and feedback carry no digest of a Think key (was: each Think check's `digest=` in both)."
    course, *_ = round_trip
    keys = key_leaks.think_keys()
    files = [*(course / "release").rglob("*.ipynb"), *(course / "feedback").rglob("*.html")]
    assert len(files) >= len(LESSONS) * 2, files
    leaks = [f for p in files for f in key_leaks.leaks_in(p, keys)]
    assert not leaks, f"{len(leaks)} key-derived strings in nbgrader's release or feedback, e.g. {leaks[:4]}"


# --- issue 79: both graders give a submission the same total; a Think question is a point of its own ---------------
TOTALS = ["07_mask_grounding", "10_entity_slots", "12_training"]  # the lessons the teacher's review graded


@pytest.fixture(scope="module")
def totals(tmp_path_factory):
    """07, 10 and 12 through nbgrader (generate_assignment, autograde, generate_feedback) and `ris_nb grade`, three
    submissions each: untouched, the teacher's solution, the solution with the first Think answer wrong."""
    course = tmp_path_factory.mktemp("nbgrader_totals")
    sources = {p.parent.name: p for p in nbgrader_course(ROOT / "nbs", course, TOTALS, verbose=False)}
    finish(nbgrader("generate_assignment", "*", cwd=course))
    subs, wrong_check = {}, {}
    for lesson in TOTALS:
        release = read_notebook(course / "release" / lesson / f"{lesson}.ipynb")
        subs[lesson], wrong_check[lesson] = submissions(read_notebook(sources[lesson]), release)
        del subs[lesson]["rebind"]
        for student, nb in subs[lesson].items():
            path = course / "submitted" / student / lesson / f"{lesson}.ipynb"
            path.parent.mkdir(parents=True)
            path.write_text(json.dumps(nb))
    autograde = nbgrader("autograde", "*", cwd=course)
    ours = {
        lesson: dict(
            zip(
                subs[lesson],
                grade_notebooks(
                    sources[lesson], [course / "submitted" / s / lesson / f"{lesson}.ipynb" for s in subs[lesson]]
                ),
            )
        )
        for lesson in TOTALS
    }
    finish(autograde)
    finish(nbgrader("generate_feedback", "*", cwd=course))
    return course, subs, wrong_check, ours


def test_both_graders_give_the_same_totals(totals):
    """Per submission, nbgrader's total (score and maximum, *Your reasoning* included) is `ris_nb grade`'s: reasoning
    is read, not scored, in both (was: nbgrader 9/8/7 against ris_nb grade's 7/6/5 on a solved 07/10/12)."""
    from nbgrader.api import Gradebook

    course, subs, _, ours = totals
    seen = {}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        for lesson in TOTALS:
            for student in subs[lesson]:
                sub = gb.find_submission_notebook(lesson, lesson, student)
                g = ours[lesson][student]
                mine = (sum(r.points for r in g.results if r.passed), sum(r.points for r in g.results))
                seen[lesson, student] = (sub.score, sub.max_score), mine
    differ = {k: v for k, v in seen.items() if v[0] != v[1]}
    assert not differ, f"(nbgrader, ris_nb grade) totals differ: {differ}"
    assert [seen[lesson, "solution"][1] for lesson in TOTALS] == [(7, 7), (6, 6), (5, 5)], seen
    assert all(seen[lesson, "untouched"][1][0] == 0 for lesson in TOTALS), seen


def test_one_wrong_think_answer_costs_one_point_in_both(totals):
    "The first Think answer wrong: its question scores 0, the other 1, in nbgrader and in `ris_nb grade` (was: 0 of 2)."
    course, subs, wrong_check, ours = totals
    for lesson in TOTALS:
        auto, _ = nbgrader_scores(course, lesson, "wrong")
        think = {r.name: (r.points if r.passed else 0) for r in ours[lesson]["wrong"].results if r.kind == "think"}
        assert think == {wrong_check[lesson]: 0, f"{wrong_check[lesson]}-q2": 1}, f"{lesson}: ris_nb grade {think}"
        assert {k: auto[k] for k in think} == think, f"{lesson}: nbgrader {auto}"


def test_release_and_feedback_of_07_10_12_hold_nothing_key_derived(totals):
    course, *_ = totals
    keys = key_leaks.think_keys()
    files = [*(course / "release").rglob("*.ipynb"), *(course / "feedback").rglob("*.html")]
    assert len(files) == len(TOTALS) * 4, files
    leaks = [f for p in files for f in key_leaks.leaks_in(p, keys)]
    assert not leaks, f"{len(leaks)} key-derived strings in nbgrader's release or feedback, e.g. {leaks[:4]}"
