"""Format the notebooks' code cells and Python files (ruff, line length 120), then wrap what ruff leaves too long.

    python tools/format_notebooks.py [NOTEBOOK_OR_PY_OR_FOLDER ...]      (default: nbs/; `make format`)
    python tools/format_notebooks.py --library ris_nb                    (after nbdev_export; `make export`)

Steps: ruff's mechanical fixes (`FIXES`; in Python files also unused imports), long trailing comments moved above their
line, `ruff format`, then rounds of wrapping what ruff leaves over the limit, each followed by `ruff format`, until
nothing changes:
- a comment is split at word boundaries into comment lines of the same indent; nbdev directives (`#|`) and pragmas
  (`# noqa`, `# type:`, `# fmt:`) are never touched;
- a one-line docstring becomes a triple-quoted one wrapped at word boundaries, and a long line of a multi-line docstring
  is wrapped, its overflow joining the next line of its paragraph (the text is unchanged but for line breaks);
- a string literal is split at spaces into an implicit concatenation, in parentheses unless it already stands alone in
  brackets; never inside an f-string's `{...}` or a `\\N{...}` escape.
Cells with a cell magic (`%%`) are left alone; line magics (`%time`, `!ls`) are kept as they are. The notebooks keep
their cell ids, outputs and metadata and are written as `nbdev_clean` writes them. A second run changes nothing. What
cannot be wrapped automatically (long code, URLs, triple-quoted strings that are not docstrings) is listed for a hand
edit, and the exit status is 0 either way.

`--library DIR` finishes `nbdev_export`: it makes relative the `from ris_nb… import` that nbdev left absolute (nbdev
rewrites an import's first line only, so a multi-line import whose last line is short keeps its absolute name), wraps
the one-line module docstring nbdev writes from a notebook's `>` summary, and runs `ruff format` over DIR.
"""

from __future__ import annotations

import argparse
import ast
import io
import json
import re
import subprocess
import sys
import tokenize
from dataclasses import dataclass
from pathlib import Path

MAX = 120
ROOT = Path(__file__).resolve().parents[1]
# fixes that need no judgement: one import per line, a lambda bound to a name becomes a def, f-strings without
# placeholders lose the f, trailing whitespace and final newlines
FIXES = "E401,E731,F541,W291,W292,W293"
SCRIPT_FIXES = FIXES + ",F401"  # an unused import in a notebook's exported cell may be a re-export: listed, not removed
MAX_ROUNDS = 12  # a paragraph of a docstring reflows one line per round
PRAGMA = re.compile(r"#\s*(noqa|type:|fmt:|pragma|pyright:|mypy:|isort:)", re.IGNORECASE)
DIRECTIVE = re.compile(r"^\s*#\s*\|")
MAGIC = re.compile(r"^\s*[%!]")
LIST_ITEM = re.compile(r"^([-*+]|\d+[.)])\s")
PLACEHOLDER = "\u241fmagic"  # stands for a line magic while the cell is read as Python


@dataclass
class Span:
    "One token (a string or a comment) of a cell: where it starts and ends, its text, the bracket depth it sits in."

    row: int  # 1-based line of the start
    col: int
    end_row: int
    end_col: int
    text: str
    depth: int
    kind: str  # "string" | "comment"
    needs_parens: bool = False  # a string split here needs parentheses to be read as one (and to be laid out well)


def ruff(*args: str) -> None:
    "Run ruff (the project's pinned one, next to this Python) with the project's settings."
    cmd = [sys.executable, "-m", "ruff", args[0], "--config", str(ROOT / "pyproject.toml"), *args[1:]]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if res.returncode > 1:  # 1 = violations left, which the report lists
        raise RuntimeError(f"ruff {' '.join(args)} failed ({res.returncode}):\n{res.stderr or res.stdout}")


def sources(paths: list[str]) -> list[Path]:
    "The notebooks and Python files named by `paths` (files or folders, searched recursively), skipping checkpoints."
    found = []
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such notebook, Python file or folder")
        found += [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.suffix in (".ipynb", ".py"))
    return [p for p in found if ".ipynb_checkpoints" not in p.parts and "__pycache__" not in p.parts]


def get_source(cell: dict) -> str:
    "A cell's source as one string (notebooks store it as a list of lines or as one string)."
    src = cell["source"]
    return src if isinstance(src, str) else "".join(src)


def set_source(cell: dict, src: str) -> None:
    "Store `src` as a list of lines, as ruff and Jupyter write it."
    cell["source"] = src.splitlines(keepends=True)


