"""Every course lesson (notebooks numbered below 90) reads in one sitting and ends with what it built: a `## Summary`
as its last section (after `## Exercises` when there is one), 3–5 bullets closed by 2–3 open `### What if?`
questions; at most 45 code cells and none over 60 lines, a figure for every 8 exported cells, the course's running
scene (`running_scene(`) from 02 to 14 and in 17, the three models' architecture figures (ris_nb.diagrams) above the
code that builds them, and in every model lesson (06–11) a prediction asked before the cell that shows it."""

import re
from pathlib import Path

import pytest

from test_course_path import cells, code_lines, code_only, is_exported, src

NBS = Path(__file__).resolve().parents[1] / "nbs"
COURSE = sorted(NBS.glob("[0-8][0-9]*.ipynb"))
MAX_CODE_CELLS, MAX_CELL_LINES, EXPORTED_PER_FIGURE = 45, 60, 8
RUNNING_SCENE = [nb for nb in COURSE if "02" <= nb.stem[:2] <= "14" or nb.stem[:2] == "17"]
MODEL_LESSONS = [nb for nb in COURSE if "06" <= nb.stem[:2] <= "11"]
ARCHITECTURE = {"LAVT": (["06"], "draw_lavt"), "MagNet": (["09"], "draw_magnet"), "SaG": (["10", "11"], "draw_sag")}


def code_cells(nb: Path) -> list[tuple[int, dict]]:
    return [(i, c) for i, c in enumerate(cells(nb)) if c["cell_type"] == "code"]


def calls(cell: dict, name: str) -> bool:
    "The cell's code (comments and strings aside) calls `name`."
    return re.search(rf"\b{name}\(", code_only(src(cell))) is not None


def headings(nb: Path, title: str) -> list[int]:
    "Indices of the markdown cells holding a `## <title>` heading."
    pattern = re.compile(rf"^##\s+{title}\b", re.M)
    return [i for i, c in enumerate(cells(nb)) if c["cell_type"] == "markdown" and pattern.search(src(c))]


@pytest.mark.parametrize("nb", COURSE, ids=lambda p: p.stem)
def test_lesson_ends_with_a_summary(nb):
    summary = headings(nb, "Summary")
    assert summary, f"{nb.name}: no markdown cell with a '## Summary' heading (what was built, its numbers, what next)"
    later = [i for i in headings(nb, r"\w+") if i > summary[-1]]
    assert not later, (
        f"{nb.name}: '## Summary' (cell {summary[-1]}) should be the last section; a '## ' heading follows in cell "
        f"{later[0]} (move the summary to the end, after the exercises)"
    )


THINK_CHECK = re.compile(r"check_choice\([^)]*\bkey\s*=")


def reading_cells(code: list[tuple[int, dict]]) -> list[tuple[int, dict]]:
    """The code cells a reader works through: a Think's check cells, one per question so that each scores on its own
    (19_course), count as one."""
    out = []
    for i, c in code:
        think = bool(THINK_CHECK.search(src(c)))
        if not (think and out and out[-1][0] == i - 1 and THINK_CHECK.search(src(out[-1][1]))):
            out.append((i, c))
    return out


@pytest.mark.parametrize("nb", COURSE, ids=lambda p: p.stem)
def test_lesson_is_one_sitting(nb):
    code = code_cells(nb)
    n = len(reading_cells(code))
    assert n <= MAX_CODE_CELLS, f"{nb.name}: {n} code cells, a Think's checks as one (at most {MAX_CODE_CELLS})"
    long = [(i, n) for i, c in code if (n := code_lines(c)) > MAX_CELL_LINES]
    assert not long, f"{nb.name}: code cells over {MAX_CELL_LINES} lines (cell index, lines): {long}"


MAX_CODE_LINES = 450  # non-blank code lines a lesson holds, exported code included (issue 87: one sitting)
OVER_CAP: dict[str, int] = {}  # lessons still above it (their count when the cap came): each may only shrink to fit


def nonblank_code_lines(nb: Path) -> int:
    return sum(1 for _, c in code_cells(nb) for line in src(c).splitlines() if line.strip())


@pytest.mark.parametrize("nb", COURSE, ids=lambda p: p.stem)
def test_lesson_code_fits_one_sitting(nb):
    n, cap = nonblank_code_lines(nb), OVER_CAP.get(nb.stem, MAX_CODE_LINES)
    assert n <= cap, f"{nb.name}: {n} non-blank code lines (at most {cap}; the goal {MAX_CODE_LINES})"
    if nb.stem in OVER_CAP:
        assert n > MAX_CODE_LINES, f"{nb.name} fits now ({n} ≤ {MAX_CODE_LINES}): take it out of OVER_CAP"


@pytest.mark.parametrize("nb", COURSE, ids=lambda p: p.stem)
def test_a_figure_for_every_eight_exported_cells(nb):
    code = [c for _, c in code_cells(nb)]
    figures = sum(any("image/png" in o.get("data", {}) for o in c.get("outputs", [])) for c in code)
    exported = sum(map(is_exported, code))
    assert figures * EXPORTED_PER_FIGURE >= exported, (
        f"{nb.name}: {figures} saved figure(s) for {exported} exported cells "
        f"(at least {-(-exported // EXPORTED_PER_FIGURE)} needed: one per {EXPORTED_PER_FIGURE})"
    )


