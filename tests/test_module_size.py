"""No module of the library is over 900 lines, as nbdev writes it and a reader scrolls it: a module a reader can hold
in mind."""

from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[1] / "ris_nb"
MODULES = sorted(p for p in LIB.rglob("*.py") if p.name != "_modidx.py")  # nbdev's symbol index is data, not code
MAX_MODULE_LINES = 900


@pytest.mark.parametrize("module", MODULES, ids=lambda p: str(p.relative_to(LIB)))
def test_module_is_at_most_900_lines(module):
    n = len(module.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_MODULE_LINES, f"{module.relative_to(LIB.parent)}: {n} lines, over {MAX_MODULE_LINES}"
