"""Rewrite imports after names moved from one module to another: `python tools/move_names.py ris_nb.core ris_nb.presets
get_preset list_presets [--check]`.

Every `from OLD import …` statement in the notebooks' code cells (nbs/*.ipynb) and the Python files of tests/,
tools/ and bench/ that imports a moved name is split in two: the names that stayed still come from OLD, the moved
ones from NEW (aliases kept, indentation kept, at module level or inside a function). Attribute uses such as
`ris_nb.core.get_preset` are listed, not rewritten. The exported library is not touched: re-export with
`nbdev_export`. Run `tools/format_notebooks.py` afterwards to re-sort the imports. `--check` only lists what would
change (exit 1 if any).
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAGIC = re.compile(r"^\s*[%!]")


def _parseable(source: str) -> str:
    "`source` with IPython magics and shell lines blanked (same line numbers), so that `ast` can read it."
    return "\n".join("" if MAGIC.match(line) else line for line in source.split("\n"))


def _statement(indent: str, module: str, aliases: list[ast.alias]) -> str:
    names = ", ".join(a.name + (f" as {a.asname}" if a.asname else "") for a in aliases)
    return f"{indent}from {module} import {names}"


def rewrite(source: str, old: str, new: str, moved: set[str]) -> str:
    "`source` with each `from old import …` that names a moved name split into the old and the new module."
    try:
        tree = ast.parse(_parseable(source))
    except SyntaxError:
        return source
    lines = source.split("\n")
    hits = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.ImportFrom) and n.module == old and n.level == 0 and {a.name for a in n.names} & moved
    ]
    for n in sorted(hits, key=lambda n: -n.lineno):  # bottom first: earlier line numbers stay valid
        first = lines[n.lineno - 1]
        indent = first[: len(first) - len(first.lstrip())]
        tail = lines[n.end_lineno - 1][n.end_col_offset :]  # a trailing comment
        stay = [a for a in n.names if a.name not in moved]
        go = [a for a in n.names if a.name in moved]
        out = ([_statement(indent, old, stay)] if stay else []) + [_statement(indent, new, go)]
        out[-1] += tail
        lines[n.lineno - 1 : n.end_lineno] = out
    return "\n".join(lines)


def attribute_uses(source: str, old: str, moved: set[str]) -> list[str]:
    "Uses such as `ris_nb.core.get_preset` that an import rewrite does not reach."
    return [m.group(0) for m in re.finditer(re.escape(old) + r"\.(\w+)", source) if m.group(1) in moved]


def files() -> list[Path]:
    return sorted((ROOT / "nbs").glob("*.ipynb")) + [
        p for d in ("tests", "tools", "bench") for p in sorted((ROOT / d).rglob("*.py")) if p.name != "move_names.py"
    ]


def process(path: Path, old: str, new: str, moved: set[str], write: bool) -> tuple[int, list[str]]:
    "Rewrite one file; returns the number of changed cells (or 1 for a changed .py file) and the attribute uses."
    if path.suffix == ".py":
        text = path.read_text()
        out = rewrite(text, old, new, moved)
        if write and out != text:
            path.write_text(out)
        return int(out != text), attribute_uses(text, old, moved)
    nb = json.loads(path.read_text())
    changed, uses = 0, []
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        text = "".join(cell["source"])
        out = rewrite(text, old, new, moved)
        uses += attribute_uses(text, old, moved)
        if out != text:
            changed += 1
            cell["source"] = out.splitlines(keepends=True)
    if write and changed:
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return changed, uses


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("old", help="the module the names left, e.g. ris_nb.core")
    p.add_argument("new", help="the module that holds them now, e.g. ris_nb.presets")
    p.add_argument("names", nargs="+", help="the moved names")
    p.add_argument("--check", action="store_true", help="only list what would change")
    args = p.parse_args(argv)
    total = 0
    for path in files():
        n, uses = process(path, args.old, args.new, set(args.names), write=not args.check)
        total += n
        if n or uses:
            note = f"; by attribute, not rewritten: {uses}" if uses else ""
            print(f"{path.relative_to(ROOT)}: {n} rewritten{note}")
    print(f"{total} cells/files {'to rewrite' if args.check else 'rewritten'}")
    return 1 if args.check and total else 0


if __name__ == "__main__":
    sys.exit(main())
