"""Build the course website (`make site`): Jupyter Book 1 over the notebooks' saved outputs, offline, into `_site/`.

The table of contents is the README's reading order (course first, the appendix as its own part). nbdev directives
(`#| export`, ...) are stripped, `#| hide` cells dropped, and MathJax is served from the `sphinx-mathjax-offline`
package, so a page opened without network still renders its math. Nothing is executed.

    python tools/build_site.py [--out _site] [--strict]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_ROW = re.compile(r"^\| `(\w+)` \|")
DIRECTIVE = re.compile(r"^\s*#\|\s*(.*)$")
WIDE_CODE_CSS = """/* lines of 100+ characters readable without scrolling sideways */
.bd-page-width { max-width: none !important; }
.bd-main .bd-content .bd-article-container { max-width: none !important; }
:root { --pst-sidebar-secondary: 13rem; }
div.cell_input pre, div.cell_output pre, .highlight pre { font-size: 0.74rem !important; }
"""


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


def without_directives(source: str) -> str:
    return "\n".join(line for line in source.splitlines() if not DIRECTIVE.match(line)).strip("\n")


def clean_markdown_output(text: str) -> str:
    "show_doc's markdown output: a bare `---` line reads as a docutils transition and breaks the build."
    return "\n".join(line for line in text.splitlines() if line.strip() != "---")


def web_cell(cell: dict) -> dict | None:
    "One cell as the website shows it, or None when nbdev hides it."
    if cell["cell_type"] != "code":
        return cell
    src = "".join(cell["source"])
    flags = directives(src)
    if any(f.startswith("hide") or f in ("include: false",) for f in flags):
        return None
    cell = {**cell, "source": without_directives(src)}
    tags = list(cell.get("metadata", {}).get("tags", []))
    if "echo: false" in flags:
        tags.append("remove-input")
    if "output: false" in flags:
        tags.append("remove-output")
    cell["metadata"] = {**cell.get("metadata", {}), "tags": tags}
    for out in cell.get("outputs", []):
        md = out.get("data", {}).get("text/markdown")
        if md is not None:
            text = md if isinstance(md, str) else "".join(md)
            out["data"]["text/markdown"] = clean_markdown_output(text)
    return cell


def stage_notebook(src: Path, dst: Path) -> None:
    nb = json.loads(src.read_text())
    nb["cells"] = [c for c in map(web_cell, nb["cells"]) if c is not None]
    dst.write_text(json.dumps(nb, indent=1))


def mathjax_dir() -> Path:
    "The MathJax 3 bundle shipped inside the sphinx-mathjax-offline package."
    files = importlib.metadata.files("sphinx-mathjax-offline") or []
    js = [f for f in files if str(f).endswith("static/mathjax/tex-chtml.js")]
    if not js:
        raise FileNotFoundError("sphinx-mathjax-offline: static/mathjax/tex-chtml.js not found (pip install it)")
    return Path(js[0].locate()).parent


def is_appendix(name: str) -> bool:
    return name[:2].isdigit() and int(name[:2]) >= 90


def toc(names: list[str]) -> str:
    appendix = [n for n in names if is_appendix(n)]
    course = [n for n in names if n != "index" and not is_appendix(n)]
    lines = ["format: jb-book", "root: index", "parts:", "- caption: The course", "  chapters:"]
    lines += [f"  - file: {n}" for n in course]
    lines += ["- caption: Appendix", "  chapters:"] + [f"  - file: {n}" for n in appendix]
    return "\n".join(lines) + "\n"


def config() -> str:
    return """title: ris_nb
author: ris_nb developers
only_build_toc_files: true
execute:
  execute_notebooks: "off"
html:
  use_repository_button: false
sphinx:
  config:
    mathjax_path: mathjax/tex-chtml.js
    suppress_warnings: [mystnb.unknown_mime_type, myst.header]  # show_doc renders each name as an H3
"""


def stage(names: list[str], src_dir: Path) -> None:
    if src_dir.exists():
        shutil.rmtree(src_dir)
    (src_dir / "_static").mkdir(parents=True)
    for n in names:
        nb = ROOT / "nbs" / f"{n}.ipynb"
        if not nb.exists():
            raise FileNotFoundError(f"README reading order names {n}, but {nb} does not exist")
        stage_notebook(nb, src_dir / nb.name)
    for folder in ("images", "results"):
        if (ROOT / "nbs" / folder).exists():
            shutil.copytree(ROOT / "nbs" / folder, src_dir / folder)
    shutil.copytree(mathjax_dir(), src_dir / "_static" / "mathjax")
    (src_dir / "_static" / "wide.css").write_text(WIDE_CODE_CSS)
    (src_dir / "_toc.yml").write_text(toc(names))
    (src_dir / "_config.yml").write_text(config())


def build(out: Path, strict: bool, work: Path = ROOT / "_site_build") -> Path:
    "Stage into `work`, build with Jupyter Book, copy the HTML to `out`; returns `out`."
    names = reading_order()
    stage(names, work / "src")
    cmd = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(work / "src"), "--path-output", str(work)]
    cmd += ["-W", "-n", "--keep-going"] if strict else []
    subprocess.run(cmd, check=True)
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(work / "_build" / "html", out)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "_site"), help="where the HTML goes (default: _site/)")
    p.add_argument("--work", default=str(ROOT / "_site_build"), help="staging and build folder (default: _site_build/)")
    p.add_argument("--strict", action="store_true", help="warnings are errors (broken cross-links fail)")
    a = p.parse_args()
    out = build(Path(a.out), a.strict, Path(a.work))
    print(f"site: {out / 'index.html'}")


if __name__ == "__main__":
    main()
