"The exercises are real: in the student copies every check fails; a wrong answer of each kind fails its check; nbgrader and our own few lines make the same copies."
import re
from pathlib import Path

import pytest

from ris_nb.course import (KINDS, SOLUTION, HIDDEN, exercise_start, make_course, nbgrader_available, read_notebook, run_exercises,
                           to_student)

ROOT = Path(__file__).resolve().parents[1]
TEACHING = ["01_metrics", "02_shaperefs", "03_refer", "05_encoders", "06_lavt", "07_mask_grounding", "08_alignment", "09_magnet",
            "10_entity_slots", "11_sag", "12_training", "13_evaluation"]
TEACHING = [t for t in TEACHING if exercise_start(read_notebook(ROOT / "nbs" / f"{t}.ipynb")) is not None]

@pytest.fixture(scope="module")
def course(tmp_path_factory):
    out = tmp_path_factory.mktemp("course")
    return {p.stem: p for p in make_course(ROOT / "nbs", out, verbose=False)}

def test_student_copies_written(course):
    assert set(TEACHING) <= set(course), f"no student copy of {sorted(set(TEACHING) - set(course))}"
    for stem, p in course.items():
        text = p.read_text()
        assert SOLUTION[0] not in text and HIDDEN[0] not in text, f"{p.name}: a solution or hidden test left in the student copy"
        assert "raise NotImplementedError()" in text, f"{p.name}: no stub"
    assert (next(iter(course.values())).parent / "README.md").exists()

@pytest.mark.parametrize("stem", TEACHING)
def test_every_check_fails_on_the_stub(course, stem):
    results = run_exercises(read_notebook(course[stem]))
    kinds = {r.kind for r in results}
    assert kinds == set(KINDS), f"{stem}: exercises of kinds {sorted(kinds)}; every teaching notebook has all of {KINDS}"
    passed = [f"cell {r.index} ({r.title})" for r in results if r.passed]
    assert not passed, f"{stem}: these checks pass on the student copy (stubs), so they check nothing: {passed}"

def _with_answer(nb: dict, marker: str, body: str) -> dict:
    "The instructor notebook with the solution region of the cell containing `marker` replaced by `body`."
    for c in nb["cells"]:
        if c["cell_type"] == "code" and marker in c["source"] and SOLUTION[0] in c["source"]:
            src = c["source"]
            i, j = src.index("### " + SOLUTION[0]), src.index("### " + SOLUTION[1]) + len("### " + SOLUTION[1])
            indent = re.search(r"[ \t]*$", src[:i]).group(0)
            c["source"] = src[:i - len(indent)] + "\n".join(indent + l for l in body.splitlines()) + src[j:]
            return nb
    raise AssertionError(f"no solution cell containing {marker!r}")

# one deliberately wrong answer per kind: (notebook, solution cell marker, wrong body, what the message must name)
WRONG = [
    ("01_metrics", "def my_oiou_miou",        # write it yourself: oIoU and mIoU swapped
     'iou = inter / union.clamp(min=1)\nreturn {"oIoU": 100 * iou.mean().item(), "mIoU": 100 * inter.sum().item() / union.sum().item()}', "value"),
    ("01_metrics", "def my_intersection_union", "return (pred & gt).sum((1, 2)), (pred | gt).sum()", "shape"),
    ("06_lavt", "def my_dice_loss",            # right values, but detached: no gradient reaches the prediction
     "inter = (prob * target).flatten(1).sum(1)\nreturn (1 - (2 * inter + 1) / (prob.flatten(1).sum(1) + target.flatten(1).sum(1) + 1)).mean().detach()", "gradient"),
    ("07_mask_grounding", "WITH_MG =",        # run an experiment: the wrong preset for the MG arm
     'WITHOUT_MG, WITH_MG = "lavt_tiny", "magnet_tiny"', "model.name"),
    ("01_metrics", "think_q1 =", 'think_q1 = "b"\nthink_q2 = "a"', "not the expected answer"),   # think
]

@pytest.mark.parametrize("stem,marker,body,says", WRONG, ids=[f"{w[0]}:{w[1]}" for w in WRONG])
def test_wrong_answer_fails_its_check(stem, marker, body, says):
    nb = _with_answer(read_notebook(ROOT / "nbs" / f"{stem}.ipynb"), marker, body)
    results = run_exercises(nb)
    failed = [r for r in results if not r.passed]
    assert len(failed) == 1 and says in failed[0].message, \
        f"{stem}: a wrong {marker!r} should fail exactly its own check with a message naming {says!r}; got {[(r.title, r.message) for r in failed]}"

@pytest.mark.skipif(not nbgrader_available(), reason="nbgrader not installed")
@pytest.mark.parametrize("stem", TEACHING)
def test_nbgrader_and_own_lines_agree(stem):
    nb = read_notebook(ROOT / "nbs" / f"{stem}.ipynb")
    assert to_student(nb, "nbgrader")["cells"] == to_student(nb, "own")["cells"]