def dump(nb: dict) -> str:
    "A notebook's JSON exactly as `nbdev_clean` writes it."
    return json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + "\n"


def as_python(src: str) -> tuple[str, dict[str, str]] | None:
    "The cell's source with each line magic replaced by a placeholder comment, and the magics by placeholder."
    if src.lstrip().startswith("%%"):
        return None
    magics, lines = {}, src.split("\n")
    for i, line in enumerate(lines):
        if MAGIC.match(line):
            lines[i] = f"#{PLACEHOLDER}{i}"
            magics[lines[i]] = line
    return "\n".join(lines), magics


def bracket_depths(toks: list[tokenize.TokenInfo]) -> list[int]:
    "The number of open brackets before each token."
    depths, depth = [], 0
    for t in toks:
        depths.append(depth)
        if t.type == tokenize.OP and t.string in "([{":
            depth += 1
        elif t.type == tokenize.OP and t.string in ")]}":
            depth -= 1
    return depths


def joined_fstrings(code: str) -> list[tokenize.TokenInfo]:
    "The tokens of `code`, each f-string one STRING token (Python ≥ 3.12 splits them into FSTRING_* tokens)."
    start, end = getattr(tokenize, "FSTRING_START", -1), getattr(tokenize, "FSTRING_END", -1)
    out, open_at, lines = [], [], code.split("\n")
    for t in tokenize.generate_tokens(io.StringIO(code).readline):
        if t.type == start:
            open_at.append(t)
        elif t.type == end:
            first = open_at.pop()
            if not open_at:
                text = text_between(lines, first.start, t.end)
                out.append(tokenize.TokenInfo(tokenize.STRING, text, first.start, t.end, first.line))
        elif not open_at:
            out.append(t)
    return out


def spans(code: str) -> list[Span]:
    "The strings and comments of `code`, each with its bracket depth and whether a split needs parentheses."
    toks = [t for t in joined_fstrings(code) if t.type not in (tokenize.NL, tokenize.INDENT, tokenize.DEDENT)]
    out = [
        Span(*t.start, *t.end, t.string, d, "comment")
        for t, d in zip(toks, bracket_depths(toks))
        if t.type == tokenize.COMMENT
    ]
    code_toks = [t for t in toks if t.type != tokenize.COMMENT]
    for i, (t, depth) in enumerate(zip(code_toks, bracket_depths(code_toks))):
        if t.type != tokenize.STRING:
            continue
        before, after = code_toks[i - 1] if i else None, code_toks[i + 1] if i + 1 < len(code_toks) else None
        alone = before is not None and after is not None and before.string in "([" and after.string in ")]"
        concat = any(n is not None and n.type == tokenize.STRING for n in (before, after))
        out.append(Span(*t.start, *t.end, t.string, depth, "string", needs_parens=depth == 0 or not (alone or concat)))
    return out


def text_between(lines: list[str], start: tuple[int, int], end: tuple[int, int]) -> str:
    "The source text from `start` to `end` (tokenize's (row, col) positions)."
    if start[0] == end[0]:
        return lines[start[0] - 1][start[1] : end[1]]
    mid = lines[start[0] : end[0] - 1]
    return "\n".join([lines[start[0] - 1][start[1] :], *mid, lines[end[0] - 1][: end[1]]])


def docstring_starts(code: str) -> set[tuple[int, int]]:
    "Where the docstrings of `code` (of the module or a cell, its functions and classes) start."
    starts = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(getattr(first.value, "value", None), str):
                starts.add((first.lineno, first.col_offset))
    return starts


def greedy_lines(words: list[str], first: int, rest: int) -> list[str]:
    "Join `words` (each ending in its separator) into lines of at most `first`, then `rest` characters."
    lines, cur = [], ""
    for w in words:
        if cur and len(cur) + len(w.rstrip()) > (rest if lines else first):
            lines.append(cur)
            cur = ""
        cur += w
    return lines + [cur] if cur else lines


def wrap_comment(comment: str, indent: str) -> list[str] | None:
    "A long comment as several lines of `indent` + '# ' + words, or None when a word alone is over the limit."
    body = comment.lstrip("#").strip()
    words = [w + " " for w in body.split()]
    width = MAX - len(indent) - 2
    if any(len(w) - 1 > width for w in words):
        return None
    return [f"{indent}# {line.rstrip()}" for line in greedy_lines(words, width, width)]


