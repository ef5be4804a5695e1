"""`make site` / `make site-teacher`: the course website builds offline from the saved outputs, warnings as errors.

The student edition holds no solution, hidden test, key, instructor's answer or saved check result; the teacher's
edition says what it is on every page. In headless Chromium (Selenium; Debian's chromium and chromium-driver), every
page of the student edition loads in ≤ 2 MB with a cold cache, logs no console error and shows ≤ 10 % of its code
blocks scrolling sideways at 1280 px; without a browser the page weights are summed from the files each page names
(and the test says so). Three downloaded student notebooks run top to bottom in a fresh kernel."""

from __future__ import annotations

import functools
import gzip
import html
import json
import re
import shutil
import statistics
import subprocess
import sys
import threading
import warnings
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import build_site  # noqa: E402
from ris_nb.exercise_marks import EXERCISES, SELF_STUDY_LABEL, exercise_start  # noqa: E402
from ris_nb.notebook_cells import read_notebook  # noqa: E402

MAX_PAGE_BYTES = 2_000_000
MAX_SCROLL_SHARE = 0.10
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def _build(edition: str, out: Path) -> subprocess.Popen:
    cmd = [
        sys.executable,
        str(ROOT / "tools" / "build_site.py"),
        "--strict",
        "--edition",
        edition,
        "--nbs",
        str(out / "nbs"),
    ]
    cmd += ["--out", str(out / edition), "--work", str(out / f"{edition}_work")]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Every edition, built side by side once for the module from one copy of nbs/ (`site.nbs`: notebooks edited
    while the test runs change none): `site.student`, `site.teacher`, `site["self-study"]` (getattr)."""
    out = tmp_path_factory.mktemp("site")
    shutil.copytree(ROOT / "nbs", out / "nbs")
    builds = {e: _build(e, out) for e in build_site.EDITIONS}
    for edition, p in builds.items():
        log = p.communicate()[0]
        assert p.returncode == 0, f"{edition} edition build failed:\n{log[-3000:]}"
    return SimpleNamespace(nbs=out / "nbs", **{e: out / e for e in build_site.EDITIONS})


def pages(root: Path) -> list[Path]:
    return sorted(root.glob("*.html"))


# --- reading the built files as text -------------------------------------------------------------------------------
class _Text(HTMLParser):
    "The text of an HTML page; with `skip_code`, without code, preformatted blocks and math."

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self, skip_code: bool):
        super().__init__(convert_charrefs=True)
        self.skip_code, self.stack, self.parts = skip_code, [], []

    def handle_starttag(self, tag, attrs):
        if tag in self.VOID:
            return
        classes = (dict(attrs).get("class") or "").split()
        skip = tag in ("script", "style") or self.skip_code and (tag in ("pre", "code") or "math" in classes)
        self.stack.append((tag, skip or bool(self.stack and self.stack[-1][1])))

    def handle_endtag(self, tag):
        while self.stack:
            if self.stack.pop()[0] == tag:
                break

    def handle_data(self, data):
        if not (self.stack and self.stack[-1][1]):
            self.parts.append(data)


def html_text(page: str, skip_code: bool = False) -> str:
    p = _Text(skip_code)
    p.feed(page)
    return "".join(p.parts)


def _strings(x) -> list[str]:
    if isinstance(x, str):
        return [x]
    if isinstance(x, dict):
        return [s for v in x.values() for s in _strings(v)]
    return [s for v in x for s in _strings(v)] if isinstance(x, list) else []


def file_text(path: Path) -> str:
    "What a reader of `path` sees: an HTML page's text, every string of a notebook, any other text file as it is."
    raw = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix == ".html":
        return html_text(raw)
    if path.suffix == ".ipynb":
        return "\n".join(_strings(json.loads(raw)))
    return raw


SMART = str.maketrans({"’": "'", "‘": "'", "“": '"', "”": '"', "\u00a0": " "})


def norm(text: str) -> str:
    """Text as compared: entities decoded, Sphinx's smart quotes undone, markdown emphasis, code marks, tags and link
    targets dropped, whitespace runs as one space (so a code line matches its highlighted HTML, a markdown line its
    rendered paragraph)."""
    text = html.unescape(text).translate(SMART).replace("...", "…")
    text = re.sub(r"<[^>\n]*>", " ", text)
    text = re.sub(r"\]\([^)\s]*\)", "]", text)
    text = re.sub(r"[*`\[\]]", "", text)
    return re.sub(r"\s+", " ", text).strip()


# --- what the student edition must not hold: taken from the teacher's notebooks ---------------------------------------
TRIVIAL = re.compile(r"^(return|pass|else:|try:|finally:|raise|break|continue|None|True|False|[\W\d_]*)$")


MARKER = re.compile(r"^\s*(?:#+|<!--)\s*#*\s*(BEGIN|END) (SOLUTION|HIDDEN TESTS)\b")


def split_regions(source: str) -> tuple[list[str], list[str]]:
    """A cell's lines outside and inside its BEGIN/END SOLUTION and BEGIN/END HIDDEN TESTS regions (marker lines,
    `### BEGIN SOLUTION` or `<!-- ### BEGIN SOLUTION -->`, in neither; a marker quoted in a string is no marker)."""
    public, secret, inside = [], [], False
    for line in source.split("\n"):
        m = MARKER.match(line)
        if m:
            inside = m.group(1) == "BEGIN"
        else:
            (secret if inside else public).append(line)
    return public, secret


def _outputs(cell: dict) -> list[str]:
    return [s for o in cell.get("outputs", []) for s in _strings({k: v for k, v in o.items() if k != "metadata"})]


def _fragments(line: str, markdown: bool) -> list[str]:
    "A secret line as searched: whole (code, output), or its runs of prose between math, links and parentheses."
    parts = re.split(r"\$[^$]*\$|\\\(.*?\\\)|[()\[\]|]", line) if markdown else [line]
    keep = []
    for p in (norm(p).strip(" .,;:") for p in parts):
        if len(p) >= 8 and re.search(r"[A-Za-z]{3}", p) and not TRIVIAL.match(p) and (not markdown or " " in p):
            keep.append(p)
    return keep


def secrets_and_public(nb: dict) -> tuple[set[str], str]:
    """A teacher notebook's secrets (each nontrivial line of its solution and hidden-test regions, its exercise
    cells' saved outputs) and its public text (everything else: sources with the regions removed, lesson outputs)."""
    start = exercise_start(nb)
    secret, public = set(), []
    for i, c in enumerate(nb["cells"]):
        src, markdown = c["source"], c["cell_type"] == "markdown"
        shown, hidden = split_regions(src)
        secret |= {f for line in hidden for f in _fragments(line, markdown)}
        public.append("\n".join(shown))
        outs = _outputs(c) if c["cell_type"] == "code" else []
        if start is not None and i > start:
            secret |= {f for o in outs for line in o.split("\n") for f in _fragments(line, False)}
        else:
            public += outs
    return secret, norm("\n".join(public))


