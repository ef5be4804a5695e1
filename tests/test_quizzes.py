"""Quizzes that need the lesson: statistics a test-wise student would exploit, computed from the teacher's notebooks.

- the keys of the multiple-choice questions are spread over the letters (no letter holds more than 40 % of them);
- the key is the longest option in at most a third of the questions, the shortest in at most a third, and no length
  rank (longest, second, …) holds more than 40 % of the keys (a student who picks the second-longest option must not
  win either); ties count: a key as long as the longest option is "the longest", as short as the shortest "the
  shortest";
- every question's key is one of its options, and every question with options has a key;
- no check cell of a student copy shows a from-scratch reference (`def ref_…` / `def reference…`);
- every notebook with exercises has one that the cells above do not answer (marked `**Not in the lesson:**`).

Run with `-s` to see the per-notebook table."""

import re
from collections import Counter
from pathlib import Path

import pytest

from ris_nb.course import to_student
from ris_nb.exercise_marks import exercise_start
from ris_nb.notebook_cells import HIDDEN, SOLUTION
from ris_nb.notebook_cells import clear_regions, read_notebook

NBS = Path(__file__).resolve().parents[1] / "nbs"
QUESTION = re.compile(r"\*\*(Q\d+)\.\*\*(.*?)(?=\*\*Q\d+\.\*\*|Set each answer|\Z)", re.S)
OPTION = re.compile(r"(?:^|\s)\(([a-e])\)\s")
KEYED = re.compile(r"check_choice\(\s*[\w.\[\]'\"]+\s*,\s*[\"'](Q\d+)[\"']\s*,\s*key\s*=\s*[\"'](\w)[\"']")
REFERENCE = re.compile(r"^\s*def\s+(ref_\w*|reference\w*)\s*\(", re.M)
NEW_TASK = "**Not in the lesson:**"


