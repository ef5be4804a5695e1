"""Build the course website: Jupyter Book 1 over the notebooks' saved outputs, offline. Two editions:

- `student` (`make site`, into `_site/`): the student copies exactly as `ris_nb course` writes them (solutions →
  stubs, hidden tests, instructor's answers and exercise outputs out), the course notebooks without exercises and the
  appendix as they are (refused if one holds a solution marker). Safe to publish to students.
- `teacher` (`make site-teacher`, into `_site_teacher/`): the notebooks of nbs/ as they are, solutions included, with
  a banner on every page saying so.
- `self-study` (`make site-self-study`, into `_site_self_study/`): the student copies of `ris_nb course --self-check`,
  whose Think checks say right or wrong by a salted digest of each key (trying the letters finds the key): for
  practice, never for graded work; a banner on every page and a label atop every notebook say so.

Neither the student copies nor the student edition carry a digest of a key, or anything else a key can be recovered
from.

The table of contents is the README's reading order (course first, the appendix as its own part), each entry titled
with its notebook number ("01 · …"). nbdev directive lines are stripped; `#| hide` cells stay in the notebook a page
offers for download (tagged `remove-cell`: not on the page), so a download runs top to bottom. Cells that only call
`show_doc` show their output (signature and docstring) without the call. A notebook cited by number in the prose
("appendix 94", "`06_lavt`", "(12a)") links to its page. MathJax is served from one file (`mathjax/tex-chtml.js`
and the fonts it loads, outside `_static`, which Jupyter Book would add to every page whole), so a page opened without
network still renders its math. Pages stay light: the theme's scripts a page does not use are dropped, figures over
40 kB are served as WebP. Nothing is executed.

    python tools/build_site.py [--edition student|teacher|self-study] [--nbs nbs] [--out DIR] [--work DIR] [--strict]
"""

from __future__ import annotations

import argparse
import ast
import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"
EDITIONS = ("student", "teacher", "self-study")
BANNER = "Teacher's edition — contains solutions; do not publish to students"
SELF_STUDY_BANNER = "Self-study edition — its Think checks give the answers away; not for graded work"
BANNERS = {"teacher": BANNER, "self-study": SELF_STUDY_BANNER}
NAMES = {"student": "student edition", "teacher": "teacher's edition", "self-study": "self-study edition"}
NOTEBOOK_ROW = re.compile(r"^\| `(\w+)` \|")
DIRECTIVE = re.compile(r"^\s*#\|\s*(.*)$")
SECRET_MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS", "Instructor's answer")
# Lines of up to 120 characters fit at 1280 px: code a little smaller, the page's own table of contents (right-hand
# sidebar) folded into its header button below 1400 px, the article as wide as what is left.
SITE_CSS = """/* code lines of up to 120 characters readable at 1280 px without scrolling sideways */
.bd-page-width { max-width: none !important; }
.bd-main .bd-content .bd-article-container { max-width: none !important; }
div.cell_input pre, div.cell_output pre, .highlight pre { font-size: 0.72rem !important; }
@media (max-width: 1399.98px) {
  .bd-sidebar-secondary { display: none !important; }
  .bd-main .bd-content { justify-content: flex-start; }
}
"""
# Theme scripts a page does not need: the Font Awesome SVG library (1.5 MB; the theme's CSS already draws the icons
# from its web font) and, but on search.html, the search index with its tools (the search box submits to search.html).
FONTAWESOME_JS = re.compile(r'\s*<script[^>]*src="_static/scripts/fontawesome\.js[^"]*"[^>]*></script>')
SEARCH_JS = re.compile(
    r'\s*<script src="(?:_static/searchtools\.js|_static/language_data\.js|searchindex\.js)"></script>'
)


def reading_order(readme: Path = ROOT / "README.md") -> list[str]:
    "Notebook names in the README's 'Reading order': the table's rows, then the appendix paragraph's, in order."
    text = readme.read_text()
    start = text.index("## Reading order")
    section = text[start:].split("\n## ", 1)[0]
    names = [m.group(1) for line in section.splitlines() if (m := NOTEBOOK_ROW.match(line))]
    # the appendix is listed in a paragraph under the table: `90_config_validation` (`ris_nb.validate`), ...
    names += [n for n in re.findall(r"`(9\d[a-z]?_\w+)`", section) if n not in names]
    if not names:
        raise ValueError(f"{readme}: no notebook rows found under '## Reading order'")
    return names


