"""The exercises are real: in the student copies every check fails; a wrong answer of each kind fails its check;
nbgrader and our own few lines make the same copies."""

import hashlib
import json
import re
import shutil
import sys
from pathlib import Path

import pytest

import key_leaks
from ris_nb.notebook_cells import read_notebook
from ris_nb.course import nbgrader_available, run_exercises, to_student
from ris_nb.course_files import make_course
from ris_nb.exercise_marks import SELF_STUDY_LABEL, exercise_start, mark_for_nbgrader
from ris_nb.notebook_cells import HIDDEN, SOLUTION
from ris_nb.grading import grade_notebooks, teacher_checks

ROOT = Path(__file__).resolve().parents[1]
# The notebooks that build an idea: each has *write it yourself* and *think*; all but three also *run an experiment*.
IDEAS = [
    "01_metrics",
    "02_shaperefs",
    "02a_first_model",
    "03_refer",
    "04_transforms",
    "05_encoders",
    "06_lavt",
    "07_mask_grounding",
    "08_alignment",
    "09_magnet",
    "10_entity_slots",
    "11_sag",
    "12_training",
    "12a_entity_pretraining",
    "13_evaluation",
]
FAKE_APPENDIX = "98" + "z_appendix"  # an appendix notebook made in a test (written apart: no such file here)
NO_EXPERIMENT = {"02a_first_model", "04_transforms", "12a_entity_pretraining"}
REPORTS = ["13a_learning", "14_visualize", "15_cli", "16_experiments", "17_demo", "18_refcoco_gpu"]  # a *think* each
TEACHING = IDEAS + REPORTS


def kinds_expected(stem: str) -> set[str]:
    "The exercise kinds the README promises for a notebook (its 'Teaching' paragraph)."
    if stem in REPORTS:
        return {"think"}
    return {"write it yourself", "think"} | (set() if stem in NO_EXPERIMENT else {"run an experiment"})


def test_exercises_where_the_readme_says():
    "Every course notebook from 01 to 18 holds exercises, and no other (the README's and 00a's sentence)."
    have = sorted(p.stem for p in (ROOT / "nbs").glob("*.ipynb") if exercise_start(read_notebook(p)) is not None)
    assert have == sorted(TEACHING), f"notebooks with exercises: {have}; the README says 01–18: {sorted(TEACHING)}"
    assert "The course notebooks 01–18 close with **Exercises**, then a summary" in (ROOT / "README.md").read_text()


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    out = tmp_path_factory.mktemp("course")
    return {p.stem: p for p in make_course(ROOT / "nbs", out, verbose=False)}


def test_student_copies_written(course):
    assert set(TEACHING) <= set(course), f"no student copy of {sorted(set(TEACHING) - set(course))}"
    for stem, p in course.items():
        text = p.read_text()
        assert SOLUTION[0] not in text and HIDDEN[0] not in text, (
            f"{p.name}: a solution or hidden test left in the student copy"
        )
        assert "raise NotImplementedError()" in text, f"{p.name}: no stub"
    assert (next(iter(course.values())).parent / "README.md").exists()


def _digests(answer: str) -> set[str]:
    "Hex digests of an answer as a check might store them (sha256, sha1, md5; prefixes of 8 characters and more)."
    full = [
        h(s.encode()).hexdigest() for h in (hashlib.sha256, hashlib.sha1, hashlib.md5) for s in (answer, answer.upper())
    ]
    return {d[:k] for d in full for k in (8, 10, 12, 16, len(d))}


def test_student_copies_hold_no_answer(course):
    """A think check in a student copy names its question only: no key, no hash of one, no instructor's answer (issue
    50)."""
    digests = set().union(*(_digests(a) for a in "abcdef"))
    for stem, p in course.items():
        text, nb = p.read_text(), read_notebook(p)
        calls = [
            args
            for c in nb["cells"]
            if c["cell_type"] == "code"
            for args in re.findall(r"check_choice\(([^)]*)\)", c["source"])
        ]
        assert calls or stem not in TEACHING, f"{p.name}: no think check"
        for args in calls:
            parts = [a.strip() for a in args.split(",")]
            offered = len(parts) == 3 and re.fullmatch(r'choices="[a-f]+"', parts[2])  # the offered letters
            assert "key" not in args and (len(parts) == 2 or offered), (
                f"{p.name}: check_choice({args}) holds more than the question and the offered letters"
            )
        leaked = sorted(d for d in digests if d in text)
        assert not leaked, f"{p.name}: holds {leaked}, a hash of a one-letter answer"
        assert not any(re.search(r"^think_q\d+ = [\"'][a-f][\"']", c["source"], re.M) for c in nb["cells"]), (
            f"{p.name}: a think answer is set"
        )
        assert "Instructor's answer" not in text, f"{p.name}: the instructor's answer is in the student copy"