@pytest.mark.parametrize("nb", RUNNING_SCENE, ids=lambda p: p.stem)
def test_lesson_follows_the_running_scene(nb):
    assert any(calls(c, "running_scene") for _, c in code_cells(nb)), (
        f"{nb.name}: no code cell calls running_scene( (the course's one scene, followed from 02 to 14 and in 17)"
    )


@pytest.mark.parametrize("model", ARCHITECTURE)
def test_architecture_figure_comes_before_the_code(model):
    numbers, draw = ARCHITECTURE[model]
    found = []
    for nb in [p for p in COURSE if p.stem[:2] in numbers]:
        code = code_cells(nb)
        first_export = next((i for i, c in code if is_exported(c)), len(cells(nb)))
        drawn = next((i for i, c in code if calls(c, draw)), None)
        if drawn is not None and drawn < first_export:
            return
        where = f"called in cell {drawn}" if drawn is not None else "not called"
        found.append(f"{nb.name}: {draw}( {where}, first exported cell {first_export}")
    assert False, f"{model}'s architecture figure ({draw}( from ris_nb.diagrams) is not drawn before the code: {found}"


WHAT_IF = re.compile(r"^###\s+What if\?\s*$", re.M)
PREDICT = "**Predict, then run.**"
GUESS = re.compile(r"^my_guess\s*=", re.M)


def what_if_questions(text: str) -> list[str]:
    "The bullet items under a `### What if?` heading of `text`, up to the next heading (continuation lines joined)."
    body = re.split(r"^#", text[WHAT_IF.search(text).end() :], maxsplit=1, flags=re.M)[0]
    items: list[str] = []
    for line in body.splitlines():
        if line.startswith("- "):
            items.append(line[2:].strip())
        elif line.startswith("  ") and items:
            items[-1] += " " + line.strip()
    return items


@pytest.mark.parametrize("nb", COURSE, ids=lambda p: p.stem)
def test_summary_states_ideas_in_bullets(nb):
    "The summary restates the lesson in 3–5 `- ` bullets (the idea, a number, its limit, what next), not a name list."
    text = src(cells(nb)[headings(nb, "Summary")[-1]])
    body = text[: m.start()] if (m := WHAT_IF.search(text)) else text
    bullets = re.findall(r"^- ", body, re.M)
    assert 3 <= len(bullets) <= 5, f"{nb.name}: the summary holds {len(bullets)} '- ' bullets before 'What if' (3–5)"


@pytest.mark.parametrize("nb", COURSE, ids=lambda p: p.stem)
def test_lesson_ends_with_what_if_questions(nb):
    "After the summary: `### What if?` and 2–3 open questions as `- ` bullets, each with a question mark (d2l style)."
    summary = headings(nb, "Summary")
    found = [i for i, c in enumerate(cells(nb)) if c["cell_type"] == "markdown" and WHAT_IF.search(src(c))]
    assert summary and found and found[-1] >= summary[-1], (
        f"{nb.name}: no '### What if?' heading in or after the '## Summary' cell (2–3 open questions, ungraded)"
    )
    items = what_if_questions(src(cells(nb)[found[-1]]))
    assert 2 <= len(items) <= 3 and all("?" in q for q in items), (
        f"{nb.name}: '### What if?' should hold 2–3 '- ' bullets, each a question; found {items}"
    )


@pytest.mark.parametrize("nb", MODEL_LESSONS, ids=lambda p: p.stem)
def test_model_lesson_asks_a_prediction(nb):
    """A markdown cell with **Predict, then run.**; the next code cell assigns `my_guess` (the student's guess), and it
    or one of the two code cells after it (the one that measures, the one that compares) prints `my_guess`."""
    cs = cells(nb)
    prompts = [i for i, c in enumerate(cs) if c["cell_type"] == "markdown" and PREDICT in src(c)]
    assert prompts, f"{nb.name}: no markdown cell with {PREDICT!r} (ask a guess before the cell that shows it)"
    for i in prompts:
        code = [c for c in cs[i + 1 :] if c["cell_type"] == "code"][:3]
        assert code and GUESS.search(src(code[0])), (
            f"{nb.name}: the code cell after the prompt in cell {i} should start the guess with `my_guess = …`"
        )
        shows = [c for c in code if re.search(r"\bprint\([^\n]*\bmy_guess\b", src(c))]
        assert shows, f"{nb.name}: after the prompt in cell {i}, no cell prints `my_guess` beside the measured value"


def test_student_copies_hide_each_prediction_until_its_reveal():
    """At least 10 Predict prompts across the course; in each student copy (and so on the site) no code cell from a
    prompt to the cell that prints `my_guess` keeps an output: the measured value is not shown before the guess."""
    from ris_nb.course import PREDICT as COURSE_PREDICT, prediction_spans, to_student
    from ris_nb.notebook_cells import read_notebook

    assert COURSE_PREDICT == PREDICT
    count = 0
    for nb in COURSE:
        teacher = read_notebook(nb)
        spans = prediction_spans(teacher)
        prompts = sum(c["cell_type"] == "markdown" and PREDICT in src(c) for c in cells(nb))
        assert len(spans) == prompts, f"{nb.name}: a Predict prompt without a later cell printing my_guess"
        count += len(spans)
        if not spans:
            continue
        student = to_student(teacher, backend="own", where=str(nb))
        shown = [j for i, r in spans for j in range(i + 1, r + 1) if student["cells"][j].get("outputs")]
        assert not shown, f"{nb.name}: the student copy shows outputs between a prediction and its reveal: {shown}"
    assert count >= 10, f"{count} Predict prompts in the course: ask at least 10 (where training starts, metrics)"