@pytest.fixture(scope="module")
def teacher_notebooks(site):
    return {p.stem: read_notebook(p) for p in sorted(site.nbs.glob("*.ipynb"))}


def _published(root: Path) -> list[Path]:
    "Every text file of a built site but the theme's and MathJax's own: pages, downloads, sources, search index."
    skip = ("_static", "mathjax", "_images")
    return [
        p
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).parts[0] not in skip and p.suffix in (".html", ".ipynb", ".txt", ".js")
    ]


def test_student_edition_holds_no_solution_key_or_check_result(site, teacher_notebooks):
    """Every solution line, hidden test (keys included) and saved exercise output of the teacher's notebooks is absent
    from every page, download and source file of the student edition. A line that the lesson itself shows (the same
    notebook's text outside those regions; for a file of no notebook, any notebook's) is not a secret; nor are blank
    lines, lone keywords (`return`, `pass`, …), lines of brackets and punctuation, and lines under 8 characters."""
    secrets, public = {}, {}
    for stem, nb in teacher_notebooks.items():
        secrets[stem], public[stem] = secrets_and_public(nb)
    every_secret = set().union(*secrets.values())
    assert len(every_secret) > 100, f"only {len(every_secret)} secret lines found in the teacher's notebooks"
    all_public = " ".join(public.values())
    leaks, searched = [], 0
    for f in _published(site.student):
        stem = f.name.split(".")[0]
        shown = public.get(stem, all_public)
        text = norm(file_text(f))
        searched += 1
        leaks += [(str(f.relative_to(site.student)), s) for s in every_secret if s not in shown and s in text]
    assert searched > 80, f"only {searched} files searched in {site.student}"
    assert not leaks, f"{len(leaks)} teacher lines in the student edition, e.g. {leaks[:5]}"