@pytest.mark.parametrize("stem", TEACHING)
def test_every_check_fails_on_the_stub(course, stem):
    results = run_exercises(read_notebook(course[stem]))
    kinds = {r.kind for r in results}
    want = kinds_expected(stem)
    assert kinds == want, f"{stem}: exercises of kinds {sorted(kinds)}; expected {sorted(want)}"
    passed = [f"cell {r.index} ({r.title})" for r in results if r.passed]
    assert not passed, f"{stem}: these checks pass on the student copy (stubs), so they check nothing: {passed}"


def _with_answer(nb: dict, marker: str, body: str) -> dict:
    "The instructor notebook with the solution region of the cell containing `marker` replaced by `body`."
    for c in nb["cells"]:
        if c["cell_type"] == "code" and marker in c["source"] and SOLUTION[0] in c["source"]:
            src = c["source"]
            i, j = src.index("### " + SOLUTION[0]), src.index("### " + SOLUTION[1]) + len("### " + SOLUTION[1])
            indent = re.search(r"[ \t]*$", src[:i]).group(0)
            c["source"] = src[: i - len(indent)] + "\n".join(indent + l for l in body.splitlines()) + src[j:]
            return nb
    raise AssertionError(f"no solution cell containing {marker!r}")


# one deliberately wrong answer per kind: (notebook, solution cell marker, wrong body, what the message must name)
WRONG = [
    (
        "01_metrics",
        "def my_oiou_miou",  # write it yourself: oIoU and mIoU swapped
        (
            'iou = inter / union.clamp(min=1)\nreturn {"oIoU": 100 * iou.mean().item(), "mIoU": 100 * '
            "inter.sum().item() / union.sum().item()}"
        ),
        "value",
    ),
    ("01_metrics", "def my_intersection_union", "return (pred & gt).sum((1, 2)), (pred | gt).sum()", "shape"),
    (
        "06_lavt",
        "def my_dice_loss",  # right values, but detached: no gradient reaches the prediction
        (
            "inter = (prob * target).flatten(1).sum(1)\nreturn (1 - (2 * inter + 1) / (prob.flatten(1).sum(1) + "
            "target.flatten(1).sum(1) + 1)).mean().detach()"
        ),
        "gradient",
    ),
    (
        "07_mask_grounding",
        "WITH_MG =",  # run an experiment: the wrong preset for the MG arm
        'WITHOUT_MG, WITH_MG = "lavt_tiny", "magnet_tiny"',
        "model.name",
    ),
    ("01_metrics", "think_q1 =", 'think_q1 = "b"\nthink_q2 = "a"', "not the expected answer"),  # think
    (
        "02a_first_model",
        "def my_bag_of_words",  # padding counted in the mean
        "return F.embedding(ids, weight).mean(1)",
        "value",
    ),
    (
        "12a_entity_pretraining",
        "def my_warmup_cosine",  # the warm-up one step late
        "return min(1.0, t / warmup) * 0.5 * (1 + math.cos(math.pi * min(t, steps) / steps))",
        "value",
    ),
]


@pytest.mark.parametrize("stem,marker,body,says", WRONG, ids=[f"{w[0]}:{w[1]}" for w in WRONG])
def test_wrong_answer_fails_its_check(stem, marker, body, says):
    nb = _with_answer(read_notebook(ROOT / "nbs" / f"{stem}.ipynb"), marker, body)
    results = run_exercises(nb)
    failed = [r for r in results if not r.passed]
    assert len(failed) == 1 and says in failed[0].message, (
        f"{stem}: a wrong {marker!r} should fail exactly its own check with a message naming {says!r}; got "
        f"{[(r.title, r.message) for r in failed]}"
    )


@pytest.mark.skipif(not nbgrader_available(), reason="nbgrader not installed")
@pytest.mark.parametrize("stem", TEACHING)
def test_nbgrader_and_own_lines_agree(stem):
    nb = read_notebook(ROOT / "nbs" / f"{stem}.ipynb")
    assert to_student(nb, "nbgrader")["cells"] == to_student(nb, "own")["cells"]


