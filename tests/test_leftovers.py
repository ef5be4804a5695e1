"""Nothing without a reader: every file in tools/, bench/ and nbs/results/ is named by a notebook, a test, a README
(the project's, bench/'s, the learning log's) or the Makefile, or by a script in the same folder that runs it."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
READERS = [
    *ROOT.glob("nbs/*.ipynb"),
    *ROOT.glob("tests/*.py"),
    ROOT / "README.md",
    ROOT / "bench" / "README.md",
    ROOT / "nbs" / "results" / "learning_log.md",
    ROOT / "Makefile",
]
FILES = sorted(
    p
    for folder in ("tools", "bench", "nbs/results", "nbs/results/learning_log")
    for p in (ROOT / folder).glob("*")
    if p.is_file() and p.name != "README.md" and p.suffix != ".pyc"
)


def text_of(paths) -> str:
    return "\n".join(p.read_text(errors="replace") for p in paths)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_file_has_a_reader(path):
    siblings = [p for p in path.parent.glob("*.py") if p != path]  # bench/run_all.py runs the benchmarks
    names = {path.name, f"from {path.stem} import", f"import {path.stem}"} if path.suffix == ".py" else {path.name}
    text = text_of([*READERS, *siblings])
    assert any(n in text for n in names), f"{path.relative_to(ROOT)} is read by nothing: reference it or remove it"
