"""What a student receives must hold no Think key and nothing a key can be recovered from (issue 79): helpers that
find, in a text, the salted digests of the teacher notebooks' real keys, and `digest=` / `answer_digest` in exercise
sections. Used by test_course (student copies, the staged student site) and test_nbgrader (release, feedback)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ris_nb.exercise_checks import answer_digest
from ris_nb.exercise_marks import exercise_start, take_keys
from ris_nb.notebook_cells import HIDDEN
from ris_nb.notebook_cells import read_notebook

ROOT = Path(__file__).resolve().parents[1]
SALTED = re.compile(r"([\w-]+)/(Q\d+):([0-9a-f]{16})")  # answer_digest's `salt:hex`, salt = check id/question


def think_keys(nbs: Path = ROOT / "nbs") -> dict[str, list[tuple[str, str]]]:
    "Check cell id → its (question, key)s, for every keyed Think check of the teacher notebooks in `nbs`."
    out = {}
    for p in sorted(nbs.glob("*.ipynb")):
        nb = read_notebook(p)
        start = exercise_start(nb)
        for c in nb["cells"][start:] if start is not None else []:
            if c["cell_type"] == "code" and HIDDEN[0] in c["source"]:
                keys = take_keys(c["source"], p.name)
                if keys:
                    out[c["id"]] = keys
    return out


def key_derived(text: str, keys: dict[str, list[tuple[str, str]]]) -> list[str]:
    "The strings of `text` derived from a real key: a salted digest under a Think check's salt, or its hex alone."
    found = [m.group(0) for m in SALTED.finditer(text) if m.group(1) in keys]
    for cid, pairs in keys.items():
        for q, k in pairs:
            hexed = answer_digest(k, f"{cid}/{q}").split(":")[1]
            found += [f"{cid}/{q}: {hexed}"] if hexed in text else []
    return found


def exercise_text(nb: dict) -> str:
    "The exercise section of a notebook (sources, outputs, metadata) as one text."
    start = exercise_start(nb)
    return json.dumps(nb["cells"][start:], ensure_ascii=False) if start is not None else ""


def leaks_in(path: Path, keys: dict[str, list[tuple[str, str]]]) -> list[str]:
    """What of the file `path` gives a Think key away: key-derived strings anywhere; any `digest=` or `answer_digest`
    in a notebook's exercise section or in a feedback page."""
    text = path.read_text(encoding="utf-8", errors="replace")
    found = key_derived(text, keys)
    if path.suffix == ".ipynb":
        ex = exercise_text(read_notebook(path))
        found += [w for w in ("digest=", "answer_digest") if w in ex]
    if path.suffix == ".html":  # nbgrader's feedback on a lesson: no digest anywhere
        found += [w for w in ("digest=", "answer_digest") if w in text]
    return [f"{path.name}: {f}" for f in found]