def directives(source: str) -> list[str]:
    "The nbdev/quarto directives at the top of a code cell (`#| hide` → 'hide')."
    return [m.group(1).strip() for line in source.splitlines() if (m := DIRECTIVE.match(line))]


def hidden(flags: list[str]) -> bool:
    "nbdev leaves the cell out of the docs (`#| hide`, `#| include: false`)."
    return any(f.startswith("hide") or f == "include: false" for f in flags)


def without_directives(source: str) -> str:
    return "\n".join(line for line in source.splitlines() if not DIRECTIVE.match(line)).strip("\n")


def clean_markdown_output(text: str) -> str:
    """show_doc's markdown output as MyST reads it: without the bare `---` line (a docutils transition that breaks the
    build) and the `[source](…){target=…}` line (Quarto attributes MyST prints as text); caret math typeset (a
    results table names `A^slot`)."""
    drop = re.compile(r"^\s*(---|\[source\]\([^)]*\)\{[^}]*\})\s*$")
    return caret_math("\n".join(line for line in text.splitlines() if not drop.match(line)).strip("\n"))


def only_show_doc(source: str) -> bool:
    "A cell of `show_doc(…)` calls, after the imports they need if any."

    def is_show_doc(s: ast.stmt) -> bool:
        call = isinstance(s, ast.Expr) and isinstance(s.value, ast.Call)
        return call and getattr(s.value.func, "id", "") == "show_doc"

    try:
        body = ast.parse(source).body
    except SyntaxError:
        return False
    calls = [s for s in body if not isinstance(s, (ast.Import, ast.ImportFrom))]
    return bool(calls) and all(is_show_doc(s) for s in calls)


SHOW_DOC_LINE = re.compile(r"^(display\()?show_doc\([^()\n]*\)\)?\s*$\n?", re.M)


def without_show_doc_lines(source: str) -> str:
    "`source` without its top-level `show_doc(x)` / `display(show_doc(x))` lines (the page shows their output)."
    if only_show_doc(source):
        return source  # the whole input is hidden instead
    return SHOW_DOC_LINE.sub("", source)


def web_cell(cell: dict) -> dict | None:
    "One cell as the website shows it (tags say what the page hides), or None when nothing of it is left."
    if cell["cell_type"] != "code":
        return cell
    src = "".join(cell["source"])
    flags = directives(src)
    cell = {**cell, "source": without_show_doc_lines(without_directives(src))}
    if not cell["source"].strip():  # `#| default_exp …` alone
        return None
    tags = list(cell.get("metadata", {}).get("tags", []))
    if hidden(flags):
        tags.append("remove-cell")  # run by a download, not shown
    if "echo: false" in flags or only_show_doc(cell["source"]):
        tags.append("remove-input")
    if "output: false" in flags:
        tags.append("remove-output")
    cell["metadata"] = {**cell.get("metadata", {}), "tags": tags}
    for out in cell.get("outputs", []):
        md = out.get("data", {}).get("text/markdown")
        if md is not None:
            out["data"]["text/markdown"] = clean_markdown_output(md if isinstance(md, str) else "".join(md))
    return cell


# --- prose: a notebook cited by number becomes a link to its page; caret math in a markdown output is typeset -------
# Left as they are: fenced and inline code, math, existing links and images, HTML, headings.
PROTECTED = re.compile(
    r"```.*?```|`[^`\n]+`|\$\$.*?\$\$|\$[^$\n]+\$|!?\[[^\]]*\]\([^)]*\)|<[^>\n]+>|^#+ [^\n]*", re.S | re.M
)
NUMBER = r"\d{2}[a-z]?"
CITATION = re.compile(
    rf"(?<![\w/.])(?P<stem>{NUMBER}_[a-z]\w*)(?!\w|\.\w)"  # 06_lavt, not 06_lavt.ipynb
    rf"|(?P<phrase>\b(?:[Nn]otebooks?|[Aa]ppendix) (?P<pnum>{NUMBER}))\b"  # notebook 07, appendix 94
    rf"|\((?P<paren>{NUMBER})\)"  # (12a)
)
CODE_STEM = re.compile(rf"`({NUMBER}_[a-z]\w*)`")  # `06_lavt`, a whole code span
CARET = re.compile(r"(?<![\w$\\{])([A-Za-z])\^(\w+)")  # A^slot, A^fuse_k