def split_points(body: str, is_f: bool, is_raw: bool) -> list[int]:
    "Indices just after a space of a string literal's body where it may be cut: outside `{...}` and escapes."
    points, depth, i = [], 0, 0
    while i < len(body):
        c = body[i]
        if c == "\\" and not is_raw:
            if body[i + 1 : i + 3] == "N{":  # a named escape may contain spaces: skip it whole
                i = body.index("}", i) + 1 if "}" in body[i:] else len(body)
                continue
            i += 2
            continue
        if is_f and c in "{}" and body[i + 1 : i + 2] == c:  # an escaped brace
            i += 2
            continue
        depth += (c == "{") - (c == "}") if is_f else 0
        if c == " " and depth == 0 and 0 < i + 1 < len(body):
            points.append(i + 1)
        i += 1
    return points


def string_parts(text: str) -> tuple[str, str, str] | None:
    "A one-line literal's (prefix, quote, body), or None for a triple-quoted one."
    m = re.match(r"^([a-zA-Z]*)(['\"])(.*)\2$", text, re.DOTALL)
    if not m or text[len(m.group(1)) :].startswith(m.group(2) * 3):
        return None
    return m.group(1), m.group(2), m.group(3)


def split_string(text: str, width: int) -> list[str] | None:
    "A long one-line string literal as literals of at most `width` characters where possible, or None if uncuttable."
    parts = string_parts(text)
    if parts is None:
        return None
    prefix, quote, body = parts
    is_f, is_raw = "f" in prefix.lower(), "r" in prefix.lower()
    points = split_points(body, is_f, is_raw)
    if not points:
        return None
    budget, pieces, start = width - len(prefix) - 2, [], 0
    while len(body) - start > budget:
        fits = [p for p in points if start < p <= start + budget]
        later = [p for p in points if p > start]
        if not fits and not later:
            break
        cut = fits[-1] if fits else later[0]
        pieces.append(body[start:cut])
        start = cut
    pieces.append(body[start:])
    if len(pieces) < 2:
        return None
    return [piece_prefix(prefix, p) + quote + p + quote for p in pieces]


def piece_prefix(prefix: str, piece: str) -> str:
    "An f-string piece without placeholders loses its `f` (ruff's F541)."
    return prefix.replace("f", "").replace("F", "") if "{" not in piece and "}" not in piece else prefix


def wrap_docstring(text: str, col: int) -> str | None:
    "A long one-line docstring as a triple-quoted one wrapped at spaces, or None where that would change its text."
    parts = string_parts(text)
    if parts is None:
        parts = re.match(r'^([rR]?)("""|\'\'\')(.*)\2$', text, re.DOTALL)
        parts = parts.groups() if parts and "\n" not in text else None
    if parts is None or parts[0] not in ("", "r", "R"):
        return None
    prefix, quote, body = parts
    q = '"""' if "'" in quote else quote if len(quote) == 3 else '"""'
    if q in body or body.endswith(q[0]) or body.startswith(" "):
        return None
    words = [w + " " for w in body.split(" ")]
    lines = greedy_lines(words, MAX - col - len(prefix) - 6, MAX - col - 3)  # the first line may also be the last
    if len(lines) < 2:
        return None
    return prefix + q + ("\n" + " " * col).join(line.rstrip(" ") for line in lines) + q


def wrap_docstring_line(lines: list[str], row: int, doc: Span) -> bool:
    "Wrap line `row` of the multi-line docstring `doc` at spaces; the overflow joins the next line of its paragraph."
    line = lines[row - 1]
    indent = doc.col if row == doc.row else len(line) - len(line.lstrip(" "))
    text = line[indent:]
    hang = indent + (2 if LIST_ITEM.match(text) else 0)  # a list item's continuation lines hang under its text
    words = [w + " " for w in text.split(" ")]
    new = [w.rstrip(" ") for w in greedy_lines(words, MAX - indent, MAX - hang)]
    if len(new) < 2:
        return False
    following = lines[row] if row < doc.end_row else ""
    if len(new) == 2 and continues_paragraph(following, hang):
        lines[row - 1 : row + 1] = [line[:indent] + new[0], " " * hang + new[1] + " " + following.lstrip(" ")]
    else:
        lines[row - 1 : row] = [line[:indent] + new[0]] + [" " * hang + w for w in new[1:]]
    return True


def continues_paragraph(line: str, indent: int) -> bool:
    "Whether a docstring `line` carries on the paragraph above it whose lines start at `indent`."
    text = line[indent:]
    if not text.strip() or line[:indent].strip() or text[0].isspace() or text.startswith(('"""', "'''")):
        return False
    return not LIST_ITEM.match(text)


