"""`make site`: the course website builds offline from the saved outputs, warnings as errors, one page per notebook."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import build_site  # noqa: E402


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "build_site.py"),
            "--strict",
            "--out",
            str(out / "html"),
            "--work",
            str(out / "work"),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return out / "html"


def test_reading_order_names_every_notebook():
    names = build_site.reading_order()
    on_disk = {p.stem for p in (ROOT / "nbs").glob("*.ipynb")}
    assert set(names) == on_disk, (
        f"README reading order vs nbs/: missing {on_disk - set(names)}, extra {set(names) - on_disk}"
    )


def test_every_notebook_has_its_page(site):
    missing = [n for n in build_site.reading_order() if not (site / f"{n}.html").exists()]
    assert not missing, f"no page for {missing}"


def test_pages_hide_nbdev_directives(site):
    shown = [p.name for p in site.glob("*.html") if re.search(r"#\|\s*(export|default_exp|hide)", p.read_text())]
    assert not shown, f"nbdev directives visible in {shown}"


def test_math_renders_offline(site):
    assert (site / "_static" / "mathjax" / "tex-chtml.js").exists()
    page = (site / "01_metrics.html").read_text()
    assert "_static/mathjax/tex-chtml.js" in page and not re.search(r"<script[^>]+src=\"https?://", page)


def test_toc_puts_the_appendix_in_its_own_part():
    toc = build_site.toc(["index", "00_core", "12a_entity_pretraining", "90_config_validation", "99_app"])
    course, appendix = toc.split("- caption: Appendix")
    assert "00_core" in course and "12a_entity_pretraining" in course and "90_config_validation" in appendix