def outside_protected(text: str, plain, protected=lambda s: s) -> str:
    "`text` with `plain` applied to each stretch outside `PROTECTED` regions and `protected` to each such region."
    out, last = [], 0
    for p in PROTECTED.finditer(text):
        out += [plain(text[last : p.start()]), protected(p.group(0))]
        last = p.end()
    return "".join(out + [plain(text[last:])])


def link_citations(text: str, stems: set[str], own: str) -> str:
    "`text` (markdown) with each citation of another notebook in `stems` turned into a link to it."
    by_number = {s.split("_", 1)[0]: s for s in stems}

    def link(m: re.Match) -> str:
        stem = m["stem"] or by_number.get(m["pnum"] or m["paren"] or "")
        if stem not in stems or stem == own:
            return m.group(0)
        if m["paren"]:
            return f"([{m['paren']}]({stem}.ipynb))"
        return f"[{m['stem'] or m['phrase']}]({stem}.ipynb)"

    def code(span: str) -> str:
        m = CODE_STEM.fullmatch(span)
        return f"[{span}]({m.group(1)}.ipynb)" if m and m.group(1) in stems and m.group(1) != own else span

    return outside_protected(text, lambda t: CITATION.sub(link, t), code)


def caret_math(text: str) -> str:
    "Markdown with `A^slot` written as text typeset as math: `$A^{slot}$`."
    return outside_protected(text, lambda t: CARET.sub(r"$\1^{\2}$", t))


WIDGET = "application/vnd.jupyter.widget-view+json"


def web_notebook(nb: dict, stems: set[str], own: str) -> dict:
    "A notebook as a page shows it and its download holds it."
    cells = [c for c in map(web_cell, nb["cells"]) if c is not None]
    for c in cells:
        if c["cell_type"] == "markdown":
            c["source"] = link_citations("".join(c["source"]), stems, own)
        for out in c.get("outputs", []):  # a widget shows its text: its view needs require.js from a CDN
            data = out.get("data", {})
            if WIDGET in data and len(data) > 1:
                out["data"] = {k: v for k, v in data.items() if k != WIDGET}
    meta = {k: v for k, v in nb.get("metadata", {}).items() if k != "widgets"}
    return {**nb, "metadata": meta, "cells": cells}


# --- the two editions ------------------------------------------------------------------------------------------------
def read_notebook(path: Path) -> dict:
    from ris_nb.notebook_cells import read_notebook

    return read_notebook(path)


def refuse_secrets(nb: dict, path: Path) -> None:
    "Refuse a notebook read as it is into the student edition when it holds a solution, hidden test or answer."
    for i, c in enumerate(nb["cells"]):
        found = [m for m in SECRET_MARKERS if m in "".join(c["source"])]
        if found:
            raise ValueError(
                f"{path}, cell {i} (id {c.get('id', '?')}) holds {found[0]!r}, but the notebook has no "
                f"'## Exercises' section, so the student edition would show it as it is; expected no such marker "
                "outside a notebook with exercises"
            )


def edition_notebooks(names: list[str], edition: str, nbs: Path = NBS) -> dict[str, dict]:
    "name → the notebook the `edition` publishes: the student copy, or the notebook as it is."
    for n in names:
        if not (nbs / f"{n}.ipynb").exists():
            raise FileNotFoundError(f"README reading order names {n}, but {nbs / n}.ipynb does not exist")
    if edition == "teacher":
        return {n: read_notebook(nbs / f"{n}.ipynb") for n in names}
    if edition not in EDITIONS:
        raise ValueError(f"edition={edition!r}: expected one of {EDITIONS}")
    from ris_nb.course_files import course_copies
    from ris_nb.exercise_marks import refuse_slips
    from ris_nb.exercise_marks import self_study_label

    students, reading = course_copies(nbs, "auto", edition == "self-study")  # `ris_nb course [--self-check]`
    out = {}
    for n in names:
        nb = students.get(f"{n}.ipynb") or reading.get(f"{n}.ipynb")
        if nb is None:  # the appendix, read as it is
            nb = read_notebook(nbs / f"{n}.ipynb")
            refuse_secrets(nb, nbs / f"{n}.ipynb")
            nb = self_study_label(nb) if edition == "self-study" else nb  # labelled like every notebook it ships
        refuse_slips(nb, f"{nbs / n}.ipynb as the {edition} edition publishes it", published=True)  # every page
        out[n] = nb
    return out