ABOUT_CHECKS = (
    "00a_checks",
    "19_course",
    "98e_grading",
    "98m_exercise_marks",
    "98n_course_files",
)  # they show a keyed check or a graded answer as examples


def test_student_edition_shows_no_instructor_answer_or_check_output(site):
    for f in _published(site.student):
        if f.name.split(".")[0] in ABOUT_CHECKS:
            continue
        text = file_text(f).translate(SMART)
        assert "Instructor's answer" not in text, f"{f}: an instructor's answer"
        assert not re.search(r"✓ Q\d+: right", text), f"{f}: a graded Think answer"
        assert not re.search(r"key\s*=\s*['\"][a-e]['\"]", text), f"{f}: a Think key (key='…')"


def test_student_edition_downloads_are_the_student_copies(site):
    "Each notebook with exercises is offered as its student copy: stubs in place of the solutions."
    with_exercises = [p.stem for p in site.nbs.glob("*.ipynb") if exercise_start(read_notebook(p)) is not None]
    assert len(with_exercises) >= 3
    for stem in with_exercises:
        nb = json.loads((site.student / "_sources" / f"{stem}.ipynb").read_text())
        assert any("NotImplementedError" in "".join(c["source"]) for c in nb["cells"]), f"{stem}: no stub"


def test_teacher_edition_is_labelled_on_every_page(site):
    unlabelled = [p.name for p in pages(site.teacher) if build_site.BANNER not in html.unescape(p.read_text())]
    assert len(pages(site.teacher)) > 40 and not unlabelled, f"no '{build_site.BANNER}' banner on {unlabelled}"
    assert not [p.name for p in pages(site.student) if build_site.BANNER in html.unescape(p.read_text())]
    assert any("BEGIN SOLUTION" in p.read_text() for p in (site.teacher / "_sources").glob("*.ipynb"))


def test_self_study_edition_is_labelled_on_every_page_and_download(site):
    "The self-study edition (digests that give the keys away) says so on every page and atop every notebook offered."
    self_study = getattr(site, "self-study")
    unlabelled = [p.name for p in pages(self_study) if build_site.SELF_STUDY_BANNER not in html.unescape(p.read_text())]
    assert len(pages(self_study)) > 40 and not unlabelled, f"no self-study banner on {unlabelled}"
    for edition in (site.student, site.teacher):
        assert not [p.name for p in pages(edition) if build_site.SELF_STUDY_BANNER in html.unescape(p.read_text())]
    with_exercises = [p.stem for p in site.nbs.glob("*.ipynb") if exercise_start(read_notebook(p)) is not None]
    for stem in with_exercises:
        nb = read_notebook(self_study / "_sources" / f"{stem}.ipynb")
        assert nb["cells"][1]["source"] == SELF_STUDY_LABEL, f"{stem}: the download is not labelled"
        assert "digest=" in json.dumps(nb), f"{stem}: no self-check in the self-study edition"
    assert not [p for p in (site.student / "_sources").glob("*.ipynb") if SELF_STUDY_LABEL in p.read_text()]


# --- structure ------------------------------------------------------------------------------------------------------
def test_reading_order_names_every_notebook():
    names = build_site.reading_order()
    on_disk = {p.stem for p in (ROOT / "nbs").glob("*.ipynb")}
    assert set(names) == on_disk, (
        f"README reading order vs nbs/: missing {on_disk - set(names)}, extra {set(names) - on_disk}"
    )


def test_file_names_are_not_made_links_to_other_domains(site):
    "MyST's linkify makes only written addresses links: a file name such as `args.py` or `main.py` stays text."
    for p in pages(site.student):
        fuzzy = re.findall(r'href="https?://[\w-]+\.(?:py|md|json|csv|pt|sh|ipynb|txt|yml)"', p.read_text())
        assert not fuzzy, f"{p.name}: file names made links {fuzzy[:3]}"


def test_every_notebook_has_its_page(site):
    for edition in (site.student, site.teacher):
        missing = [n for n in build_site.reading_order() if not (edition / f"{n}.html").exists()]
        assert not missing, f"no page for {missing} in {edition}"


def test_pages_hide_nbdev_directives_and_show_doc_calls(site):
    for p in pages(site.student):
        text = html_text(p.read_text())
        assert not re.search(r"#\|\s*(export|default_exp|hide)", text), f"nbdev directive visible in {p.name}"
        assert "show_doc(" not in text, f"a raw show_doc call on {p.name}"
        assert "{target=" not in text, f"a literal source{{target=…}} line on {p.name}"


