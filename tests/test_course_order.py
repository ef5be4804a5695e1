"""The notebooks are a course: a numbered notebook below 90 uses only the `ris_nb` modules that it or an earlier notebook
builds. What counts as a use: every import in a code cell, exported or not, inside a function body or not — a library
function that imports a later module is a forward reference too (a later notebook plugs in by registering itself into an
earlier one, never the other way round)."""
import ast
import json
import re
from pathlib import Path

import pytest

NBS = Path(__file__).resolve().parents[1] / "nbs"


def numbered_notebooks() -> list[Path]:
    "The course's notebooks in teaching order: numbered, below 90."
    return sorted(p for p in NBS.glob("[0-8][0-9]*.ipynb"))


def cells(nb: Path) -> list[str]:
    return ["".join(c["source"]) for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]


def built_modules() -> dict[str, Path]:
    "`ris_nb.<default_exp>` → the notebook that builds it."
    out = {}
    for nb in sorted(NBS.glob("*.ipynb")):
        for src in cells(nb):
            m = re.search(r"^#\|\s*default_exp\s+(\S+)", src, re.M)
            if m: out[f"ris_nb.{m.group(1)}"] = nb
    return out


def python_of(src: str) -> str:
    "A cell's source without IPython magics and shell lines, so that `ast` can read it."
    return "\n".join("" if l.lstrip().startswith(("%", "!")) else l for l in src.splitlines())


def imported_modules(src: str) -> list[str]:
    "Dotted `ris_nb` names a cell imports, anywhere in it (function bodies included)."
    names = []
    for node in ast.walk(ast.parse(python_of(src))):
        if isinstance(node, ast.Import): names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
            if node.module == "ris_nb": names += [f"ris_nb.{a.name}" for a in node.names]
    return [n for n in names if n == "ris_nb" or n.startswith("ris_nb.")]


def owner(name: str, modules: dict[str, Path]) -> str | None:
    "The longest built module that `name` is or lies inside (None for the package itself and sub-packages)."
    hits = [m for m in modules if name == m or name.startswith(m + ".")]
    return max(hits, key=len) if hits else None


# appendix modules the course calls as black boxes, saying where they are built (as it calls torch)
BLACK_BOXES = {"ris_nb.distributed"}


def later_uses(nb: Path, modules: dict[str, Path]) -> list[str]:
    out = []
    for i, src in enumerate(cells(nb)):
        for name in imported_modules(src):
            m = owner(name, modules)
            if m and m not in BLACK_BOXES and modules[m].name > nb.name:
                out.append(f"code cell {i}: {m} (built in {modules[m].name})")
    return out


def test_the_checker_sees_top_level_and_lazy_imports():
    src = "#| export\nfrom ris_nb.train import fit\ndef f():\n    from ris_nb.cli import main\n    return main\n"
    assert imported_modules(src) == ["ris_nb.train", "ris_nb.cli"]
    assert imported_modules("%time x = 1\nfrom ris_nb import viz, core") == ["ris_nb", "ris_nb.viz", "ris_nb.core"]
    modules = {"ris_nb.metrics": NBS / "01_metrics.ipynb", "ris_nb.train": NBS / "12_training.ipynb"}
    assert owner("ris_nb.train", modules) == "ris_nb.train" and owner("ris_nb.models", modules) is None


@pytest.mark.parametrize("nb", numbered_notebooks(), ids=lambda p: p.stem)
def test_no_notebook_uses_a_module_built_later(nb):
    uses = later_uses(nb, built_modules())
    assert not uses, f"{nb.name} uses modules that later notebooks build — move the cell after them or use earlier tools: {uses}"