def long_rows(code: str) -> list[int]:
    "1-based numbers of the lines of `code` over the limit."
    return [i for i, line in enumerate(code.split("\n"), 1) if len(line) > MAX]


def first_token_starts_here(code: str, row: int, toks: list[Span]) -> bool:
    "Whether line `row` does not continue a multi-line string (so a line may be inserted above it)."
    return not any(s.kind == "string" and s.row < row <= s.end_row for s in toks)


def fix_comment(lines: list[str], s: Span, code: str, toks: list[Span]) -> bool:
    "Wrap the long comment `s`, moving it above its line when it trails code. True if `lines` changed."
    if PRAGMA.search(s.text) or DIRECTIVE.match(s.text) or s.text.startswith(("#!", f"#{PLACEHOLDER}")):
        return False
    line = lines[s.row - 1]
    indent = line[: len(line) - len(line.lstrip())]
    trailing = line[: s.col].strip() != ""
    if trailing and not first_token_starts_here(code, s.row, toks):
        return False
    new = wrap_comment(s.text, indent)
    if new is None or (not trailing and len(new) < 2):
        return False
    lines[s.row - 1 : s.row] = new + [line[: s.col].rstrip()] if trailing else new
    return True


def fix_string(lines: list[str], s: Span, is_doc: bool) -> bool:
    "Wrap the long string `s`: a docstring stays one; another is split, and parenthesized so that ruff can lay it out."
    line = lines[s.row - 1]
    indent = len(line) - len(line.lstrip())
    if is_doc:
        new = wrap_docstring(s.text, s.col)
    else:
        pieces = split_string(s.text, MAX - indent - 8)
        new = s.text if pieces is None else ("\n" + " " * (indent + 4)).join(pieces)
        new = f"({new})" if s.needs_parens else None if pieces is None else new
    if new is None:
        return False
    lines[s.row - 1] = line[: s.col] + new + line[s.end_col :]
    return True


def fix_row(lines: list[str], row: int, code: str, toks: list[Span], docs: set, strings: bool) -> bool:
    "Shorten line `row` by one edit: its comment, else (if `strings`) its longest string. True if something changed."
    here = [s for s in toks if s.row == row]
    if any(fix_comment(lines, s, code, toks) for s in here if s.kind == "comment"):
        return True
    if not strings:
        return False
    doc = next((s for s in toks if (s.row, s.col) in docs and s.row <= row <= s.end_row and s.row < s.end_row), None)
    if doc is not None:
        return wrap_docstring_line(lines, row, doc)
    strings = sorted((s for s in here if s.kind == "string" and s.end_row == row), key=lambda s: -len(s.text))
    return any(fix_string(lines, s, (s.row, s.col) in docs) for s in strings[:1])


def wrap_code(code: str, strings: bool = True) -> str:
    "One round of wrapping over the long lines of `code` (plain Python), bottom to top so that rows stay valid."
    toks, docs = spans(code), docstring_starts(code)
    lines = code.split("\n")
    for row in reversed(long_rows(code)):
        fix_row(lines, row, code, toks, docs, strings)
    return "\n".join(lines)


def wrap_cell(src: str, strings: bool = True) -> str:
    "One round of wrapping over a code cell, its line magics kept; unparsable cells come back unchanged."
    parsed = as_python(src)
    if parsed is None or not long_rows(parsed[0]):
        return src
    code, magics = parsed
    try:
        new = wrap_code(code, strings)
    except (SyntaxError, tokenize.TokenError, ValueError):
        return src
    return src if new == code else "\n".join(magics.get(line, line) for line in new.split("\n"))


def wrap_notebook(path: Path, strings: bool = True) -> bool:
    "One round of wrapping over every code cell of the notebook at `path`; True if it was rewritten."
    nb = json.loads(path.read_text(encoding="utf-8"))
    changed = False
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            src = get_source(cell)
            new = wrap_cell(src, strings)
            if new != src:
                set_source(cell, new)
                changed = True
    if changed:
        path.write_text(dump(nb), encoding="utf-8")
    return changed


def wrap_script(path: Path, strings: bool = True) -> bool:
    "One round of wrapping over the Python file at `path`; True if it was rewritten."
    code = path.read_text(encoding="utf-8")
    try:
        new = wrap_code(code, strings)
    except (SyntaxError, tokenize.TokenError, ValueError) as e:
        raise ValueError(f"{path}: cannot read it as Python ({e})") from e
    if new != code:
        path.write_text(new, encoding="utf-8")
    return new != code