def test_show_doc_renders_a_signature_and_docstring(site):
    page = html_text((site.student / "00_core.html").read_text())
    assert "Config.override" in page and "dotted-key" in page


def test_navigation_numbers_the_notebooks(site):
    nav = (site.student / "index.html").read_text()
    for n in ("01_metrics", "12a_entity_pretraining", "94_official_weights"):
        number = n.split("_")[0]
        assert re.search(rf'href="{n}\.html">{number} · ', nav), f"{n}: no '{number} · ' title in the navigation"


def test_toc_titles_and_appendix_part():
    toc = build_site.toc(
        ["index", "00_core", "12a_entity_pretraining", "90_config_validation", "99_app"], {"00_core": "00 · Core"}
    )
    course, appendix = toc.split("- caption: Appendix")
    assert "00_core" in course and "12a_entity_pretraining" in course and "90_config_validation" in appendix
    assert 'title: "00 · Core"' in course


def test_citations_by_number_link_to_their_notebook():
    stems = {"06_lavt", "12a_entity_pretraining", "94_official_weights", "07_mask_grounding"}
    text = "See `06_lavt`, appendix 94 and (12a); not `99_x`, (07) in `code (07)`, nor [06_lavt](06_lavt.ipynb)."
    out = build_site.link_citations(text, stems, own="07_mask_grounding")
    assert "[`06_lavt`](06_lavt.ipynb)" in out and "[appendix 94](94_official_weights.ipynb)" in out
    assert "([12a](12a_entity_pretraining.ipynb))" in out and "`99_x`" in out and "(07)" in out
    assert out.count("(06_lavt.ipynb)") == 2  # the existing link is left as it is
    assert "```\nnotebook 06\n```" in build_site.link_citations("```\nnotebook 06\n```", stems, own="x")


def test_prose_cites_notebooks_with_links(site):
    "Most pages link to another notebook from their prose; the SaG page links to the entity slots it builds on."
    sag = (site.student / "11_sag.html").read_text()
    assert re.search(r'<a class="reference internal" href="10_entity_slots.html"><span class="std std-doc"><code', sag)


def test_math_renders_offline_from_one_file(site):
    mj = site.student / "mathjax"
    assert (mj / "tex-chtml.js").exists() and not (site.student / "_static" / "mathjax").exists()
    assert len(list(mj.rglob("*.js"))) == 1, "only tex-chtml.js: the fonts it loads beside it"
    page = (site.student / "01_metrics.html").read_text()
    assert len(re.findall(r"<script[^>]+mathjax", page)) == 1, "MathJax loaded once"
    assert not re.search(r"<script[^>]+src=\"https?://", page)


def test_no_plain_caret_math_outside_code(site):
    "Math such as A^slot is typeset (`$A^{slot}$`), not left as text with a caret, on every page (outputs included)."
    found = {}
    for p in pages(site.student):
        hits = re.findall(r"\b\w+\^\{?\w+", html_text(p.read_text(), skip_code=True))
        if hits:
            found[p.name] = hits[:3]
    assert not found, f"caret math as plain text: {found}"


# --- in a browser ---------------------------------------------------------------------------------------------------
TEXT = (".html", ".js", ".css", ".txt", ".svg", ".json", ".ipynb")


class _Static(SimpleHTTPRequestHandler):
    "Files as a static host (GitHub Pages, nginx with gzip on) serves them: text compressed when the browser asks."

    def do_GET(self):
        path = Path(self.translate_path(self.path))
        if path.suffix not in TEXT or not path.is_file() or "gzip" not in self.headers.get("Accept-Encoding", ""):
            return super().do_GET()
        body = gzip.compress(path.read_bytes())
        self.send_response(200)
        self.send_header("Content-Type", self.guess_type(str(path)))
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class served:
    "`root` over http on localhost, in a thread: `with served(root) as url: …`."

    def __init__(self, root: Path):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Static, directory=str(root)))

    def __enter__(self) -> str:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.httpd.server_port}/"

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def chromium(profile: Path):
    "Headless Chromium at 1280×900 with the cache off, or None when Chromium, its driver or Selenium is missing."
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        return None
    if not (browser and driver):
        return None
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for a in (*CHROMIUM_ARGS, f"--user-data-dir={profile}", "--window-size=1280,900"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(driver), options=opts)
    d.execute_cdp_cmd("Network.enable", {})
    d.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})
    metrics = {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False}
    d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    return d