def mathjax_dir() -> Path:
    "The MathJax 3 bundle shipped inside the sphinx-mathjax-offline package."
    files = importlib.metadata.files("sphinx-mathjax-offline") or []
    js = [f for f in files if str(f).endswith("static/mathjax/tex-chtml.js")]
    if not js:
        raise FileNotFoundError("sphinx-mathjax-offline: static/mathjax/tex-chtml.js not found (pip install it)")
    return Path(js[0].locate()).parent


def copy_mathjax(dst: Path) -> None:
    "The one script a page with math loads (TeX input, CommonHTML output) and the web fonts it fetches."
    src = mathjax_dir()
    dst.mkdir(parents=True)
    shutil.copy2(src / "tex-chtml.js", dst / "tex-chtml.js")
    fonts = Path("output/chtml/fonts/woff-v2")
    shutil.copytree(src / fonts, dst / fonts)


def is_appendix(name: str) -> bool:
    return name[:2].isdigit() and int(name[:2]) >= 90


def title(nb: dict, name: str) -> str:
    "The navigation title: the notebook's number and its first heading (`01 · Metrics …`)."
    for c in nb["cells"]:
        m = re.match(r"#\s+(.+)", "".join(c["source"])) if c["cell_type"] == "markdown" else None
        if m:
            return f"{name.split('_', 1)[0]} · {m.group(1).strip()}"
    return name


def toc(names: list[str], titles: dict[str, str] | None = None) -> str:
    titles = titles or {}
    appendix = [n for n in names if is_appendix(n)]
    course = [n for n in names if n != "index" and not is_appendix(n)]

    def entry(n: str) -> list[str]:
        return [f"  - file: {n}"] + ([f"    title: {json.dumps(titles[n], ensure_ascii=False)}"] if n in titles else [])

    lines = ["format: jb-book", "root: index", "parts:", "- caption: The course", "  chapters:"]
    lines += [line for n in course for line in entry(n)]
    lines += ["- caption: Appendix", "  chapters:"] + [line for n in appendix for line in entry(n)]
    return "\n".join(lines) + "\n"


def config(edition: str) -> str:
    name = NAMES[edition]
    banner = f"  announcement: {json.dumps(BANNERS[edition], ensure_ascii=False)}\n" if edition in BANNERS else ""
    return f"""title: ris_nb ({name})
author: ris_nb developers
only_build_toc_files: true
execute:
  execute_notebooks: "off"
html:
  use_repository_button: false
{banner}sphinx:
  config:
    mathjax_path: ../mathjax/tex-chtml.js  # relative to _static: the page's folder, mathjax/
    html_extra_path: [_extra]
    nb_render_markdown_format: myst  # a markdown output's tables and math rendered (commonmark prints them as text)
    suppress_warnings: [mystnb.unknown_mime_type, myst.header]  # show_doc renders each name as an H3
    myst_heading_anchors: 2  # a link to a section by its slug (`06_lavt.ipynb#notation`) resolves
    myst_linkify_fuzzy_links: false  # `args.py` stays a file name, not a link to http://args.py
"""


def stage(names: list[str], src_dir: Path, edition: str = "student", nbs: Path = NBS) -> None:
    if src_dir.exists():
        shutil.rmtree(src_dir)
    (src_dir / "_static").mkdir(parents=True)
    notebooks = edition_notebooks(names, edition, nbs)
    stems = set(names) - {"index"}
    for n, nb in notebooks.items():
        (src_dir / f"{n}.ipynb").write_text(json.dumps(web_notebook(nb, stems, n), indent=1, ensure_ascii=False))
    for folder in ("images", "results"):
        if (nbs / folder).exists():
            shutil.copytree(nbs / folder, src_dir / folder)
    copy_mathjax(src_dir / "_extra" / "mathjax")
    (src_dir / "_static" / "site.css").write_text(SITE_CSS)
    titles = {n: title(nb, n) for n, nb in notebooks.items() if n != "index"}
    (src_dir / "_toc.yml").write_text(toc(names, titles))
    (src_dir / "_config.yml").write_text(config(edition))