def test_teacher_grades_a_student_copy(course):
    """The teacher's `grade` compares the think answers with the keys outside the students' processes: right or wrong
    by them."""

    def answered(answer: str) -> dict:
        student = read_notebook(course["01_metrics"])
        cell = next(
            c
            for c in student["cells"]
            if c["cell_type"] == "code" and c["source"].startswith("think_q1 = think_q2 = None")
        )
        cell["source"] = f"think_q1 = {answer!r}\nthink_q2 = {answer!r}"
        return student

    graded = grade_notebooks(ROOT / "nbs" / "01_metrics.ipynb", [answered("a"), answered("b")])
    think = [[r.passed for r in g.results if r.kind == "think"] for g in graded]
    assert think == [[True, True], [False, False]], [g.results for g in graded]
    assert all(len(g.results) == len(graded[0].results) and not g.ended for g in graded)


def test_student_copies_name_their_checks(course):
    """Every graded cell of a student copy is a check the teacher grades (`#| slow` ones aside), its grade_id its cell
    id; the copy names its lesson."""
    for stem in TEACHING:
        nb, teacher = read_notebook(course[stem]), read_notebook(ROOT / "nbs" / f"{stem}.ipynb")
        assert nb["metadata"]["ris_nb"] == {"lesson": stem}
        want = [c.name for c in teacher_checks(teacher, stem)]
        marks = [(c, c["metadata"]["nbgrader"]) for c in nb["cells"] if "nbgrader" in c.get("metadata", {})]
        got = [m["grade_id"] for c, m in marks if m["grade"] and c["cell_type"] == "code"]
        assert got == want, f"{stem}: graded code cells {got}, expected the teacher's check cells {want}"
        assert all(m["grade_id"] == c["id"] for c, m in marks), f"{stem}: a grade_id that is not its cell id"


# Graded here in `make test`: a lesson, a lesson without an experiment and a report (a few CPU seconds each); the rest
# only in `make test-all`. `make test`'s notebook step runs every teacher notebook with its solutions and checks, and a
# failing check stops it, so it fails there too.
GRADED_FAST = {"01_metrics", "02a_first_model", "13a_learning"}


@pytest.mark.parametrize("stem", [s if s in GRADED_FAST else pytest.param(s, marks=pytest.mark.slow) for s in TEACHING])
def test_teacher_notebook_passes_its_own_grading(stem, tmp_path):
    """Graded as a student (own process, scratch copy, Landlock where the kernel has it), a copy of a teacher notebook
    passes every check (the teacher's file itself is refused as a submission)."""
    path = ROOT / "nbs" / f"{stem}.ipynb"
    submitted = tmp_path / "student" / path.name
    submitted.parent.mkdir()
    shutil.copyfile(path, submitted)
    g = grade_notebooks(path, [submitted])[0]
    failed = [(r.name, r.message) for r in g.results if not r.passed]
    assert not g.refused and not g.ended and not failed, f"{stem}: {g.refused or g.ended or failed}"


def _notebook_names(text: str) -> list[str]:
    "Backticked course notebook names in `text`, in order, each once."
    return list(dict.fromkeys(re.findall(r"`(index|[0-8]\d\w*)`", text)))


def test_syllabus_follows_the_readme():
    "19_course's syllabus names every course notebook in the README's reading order, so the two cannot drift apart."
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Reading order") : readme.index("## Teaching")]
    order = re.findall(r"^\| `(index|[0-8]\d\w*)` \|", table, re.M)
    course_path = {"index"} | {p.stem for p in (ROOT / "nbs").glob("[0-8][0-9]*.ipynb")}
    assert set(order) == course_path, f"the README's table misses {sorted(course_path - set(order))}"
    nb = read_notebook(ROOT / "nbs" / "19_course.ipynb")
    syllabus = next(c["source"] for c in nb["cells"] if c["source"].startswith("## A syllabus"))
    assert _notebook_names(syllabus) == order, f"syllabus order {_notebook_names(syllabus)}; README's {order}"


def test_course_folder_holds_what_its_notebooks_link_and_read(course):
    "The course folder holds every notebook a copy links to, and the folders the notebooks read (results/, images/)."
    folder = next(iter(course.values())).parent
    present = {p.name for p in folder.glob("*.ipynb")}
    for p in folder.glob("*.ipynb"):
        links = {
            m
            for c in read_notebook(p)["cells"]
            if c["cell_type"] == "markdown"
            for m in re.findall(r"\]\(([\w.-]+\.ipynb)", c["source"])
        }
        assert links <= present, f"{p.name} links to {sorted(links - present)}, not in the course folder"
    for sub in ("results", "images"):
        want = sorted(f.relative_to(ROOT / "nbs" / sub) for f in (ROOT / "nbs" / sub).rglob("*") if f.is_file())
        got = sorted(f.relative_to(folder / sub) for f in (folder / sub).rglob("*") if f.is_file())
        assert got == want, f"course/{sub} lacks {sorted(set(want) - set(got))[:5]}"


