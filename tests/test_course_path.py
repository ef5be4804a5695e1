"""The course path (notebooks numbered below 90) teaches ideas; the engineering that hardens them lives in the appendix
notebooks (90 and up), which extend the same modules. These checks keep it that way: no hardening in the exported cells
of the course path, short exported cells, concise prose, and a figure in every numbered notebook."""

import io
import math
import json
import re
import tokenize
from pathlib import Path

import pytest


NBS = Path(__file__).resolve().parents[1] / "nbs"
COURSE = sorted(NBS.glob("[0-8][0-9]*.ipynb"))
NUMBERED = sorted(NBS.glob("[0-9][0-9]*.ipynb"))  # the course and the appendix
HARDENING = {  # what belongs in the appendix, as it shows in code
    "a custom unpickler": r"\bUnpickler\b|find_class",
    "a memo cap": r"\bmemo(_cap|_limit)?\b|\bMAX_MEMO\w*",
    "file locks (fcntl)": r"\bfcntl\b",
    "fsync": r"\bfsync\b",
    "an atomic swap": r"\bos\.replace\b|\.replace\(\s*(dst|dest|target|path)\b",
    "process groups / DDP": (
        r"\btorch\.distributed\b|\binit_process_group\b|\bDistributedDataParallel\b|(?<![\w.])dist\.\w+\("
    ),
    "fault planting": r"\bplant\w*\b",
    "official key maps": (
        r"\bofficial_(key|to|slot|interaction|decoder)\w*|\bconvert_official\w*|\bkey_map\b|\bmap_official\b"
    ),
}
MAX_EXPORTED_LINES = 40
# every markdown character a reader meets in the course notebooks: lecture, exercises and the first cells' Run All lines
MAX_COURSE_MARKDOWN = 125_000  # issue 87: the course (00–19) reads in the sittings its lessons promise


def cells(nb: Path) -> list[dict]:
    return json.loads(nb.read_text())["cells"]


def src(cell: dict) -> str:
    return "".join(cell["source"])


def code_lines(cell: dict) -> int:
    "A cell's lines less the output check's mark (`#| check_output`: tools/check_notebooks.py adds it; not code)."
    return sum(1 for line in src(cell).splitlines() if not re.match(r"\s*#\|\s*check_output\b", line))


def is_exported(cell: dict) -> bool:
    "An `#| export` among the cell's leading directives (after `#| eval: false` too)."
    directives = re.match(r"(\s*#\|.*\n?)*", src(cell)).group(0)
    return cell["cell_type"] == "code" and bool(re.search(r"^\s*#\|\s*export", directives, re.M))


def code_only(source: str) -> str:
    """A cell's code with comments and string literals blanked, so that a word in a docstring or a citation does not
    count as use."""
    lines = ["" if l.lstrip().startswith(("%", "!")) else l for l in source.splitlines()]
    prose = {tokenize.STRING, getattr(tokenize, "FSTRING_MIDDLE", -1)}
    toks = [
        t._replace(string='""' if t.type == tokenize.STRING else "") if t.type in prose else t
        for t in tokenize.generate_tokens(io.StringIO("\n".join(lines) + "\n").readline)
        if t.type != tokenize.COMMENT
    ]
    return tokenize.untokenize(toks)


@pytest.mark.parametrize("nb", COURSE, ids=lambda p: p.stem)
def test_no_hardening_in_the_course_path(nb):
    found = [
        f"cell {i}: {what}"
        for i, c in enumerate(cells(nb))
        if is_exported(c)
        for what, pat in HARDENING.items()
        if re.search(pat, code_only(src(c)))
    ]
    assert not found, f"{nb.name} exports engineering that belongs in an appendix notebook (90+): {found}"


@pytest.mark.parametrize("nb", COURSE, ids=lambda p: p.stem)
def test_exported_cells_are_short(nb):
    long = [(i, n) for i, c in enumerate(cells(nb)) if is_exported(c) and (n := code_lines(c)) > MAX_EXPORTED_LINES]
    assert not long, f"{nb.name}: exported cells over {MAX_EXPORTED_LINES} lines (cell index, lines): {long}"