def _visible_text(s: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[`*_]", "", s)).strip()


def exercise_notebooks() -> list[Path]:
    return [p for p in sorted(NBS.glob("*.ipynb")) if exercise_start(read_notebook(p)) is not None]


def questions(nb: dict) -> dict[str, dict[str, str]]:
    "Each multiple-choice question of the exercise section: label → {letter: option text}."
    out: dict[str, dict[str, str]] = {}
    for c in nb["cells"][exercise_start(nb) :]:
        if c["cell_type"] != "markdown":
            continue
        for label, block in QUESTION.findall(clear_regions(c["source"], SOLUTION, None)):
            parts = OPTION.split(block)
            options = {parts[i]: _visible_text(parts[i + 1]) for i in range(1, len(parts) - 1, 2)}
            if options:
                assert label not in out, f"question label {label} used twice in one notebook"
                out[label] = options
    return out


def keys(nb: dict) -> dict[str, str]:
    "label → key, from the keyed `check_choice` calls of the exercise section's hidden tests."
    found: dict[str, str] = {}
    for c in nb["cells"][exercise_start(nb) :]:
        if c["cell_type"] == "code":
            for label, key in KEYED.findall(c["source"]):
                found[label] = key.lower()
    return found


def quiz_table() -> list[dict]:
    "One row per multiple-choice question of every notebook with exercises."
    rows = []
    for p in exercise_notebooks():
        nb = read_notebook(p)
        qs, ks = questions(nb), keys(nb)
        for label, options in qs.items():
            key = ks.get(label)
            longest = max(len(t) for t in options.values())
            shortest = min(len(t) for t in options.values())
            rank = 1 + sum(len(t) > len(options[key]) for t in options.values()) if key in options else 0
            rows.append(
                {
                    "notebook": p.stem,
                    "question": label,
                    "key": key,
                    "options": "".join(sorted(options)),
                    "key_longest": key in options and len(options[key]) == longest,
                    "key_shortest": key in options and len(options[key]) == shortest,
                    "length_rank": rank,  # 1 + the options strictly longer than the key
                }
            )
        for label in set(ks) - set(qs):
            rows.append(
                {
                    "notebook": p.stem,
                    "question": label,
                    "key": ks[label],
                    "options": "",
                    "key_longest": False,
                    "key_shortest": False,
                    "length_rank": 0,
                }
            )
    return rows


@pytest.fixture(scope="module")
def table():
    rows = quiz_table()
    print("\nnotebook               questions  keys      longest  shortest")
    for stem in dict.fromkeys(r["notebook"] for r in rows):
        mine = [r for r in rows if r["notebook"] == stem]
        ks = "".join(r["key"] or "?" for r in mine)
        long, short = sum(r["key_longest"] for r in mine), sum(r["key_shortest"] for r in mine)
        print(f"{stem:<22} {len(mine):>9}  {ks:<9} {long:>7}  {short:>8}")
    letters = Counter(r["key"] for r in rows)
    print(
        f"all: {len(rows)} questions, keys {dict(sorted(letters.items()))}, key longest in "
        f"{sum(r['key_longest'] for r in rows)}, shortest in {sum(r['key_shortest'] for r in rows)}"
    )
    return rows


def test_every_question_has_a_key_among_its_options(table):
    bad = [
        f"{r['notebook']} {r['question']}: key {r['key']!r}, options ({r['options']})"
        for r in table
        if not r["options"] or r["key"] not in r["options"]
    ]
    assert not bad, "questions whose key is missing or not one of their options:\n" + "\n".join(bad)


def test_keys_spread_over_the_letters(table):
    counts = Counter(r["key"] for r in table)
    top, n = counts.most_common(1)[0]
    assert n <= 0.4 * len(table), f"key {top!r} holds {n} of {len(table)} keys (> 40 %): {dict(counts)}"


def test_key_is_rarely_the_longest_option(table):
    longest = [f"{r['notebook']} {r['question']}" for r in table if r["key_longest"]]
    assert len(longest) <= len(table) / 3, (
        f"the key is the longest option in {len(longest)} of {len(table)} questions (> a third): {longest}"
    )


def test_key_is_rarely_the_shortest_option(table):
    "The other end of the same tell: a student who always picks the shortest option must not win either."
    shortest = [f"{r['notebook']} {r['question']}" for r in table if r["key_shortest"]]
    assert len(shortest) <= len(table) / 3, (
        f"the key is the shortest option in {len(shortest)} of {len(table)} questions (> a third): {shortest}"
    )


def test_key_lengths_spread_over_the_ranks(table):
    ranks = Counter(r["length_rank"] for r in table if r["length_rank"])
    top, n = ranks.most_common(1)[0]
    assert n <= 0.4 * len(table), (
        f"the key is the option of length rank {top} (1 = longest) in {n} of {len(table)} questions (> 40 %): "
        f"{dict(sorted(ranks.items()))}; a test-wise student would pick that rank"
    )


@pytest.mark.parametrize("path", exercise_notebooks(), ids=lambda p: p.stem)
def test_no_reference_in_plain_sight(path):
    student = to_student(read_notebook(path), backend="own", where=str(path))
    start = exercise_start(student)
    shown = [
        f"cell {i}: def {m}"
        for i, c in enumerate(student["cells"][start:], start)
        if c["cell_type"] == "code"
        for m in REFERENCE.findall(clear_regions(c["source"], HIDDEN, None))
    ]
    assert not shown, f"{path.name}: the student copy shows a reference implementation ({shown}); hide it"


@pytest.mark.parametrize("path", exercise_notebooks(), ids=lambda p: p.stem)
def test_an_exercise_the_lesson_does_not_answer(path):
    nb = read_notebook(path)
    text = "".join(c["source"] for c in nb["cells"][exercise_start(nb) :] if c["cell_type"] == "markdown")
    assert NEW_TASK in text, (
        f"{path.name}: no exercise marked {NEW_TASK!r} (a changed specification, a derivation or a prediction)"
    )


CHOICES = re.compile(r"check_choice\(\s*[\w.\[\]'\"]+\s*,\s*[\"'](Q\d+)[\"']\s*,\s*choices\s*=\s*[\"'](\w+)[\"']")


def test_each_think_check_offers_its_questions_letters():
    "A student copy's Think check accepts exactly the letters its question offers (`choices=`): no more, no fewer."
    for p in exercise_notebooks():
        nb = read_notebook(p)
        offered = {
            label: letters
            for c in nb["cells"][exercise_start(nb) :]
            if c["cell_type"] == "code"
            for label, letters in CHOICES.findall(c["source"])
        }
        want = {label: "".join(sorted(options)) for label, options in questions(nb).items()}
        assert offered == want, f"{p.name}: checks offer {offered}; the questions offer {want}"


def strategy_scores(rows: list[dict], options: list[dict[str, str]]) -> dict[str, float]:
    """Expected share of right answers of each length strategy a test-wise student could follow without reading: pick
    the longest, the shortest, the option of length rank r, or one that is neither the longest nor the shortest
    (ties drawn at random; a strategy with no candidate guesses blind)."""

    def pick(cands: list[str], key: str, opts: dict[str, str]) -> float:
        cands = cands or list(opts)
        return (key in cands) / len(cands)

    def ranked(opts: dict[str, str]) -> list[str]:
        return sorted(opts, key=lambda o: -len(opts[o]))

    strategies = {
        "longest": lambda o: [k for k in o if len(o[k]) == max(map(len, o.values()))],
        "shortest": lambda o: [k for k in o if len(o[k]) == min(map(len, o.values()))],
        "avoid both extremes": lambda o: [
            k for k in o if min(map(len, o.values())) < len(o[k]) < max(map(len, o.values()))
        ],
        **{f"length rank {r}": (lambda o, r=r: ranked(o)[r - 1 : r]) for r in (2, 3)},
    }
    return {
        name: sum(pick(choose(o), r["key"], o) for r, o in zip(rows, options)) / len(rows)
        for name, choose in strategies.items()
    }


def test_no_length_strategy_beats_30_percent():
    "Reading the lengths alone must not pay: every strategy of `strategy_scores` ≤ 30 % (a blind guess: 25–33 %)."
    rows, options = [], []
    for p in exercise_notebooks():
        nb = read_notebook(p)
        qs, ks = questions(nb), keys(nb)
        for label, opts in qs.items():
            rows.append({"key": ks.get(label)})
            options.append(opts)
    scores = strategy_scores(rows, options)
    print({k: f"{v:.0%}" for k, v in scores.items()})
    assert max(scores.values()) <= 0.30, f"a length strategy pays over {len(rows)} questions: " + ", ".join(
        f"{k} {v:.0%}" for k, v in scores.items()
    )


def test_strategy_scores_count_ties_and_ranks():
    opts = [{"a": "xx", "b": "x", "c": "xxx"}, {"a": "x", "b": "x", "c": "xx", "d": "xxx"}]
    scores = strategy_scores([{"key": "a"}, {"key": "a"}], opts)
    assert scores["avoid both extremes"] == (1 + 0) / 2  # q1: a is the one middle option; q2: c is
    assert scores["shortest"] == (0 + 1 / 2) / 2  # q2: a ties b for the shortest
    assert scores["length rank 2"] == (1 + 0) / 2