SETTLE = """const done = arguments[arguments.length - 1];
const mj = window.MathJax && window.MathJax.startup && window.MathJax.startup.promise;
Promise.resolve(mj).then(() => document.fonts.ready).then(() => setTimeout(() => done(true), 300))
  .catch(e => done(String(e)));"""
MEASURE = """const nav = performance.getEntriesByType('navigation')[0];
const res = performance.getEntriesByType('resource');
const pres = [...document.querySelectorAll('pre')].filter(p => p.clientWidth > 0);
return {bytes: nav.transferSize + res.reduce((s, r) => s + r.transferSize, 0),
        raw: nav.decodedBodySize + res.reduce((s, r) => s + r.decodedBodySize, 0),
        pre: pres.length, scrolling: pres.filter(p => p.scrollWidth > p.clientWidth + 1).length,
        math: document.querySelectorAll('mjx-container').length,
        merror: document.querySelectorAll('mjx-merror').length};"""


def measure_in_browser(root: Path, profile: Path) -> dict[str, dict] | None:
    "page → {bytes, pre, scrolling, math, merror, errors} in headless Chromium, or None without a browser."
    d = chromium(profile)
    if d is None:
        return None
    try:
        d.set_script_timeout(60)
        out = {}
        with served(root) as url:
            for p in pages(root):
                d.get(url + p.name)
                d.execute_async_script(SETTLE)
                m = d.execute_script(MEASURE)
                m["errors"] = [e["message"] for e in d.get_log("browser") if e["level"] == "SEVERE"]
                out[p.name] = m
        return out
    finally:
        d.quit()


def _local(root: Path, page: Path, ref: str) -> Path | None:
    ref = ref.split("?")[0].split("#")[0]
    if not ref or "://" in ref or ref.startswith("data:"):
        return None
    f = (page.parent / ref).resolve()
    return f if f.is_file() and root.resolve() in f.parents else None


def _sent(f: Path) -> int:
    "Bytes a static host sends for `f`: text gzip-compressed (`_Static`), the rest as it is."
    return len(gzip.compress(f.read_bytes())) if f.suffix in TEXT else f.stat().st_size


def measure_by_files(root: Path) -> dict[str, dict]:
    """page → {bytes, raw}: the page, every script, stylesheet, preload and image it names, and the fonts its
    stylesheets name (woff2) or MathJax may load (all its fonts: an upper bound). Used where no browser can run."""
    mathjax_fonts = list((root / "mathjax").rglob("*.woff"))
    out = {}
    for p in pages(root):
        text = p.read_text()
        refs = re.findall(r'<(?:script|img)[^>]+src="([^"]+)"', text)
        refs += re.findall(r'<link[^>]+href="([^"]+\.(?:css|js)[^"]*)"', text)
        files = {f for r in refs if (f := _local(root, p, r))}
        for css in [f for f in files if f.suffix == ".css"]:
            files |= {f for u in re.findall(r"url\(([^)]+\.woff2)\)", css.read_text()) if (f := _local(root, css, u))}
        if any(f.name == "tex-chtml.js" for f in files):
            files |= set(mathjax_fonts)
        files.add(p)
        out[p.name] = {"bytes": sum(map(_sent, files)), "raw": sum(f.stat().st_size for f in files)}
    return out


@pytest.fixture(scope="module")
def measured(site, tmp_path_factory):
    m = measure_in_browser(site.student, tmp_path_factory.mktemp("chromium"))
    if m is None:
        warnings.warn(
            "no Chromium/chromedriver/Selenium: page weights summed from the files each page names; console "
            "errors and code scrolling not measured"
        )
        print("test_site: no browser; page weights from file sizes")
        return "files", measure_by_files(site.student)
    return "browser", m


def summary(m: dict[str, dict]) -> str:
    sizes = [v["bytes"] for v in m.values()]
    heavy = max(m, key=lambda k: m[k]["bytes"])
    raw = [v["raw"] for v in m.values()]
    line = f"{len(m)} pages: max {max(sizes) / 1e6:.2f} MB ({heavy}), median {statistics.median(sizes) / 1e6:.2f} MB"
    line += f" sent (uncompressed: max {max(raw) / 1e6:.2f}, median {statistics.median(raw) / 1e6:.2f} MB)"
    if "pre" in next(iter(m.values())):
        pre, scrolling = sum(v["pre"] for v in m.values()), sum(v["scrolling"] for v in m.values())
        errors = sum(len(v["errors"]) for v in m.values())
        line += f"; {errors} console errors; {scrolling}/{pre} code blocks scroll at 1280 px"
    return line