def markdown_chars(nb: Path) -> int:
    "Characters of markdown in `nb` as a reader meets them: every markdown cell, the Run All line included."
    return sum(len(src(c)) for c in cells(nb) if c["cell_type"] == "markdown")


def test_course_prose_is_concise():
    chars = {nb.stem: markdown_chars(nb) for nb in COURSE}
    total, largest = sum(chars.values()), sorted(chars.items(), key=lambda kv: -kv[1])[:5]
    assert total <= MAX_COURSE_MARKDOWN, (
        f"course markdown {total:,} chars (cap {MAX_COURSE_MARKDOWN:,}); the largest: "
        + ", ".join(f"{name} {n:,}" for name, n in largest)
    )


@pytest.mark.parametrize("nb", NUMBERED, ids=lambda p: p.stem)
def test_every_numbered_notebook_has_a_figure(nb):
    assert any(
        "image/png" in o.get("data", {}) for c in cells(nb) if c["cell_type"] == "code" for o in c.get("outputs", [])
    ), f"{nb.name} has no saved figure"


def outputs_text(nb: Path) -> str:
    return "\n".join(
        "".join(o.get("text", "")) for c in cells(nb) if c["cell_type"] == "code" for o in c.get("outputs", [])
    )


def test_a_model_refers_by_the_third_notebook():
    """Before 03, a notebook trains a model with a bare loop, draws it, and prints its score above every
    language-blind answer."""

    def refers(nb: Path) -> bool:
        bare_loop = any("backward()" in src(c) and not is_exported(c) for c in cells(nb))
        figure = any(
            "image/png" in o.get("data", {})
            for c in cells(nb)
            if c["cell_type"] == "code"
            for o in c.get("outputs", [])
        )
        scores = {
            l.split("oIoU")[0].strip(): float(l.split("oIoU")[1].split()[0])
            for l in outputs_text(nb).splitlines()
            if " oIoU " in l
        }
        blind = [v for k, v in scores.items() if k in ("one random shape", "union of all shapes", "largest shape")]
        model = [v for k, v in scores.items() if "reads the sentence" in k]
        return bare_loop and figure and len(blind) == 3 and bool(model) and model[0] > max(blind) + 10

    assert any(refers(nb) for nb in COURSE if nb.stem < "03"), (
        "no notebook before 03 shows a small model refer beside the floors"
    )


RUN_MANIFEST = NBS / "results" / "run_manifest.csv"  # tools/run_all.py: the run that saved each notebook's outputs
RUN_ALL = re.compile(r"\*\*Run All:\*\* about (\d+) min")


def measured_run_all() -> dict[str, float]:
    "Seconds of each recorded error-free Run All: of a course notebook, or of one whose first cell states its cost."
    import csv

    with RUN_MANIFEST.open() as f:
        rows = {r["notebook"]: float(r["seconds"]) for r in csv.DictReader(f) if not r["error"]}
    stated = lambda name: (NBS / (f"{name}.ipynb")).exists() and "**Run All:**" in src(cells(NBS / f"{name}.ipynb")[0])  # noqa: E731
    return {k: v for k, v in rows.items() if k in {nb.stem for nb in COURSE} or stated(k)}


@pytest.mark.parametrize("name,seconds", sorted(measured_run_all().items()))
def test_first_cell_states_the_measured_run_all(name, seconds):
    "A measured notebook's first cell says what Run All costs, in whole minutes rounded up from the measurement."
    first = src(cells(NBS / f"{name}.ipynb")[0])
    m = RUN_ALL.search(first)
    assert m, f"{name}: the first cell should say '**Run All:** about N min …' (measured {seconds:.0f} s)"
    assert int(m.group(1)) == max(1, math.ceil(seconds / 60)), f"{name}: states {m.group(1)} min, measured {seconds} s"