def test_a_student_copy_runs_top_to_bottom(course):
    "01_metrics' student copy, run in a Jupyter kernel from the course folder: only exercise cells fail, each showing"
    "its check's message in one line (no checker traceback)."
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    path = course["01_metrics"]
    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb, timeout=300, kernel_name="python3", allow_errors=True, resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    start = exercise_start(read_notebook(path))
    errors = [
        (i, o) for i, c in enumerate(nb.cells) if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    before = [(i, o.ename, o.evalue[:200]) for i, o in errors if i < start]
    assert not before, f"cells above the exercises failed: {before}"
    checks = [(i, o) for i, o in errors if nb.cells[i].metadata.get("nbgrader", {}).get("grade")]
    assert checks, "no check cell failed: the stubs are answered?"
    for i, o in checks:
        assert o.ename == "CheckError" and len(o.traceback) <= 2, f"cell {i} shows {o.traceback}"
    others = [(i, o.ename) for i, o in errors if not nb.cells[i].metadata.get("nbgrader", {}).get("grade")]
    assert all(e == "NotImplementedError" for _, e in others), f"exercise cells failed other than at a stub: {others}"


# --- issue 79: no key, and nothing a key can be recovered from, in what a student receives ---------------------------
def test_student_copies_and_site_sources_hold_nothing_key_derived(course, tmp_path):
    """The default student copies (`ris_nb course`) and the student site's staged sources (`make site`) hold no
    digest of a Think key: their exercise sections no `digest=` / `answer_digest`, no file a salted digest of a real
    key (trying the letters against one finds the key in 2.45 tries)."""
    sys.path.insert(0, str(ROOT / "tools"))
    import build_site

    keys = key_leaks.think_keys()
    assert sum(map(len, keys.values())) == 44, f"{sum(map(len, keys.values()))} Think questions found"
    build_site.stage(build_site.reading_order(), tmp_path / "src", "student", ROOT / "nbs")
    files = sorted(next(iter(course.values())).parent.glob("*.ipynb")) + sorted((tmp_path / "src").glob("*.ipynb"))
    assert len(files) > 60, f"only {len(files)} notebooks searched"
    leaks = [f for p in files for f in key_leaks.leaks_in(p, keys)]
    assert not leaks, f"{len(leaks)} key-derived strings reach the students, e.g. {leaks[:4]}"


def test_self_study_edition_is_labelled_and_says_right_or_wrong(tmp_path):
    "`ris_nb course --self-check`: every notebook labelled; its Think checks tell a right answer from a wrong one."
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    for name in ("00a_checks.ipynb", "07_mask_grounding.ipynb"):
        shutil.copyfile(ROOT / "nbs" / name, nbs / name)
    paths = make_course(nbs, tmp_path / "self", verbose=False, self_check=True)
    for p in (tmp_path / "self").glob("*.ipynb"):
        assert read_notebook(p)["cells"][1]["source"] == SELF_STUDY_LABEL, f"{p.name}: not labelled"
    assert "self-study" in (tmp_path / "self" / "README.md").read_text()
    student = read_notebook(paths[0])
    assert key_leaks.key_derived(json.dumps(student), key_leaks.think_keys()), "no digest in the self-study copy"
    answers = next(c for c in student["cells"] if c["source"].startswith("think_q1 = think_q2 = None"))
    think = {}
    for answer, q2 in (("c", "d"), ("c", "a")):  # the keys; then the second one wrong
        answers["source"] = f"think_q1, think_q2 = {answer!r}, {q2!r}"
        think[q2] = [(r.passed, r.message[:60]) for r in run_exercises(student) if r.kind == "think"]
    assert think["d"] == [(True, ""), (True, "")], think
    assert think["a"][0] == (True, "") and "'a' is not the expected answer" in think["a"][1][1], think


def test_a_think_question_is_a_point_of_its_own(course):
    "One wrong answer of two costs one point of two, in `ris_nb grade` (19: 1 point per question; was 0 of 2)."
    student = read_notebook(course["07_mask_grounding"])
    cell = next(c for c in student["cells"] if c["source"].startswith("think_q1 = think_q2 = None"))
    cell["source"] = 'think_q1 = "c"\nthink_q2 = "a"'  # Q1 right, Q2 wrong
    g = grade_notebooks(ROOT / "nbs" / "07_mask_grounding.ipynb", [student])[0]
    think = [(r.name, r.passed, r.points) for r in g.results if r.kind == "think"]
    assert think == [("678d290f", True, 1), ("678d290f-q2", False, 1)], think
    assert sum(r.points for r in g.results if r.kind == "think" and r.passed) == 1


def test_a_think_cell_with_two_keyed_questions_is_refused():
    "A teacher's Think check cell holding two keyed questions would be all or nothing: refused, naming the cell."
    nb = read_notebook(ROOT / "nbs" / "07_mask_grounding.ipynb")
    i = next(i for i, c in enumerate(nb["cells"]) if c["id"] == "678d290f")
    end = "### END HIDDEN TESTS"
    nb["cells"][i]["source"] = nb["cells"][i]["source"].replace(end, f'check_choice(think_q2, "Q2", key="d")\n{end}')
    with pytest.raises(ValueError, match=r"cell \d+ \(id 678d290f\): a Think check cell with 2 keyed .* split it"):
        mark_for_nbgrader(nb, "07_mask_grounding.ipynb")
    with pytest.raises(ValueError, match=r"id 678d290f\): a Think check cell with 2 keyed"):
        teacher_checks(nb, "07_mask_grounding.ipynb")


def _one_lesson(tmp_path: Path) -> Path:
    "A teacher's folder with one lesson of Think questions (07) and one appendix notebook (no exercises)."
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    shutil.copyfile(ROOT / "nbs" / "07_mask_grounding.ipynb", nbs / "07_mask_grounding.ipynb")
    cells = [{"cell_type": "markdown", "id": "a0", "metadata": {}, "source": "# An appendix"}]
    appendix = {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (nbs / f"{FAKE_APPENDIX}.ipynb").write_text(json.dumps(appendix))
    return nbs


@pytest.mark.parametrize("first,then", [(False, True), (True, False)])
def test_update_refuses_a_folder_of_the_other_edition(tmp_path, first, then, capsys):
    """Issue 86, item 3 (5.3, 5.4): `course --update` over the other edition is refused by name, nothing relabelled
    (was: exit 0, the README relabelled over copies of the other edition)."""
    from ris_nb.__main__ import main

    nbs, out = _one_lesson(tmp_path), tmp_path / "c"
    make_course(nbs, out, verbose=False, self_check=first)
    before = {p.name: p.read_text() for p in out.glob("*.*")}
    args = ["course", "--nbs", str(nbs), "--out", str(out), "--update"] + (["--self-check"] if then else [])
    assert main(args) == 2
    err = capsys.readouterr().err
    have = "graded" if then else "self-study"
    assert f"holds the {have} edition (07_mask_grounding.ipynb, README.md)" in err, err
    assert {p.name: p.read_text() for p in out.glob("*.*")} == before, "a file of the folder was rewritten"
    make_course(nbs, out, verbose=False, update=True, self_check=first)  # the same edition: updated as before


def test_a_self_study_copy_is_told_by_its_digest_without_its_label(tmp_path):
    "5.4: a self-study copy whose label cell was deleted still holds digests: not taken for a graded copy."
    from ris_nb.exercise_marks import SELF_STUDY_ID, copy_edition

    (path,) = make_course(_one_lesson(tmp_path), tmp_path / "c", verbose=False, self_check=True)
    nb = read_notebook(path)
    nb["cells"] = [c for c in nb["cells"] if c.get("id") != SELF_STUDY_ID]
    assert copy_edition(nb) == "self-study"


def test_the_self_study_site_labels_every_notebook_appendices_too(tmp_path):
    "5.2 / issue 86, item 3: the self-study edition's appendix pages carry the label too (was: 25 of 55 notebooks)."
    sys.path.insert(0, str(ROOT / "tools"))
    import build_site

    nbs = _one_lesson(tmp_path)
    pages = build_site.edition_notebooks(["07_mask_grounding", FAKE_APPENDIX], "self-study", nbs)
    assert [n for n, nb in pages.items() if SELF_STUDY_LABEL not in json.dumps(nb["cells"][:2])] == []
    student = build_site.edition_notebooks([FAKE_APPENDIX], "student", nbs)
    assert SELF_STUDY_LABEL not in json.dumps(student)