def trim_page(html: str, page: str) -> str:
    """A built page without the theme scripts it does not need (`FONTAWESOME_JS`, `SEARCH_JS`) and without the second
    copy of the inline scripts Jupyter Book writes twice (a second `const THEBE_JS_URL` is a SyntaxError), with an
    empty icon (no request for favicon.ico) and the colour mode `auto` on a first visit (the theme logs an error for
    its empty default; sphinx-book-theme takes no `default_mode` option)."""
    html, n = FONTAWESOME_JS.subn("", html)
    m = 0 if page == "search.html" else 3
    html, k = SEARCH_JS.subn("", html) if m else (html, 0)
    if (n, k) != (1, m):
        raise ValueError(f"{page}: expected 1 fontawesome.js and {m} search script tags to drop, found {n} and {k}")
    seen, lines = set(), []
    for line in html.split("\n"):
        inline = re.fullmatch(r"\s*<script>.*</script>\s*", line)
        if not (inline and line.strip() in seen):
            lines.append(line)
            seen |= {line.strip()} if inline else set()
    html = "\n".join(lines).replace("<head>", '<head>\n    <link rel="icon" href="data:,">', 1)
    return html.replace('localStorage.getItem("mode") || ""', 'localStorage.getItem("mode") || "auto"', 1)


def webp_images(out: Path, min_bytes: int = 40_000) -> None:
    """Each figure of `out/_images` over `min_bytes` served as WebP (quality 90: ≈ 10× smaller than the PNG, the noise
    of a ShapeRefs scene kept), its pages pointing at it. The downloads keep the notebooks' own PNGs."""
    from PIL import Image

    renamed = {}
    for png in sorted((out / "_images").glob("*.png")):
        if png.stat().st_size > min_bytes:
            webp = png.with_suffix(".webp")
            with Image.open(png) as im:
                im.save(webp, "WEBP", quality=90)
            if webp.stat().st_size < png.stat().st_size:
                renamed[f"_images/{png.name}"] = f"_images/{webp.name}"
                png.unlink()
            else:
                webp.unlink()
    for page in out.glob("*.html"):
        text = page.read_text()
        new = re.sub(r"_images/[\w.-]+\.png", lambda m: renamed.get(m.group(0), m.group(0)), text)
        if new != text:
            page.write_text(new)


def build(
    out: Path, strict: bool, work: Path = ROOT / "_site_build", edition: str = "student", nbs: Path = NBS
) -> Path:
    "Stage `edition` of the notebooks in `nbs` into `work`, build with Jupyter Book, copy the HTML to `out`."
    names = reading_order()
    stage(names, work / "src", edition, nbs)
    cmd = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(work / "src"), "--path-output", str(work)]
    cmd += ["-W", "-n", "--keep-going"] if strict else []
    subprocess.run(cmd, check=True)
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(work / "_build" / "html", out)
    for page in out.glob("*.html"):
        page.write_text(trim_page(page.read_text(), page.name))
    webp_images(out)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--edition", choices=EDITIONS, default="student", help="student (default), teacher or self-study")
    p.add_argument("--out", help="where the HTML goes (default: _site/, _site_teacher/ or _site_self_study/)")
    p.add_argument("--work", help="staging and build folder (default: _site_build/, _site_teacher_build/, …)")
    p.add_argument("--nbs", default=str(NBS), help="the teacher's notebooks (default: nbs/)")
    p.add_argument("--strict", action="store_true", help="warnings are errors (broken cross-links fail)")
    a = p.parse_args()
    suffix = {"student": "", "teacher": "_teacher", "self-study": "_self_study"}[a.edition]
    out = Path(a.out or ROOT / f"_site{suffix}")
    out = build(out, a.strict, Path(a.work or ROOT / f"_site{suffix}_build"), a.edition, Path(a.nbs))
    print(f"site ({a.edition} edition): {out / 'index.html'}")


if __name__ == "__main__":
    main()