def wrap_file(path: Path, strings: bool = True) -> bool:
    "One round of wrapping over a notebook's code cells or a Python file; True if it was rewritten."
    return wrap_notebook(path, strings) if path.suffix == ".ipynb" else wrap_script(path, strings)


def leftovers(path: Path) -> list[str]:
    "The code lines of `path` still over the limit, each with its file (and cell) and line."
    if path.suffix == ".py":
        lines = path.read_text(encoding="utf-8").split("\n")
        return [f"{path}:{n}: {line.strip()[:90]}" for n, line in enumerate(lines, 1) if too_long(line)]
    out, nb = [], json.loads(path.read_text(encoding="utf-8"))
    for i, cell in enumerate(nb["cells"]):
        src = get_source(cell)
        where = f"{path}: cell {i} ({cell.get('id', '?')})"
        if cell["cell_type"] == "code":
            tag = " [exported]" if re.match(r"\s*#\|\s*export", src) else ""
            out += [
                f"{where}{tag} line {n}: {line.strip()[:90]}"
                for n, line in enumerate(src.split("\n"), 1)
                if too_long(line)
            ]
    return out


def too_long(line: str) -> bool:
    "Whether ruff's E501 would flag `line`: over the limit, not counting a trailing pragma comment."
    m = re.search(r"\s+#\s*(noqa|type:|pyright:|mypy:)", line)
    return len(line if m is None else line[: m.start()]) > MAX


def format_sources(paths: list[Path]) -> list[str]:
    "Fix, format and wrap the notebooks and Python files at `paths` until nothing changes; what is left over the limit."
    names = [str(p) for p in paths]
    scripts, nbs = [n for n in names if n.endswith(".py")], [n for n in names if not n.endswith(".py")]
    for fixes, group in ((FIXES, nbs), (SCRIPT_FIXES, scripts)):
        if group:
            ruff("check", "--fix", "--unsafe-fixes", "--select", fixes, "--exit-zero", "--quiet", *group)
    for p in paths:  # trailing comments first: ruff would otherwise break the code around them
        wrap_file(p, strings=False)
    ruff("format", "--quiet", *names)
    for _ in range(MAX_ROUNDS):
        changed = [str(p) for p in paths if wrap_file(p)]
        if not changed:
            break
        ruff("format", "--quiet", *changed)
    return [line for p in paths for line in leftovers(p)]


def relative_imports(text: str, mod_dir: str, package: str) -> str:
    "Make a module's top-level `from <package>… import` relative, as nbdev_export does (it misses multi-line ones)."
    from nbdev.maker import relative_import

    lines = text.split("\n")
    for node in ast.parse(text).body:
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == package:
            rel = relative_import(node.module, mod_dir)
            i = node.lineno - 1
            lines[i] = re.sub(rf"^(\s*from\s+){re.escape(node.module)}(?=\s)", lambda m: m.group(1) + rel, lines[i])
    return "\n".join(lines)


def format_library(lib: Path) -> None:
    "Finish `nbdev_export`: relative imports where it missed them, one-line module docstrings wrapped, `ruff format`."
    for f in sorted(lib.rglob("*.py")):
        text = f.read_text(encoding="utf-8")
        if "# AUTOGENERATED! DO NOT EDIT!" not in text[:2000]:
            continue  # hand-written (the sub-packages' __init__) or nbdev's index
        first, nl, rest = text.partition("\n")
        new = wrap_docstring(first, 0) if len(first) > MAX and first.startswith('"""') else None
        mod_dir = str(f.parent.relative_to(lib.parent))
        new = relative_imports((first if new is None else new) + nl + rest, mod_dir, lib.name)
        if new != text:
            f.write_text(new, encoding="utf-8")
    ruff("format", "--quiet", str(lib))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "paths", nargs="*", default=[str(ROOT / "nbs")], help="notebooks, Python files or folders (default: nbs/)"
    )
    ap.add_argument("--library", metavar="DIR", help="instead, finish `nbdev_export`'s modules in DIR (`make export`)")
    args = ap.parse_args(argv)
    if args.library:
        format_library(Path(args.library))
        return 0
    paths = sources(args.paths)
    left = format_sources(paths)
    print(
        f"formatted {len(paths)} notebooks and Python files; {len(left)} lines over {MAX} characters need a hand edit"
    )
    print("\n".join(left))
    return 0


if __name__ == "__main__":
    sys.exit(main())
