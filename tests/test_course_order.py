"""The notebooks are a course: a numbered notebook below 90 uses only the `ris_nb` modules that it or an earlier course
notebook builds, and the modules the appendix owns (built by a notebook numbered 90 or above: `ris_nb.io`,
`ris_nb.validate`, `ris_nb.data.checks`, `ris_nb.testing`, `ris_nb.official`, the `ris_nb.models` package, …), which the
course calls as black boxes. What counts as a use: every import in a code cell, exported or not, inside a function body
or not — a library function that imports a later course module is a forward reference too (a later notebook plugs in by
registering itself into an earlier one, never the other way round)."""

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
    "`ris_nb.<default_exp>` → the notebook that builds it (a package's `__init__` counts as the package)."
    out = {}
    for nb in sorted(NBS.glob("*.ipynb")):
        for src in cells(nb):
            m = re.search(r"^#\|\s*default_exp\s+(\S+)", src, re.M)
            if m:
                out[f"ris_nb.{m.group(1)}".removesuffix(".__init__")] = nb
    return out


def is_appendix(nb: Path) -> bool:
    "A notebook numbered 90 or above: what it builds, the course may call as a black box."
    return bool(re.match(r"\d\d", nb.name)) and int(nb.name[:2]) >= 90


def python_of(src: str) -> str:
    "A cell's source without IPython magics and shell lines, so that `ast` can read it."
    return "\n".join("" if l.lstrip().startswith(("%", "!")) else l for l in src.splitlines())


def imported_modules(src: str) -> list[str]:
    "Dotted `ris_nb` names a cell imports, anywhere in it (function bodies included)."
    names = []
    for node in ast.walk(ast.parse(python_of(src))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
            if node.module == "ris_nb":
                names += [f"ris_nb.{a.name}" for a in node.names]
    return [n for n in names if n == "ris_nb" or n.startswith("ris_nb.")]


def owner(name: str, modules: dict[str, Path]) -> str | None:
    "The longest built module that `name` is or lies inside (None for the package itself and sub-packages)."
    hits = [m for m in modules if name == m or name.startswith(m + ".")]
    return max(hits, key=len) if hits else None


def later_uses(nb: Path, modules: dict[str, Path]) -> list[str]:
    out = []
    for i, src in enumerate(cells(nb)):
        for name in imported_modules(src):
            m = owner(name, modules)
            if m and modules[m].name > nb.name and not is_appendix(modules[m]):
                out.append(f"code cell {i}: {m} (built in {modules[m].name})")
    return out


def test_the_checker_sees_top_level_and_lazy_imports():
    src = "#| export\nfrom ris_nb.train import fit\ndef f():\n    from ris_nb.cli import main\n    return main\n"
    assert imported_modules(src) == ["ris_nb.train", "ris_nb.cli"]
    assert imported_modules("%time x = 1\nfrom ris_nb import viz, core") == ["ris_nb", "ris_nb.viz", "ris_nb.core"]
    modules = {"ris_nb.metrics": NBS / "01_metrics.ipynb", "ris_nb.train": NBS / "12_training.ipynb"}
    assert owner("ris_nb.train", modules) == "ris_nb.train" and owner("ris_nb.models", modules) is None


def test_appendix_modules_are_allowed_and_later_course_modules_are_not():
    modules = {
        "ris_nb.io": NBS / "92_dataset_writing.ipynb",
        "ris_nb.train": NBS / "12_training.ipynb",
        "ris_nb.models": NBS / "97_models_package.ipynb",
    }
    nb = NBS / "03_refer.ipynb"
    assert (
        is_appendix(modules["ris_nb.io"])
        and not is_appendix(modules["ris_nb.train"])
        and not is_appendix(NBS / "index.ipynb")
    )
    found = [
        m
        for m in ("ris_nb.io", "ris_nb.train", "ris_nb.models")
        if modules[m].name > nb.name and not is_appendix(modules[m])
    ]
    assert found == ["ris_nb.train"]
    # `models.__init__` counts as the package
    assert built_modules()["ris_nb.models"].name == "97_models_package.ipynb"


@pytest.mark.parametrize("nb", numbered_notebooks(), ids=lambda p: p.stem)
def test_no_notebook_uses_a_module_built_later(nb):
    uses = later_uses(nb, built_modules())
    assert not uses, (
        f"{nb.name} uses modules that later notebooks build — move the cell after them or use earlier tools: {uses}"
    )