def test_pages_are_light(measured):
    how, m = measured
    print(f"test_site ({how}): {summary(m)}")
    heavy = {k: v["bytes"] for k, v in m.items() if v["bytes"] > MAX_PAGE_BYTES}
    assert not heavy, f"pages over {MAX_PAGE_BYTES / 1e6} MB with a cold cache ({how}): {heavy}"


def test_pages_log_no_console_error(measured):
    how, m = measured
    if how == "browser":
        errors = {k: v["errors"] for k, v in m.items() if v["errors"]}
        assert not errors, f"console errors: {errors}"


def test_code_fits_at_1280px(measured):
    how, m = measured
    if how == "browser":
        pre, scrolling = sum(v["pre"] for v in m.values()), sum(v["scrolling"] for v in m.values())
        assert pre > 500 and scrolling / pre <= MAX_SCROLL_SHARE, f"{scrolling} of {pre} code blocks scroll sideways"


def test_math_is_typeset_in_the_browser(measured):
    how, m = measured
    if how == "browser":
        assert m["01_metrics.html"]["math"] > 0 and m["11_sag.html"]["math"] > 0
        assert not {k: v["merror"] for k, v in m.items() if v["merror"]}


# --- downloads ------------------------------------------------------------------------------------------------------
DOWNLOADS = ("01_metrics", "04_transforms", "08_alignment")  # the fastest Run Alls with exercises
EXPECTED_IN_EXERCISES = ("NotImplementedError", "CheckError")


def _flags_by_id(teacher: Path) -> dict[str, set[str]]:
    nb = read_notebook(teacher)
    return {c.get("id"): set(build_site.directives(c["source"])) for c in nb["cells"]}


def run_download(path: Path, teacher: Path, cwd: Path) -> tuple[int, list[tuple[int, str, bool]]]:
    """Run a downloaded notebook cell by cell in a fresh kernel (`#| slow`/`gpu` cells skipped, as nbdev_test does);
    returns the number of cells run and each failure as (cell, error name, in the exercises)."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    start = next(i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and c.source.startswith(EXERCISES))
    flags = _flags_by_id(teacher)
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(cwd)}})
    ran, failed = 0, []
    with client.setup_kernel():
        for i, cell in enumerate(nb.cells):
            if cell.cell_type != "code" or flags.get(cell.get("id"), set()) & {"slow", "gpu"}:
                continue
            ran += 1
            try:
                client.execute_cell(cell, i)
            except CellExecutionError as e:
                failed.append((i, e.ename, i > start))
    return ran, failed


@pytest.mark.parametrize("stem", DOWNLOADS)
def test_downloaded_student_notebook_runs(site, stem, tmp_path):
    """The lesson cells all run; in the exercises only an unanswered stub (NotImplementedError), a check it fails
    (CheckError) or, after one of those, a name the unanswered cell would have defined (NameError) may raise."""
    nb = tmp_path / f"{stem}.ipynb"
    shutil.copy(site.student / "_sources" / f"{stem}.ipynb", nb)
    teacher = read_notebook(site.nbs / f"{stem}.ipynb")["cells"]
    hidden = sum(c["cell_type"] == "code" and build_site.hidden(build_site.directives(c["source"])) for c in teacher)
    kept = sum("remove-cell" in c["metadata"].get("tags", []) for c in json.loads(nb.read_text())["cells"])
    assert kept == hidden, f"{stem}: {hidden} `#| hide` cells, {kept} in the download (tagged remove-cell)"
    ran, failed = run_download(nb, site.nbs / f"{stem}.ipynb", tmp_path)
    print(f"test_site: downloaded {stem}: {ran} cells run, {len(failed)} failed in the exercises")
    lesson = [f for f in failed if not f[2]]
    assert not lesson, f"{stem}: lesson cells failed: {lesson}"
    first = min((i for i, name, _ in failed if name in EXPECTED_IN_EXERCISES), default=float("inf"))
    unexpected = [f for f in failed if f[1] not in EXPECTED_IN_EXERCISES and not (f[1] == "NameError" and f[0] > first)]
    assert not unexpected, f"{stem}: exercise cells failed other than by an unanswered stub: {unexpected}"
