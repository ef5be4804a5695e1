"The repository stands on its own: notebooks name only files that exist in it, and saved outputs show no machine paths."

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NBS = sorted((ROOT / "nbs").glob("*.ipynb"))
STEMS = {p.stem for p in NBS}
FILES = [p for p in ROOT.rglob("*") if p.is_file() and ".git" not in p.parts and ".venv" not in p.parts]
NAMES = {p.name for p in FILES}
# written by `fit`/`evaluate` into a run folder, by `ris_nb experiments` into a study folder
GENERATED = {"report.md", "study.md", "main_table.md"}
# `ris_nb eval --split X` beside a run's own report: report_X.md; `gpu_check.py --profile`'s tables beside its CSV
GENERATED_PATTERN = re.compile(r"report_[\w-]+\.md|[\w-]+_profile\.md")
MADE_UP = {"99_x"}  # a notebook that does not exist, named by test_site's citation-link test on purpose

# a markdown document: `MAGNET.md`, `data/README.md`
MD_REF = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w.-]+\.md)\b")
# a notebook: `12_training`, `02_shaperefs.ipynb`
NB_REF = re.compile(r"(?<![\w/.-])(\d\d[a-z]?_[a-z][a-z0-9_]*?)(?:\.ipynb)?(?![\w])")
OUTSIDE = re.compile(r"\.\./shared|\bshared/(?:fixtures|methods|seeds)|/work/|RIS_NB_FIXTURES")
MACHINE = re.compile(r"(?:/tmp/|/var/folders/|/private/var/|/home/\w+|/Users/\w+|/work/|/root/|C:\\\\Users)")


def _cells(path):
    return json.loads(path.read_text())["cells"]


def _text(cell):
    return "".join(cell["source"])


def _outputs(cell):
    for o in cell.get("outputs", []):
        if "text" in o:
            yield "".join(o["text"])
        for k, v in o.get("data", {}).items():
            if k.startswith("text/") or k.endswith("json"):
                yield v if isinstance(v, str) else "".join(v) if isinstance(v, list) else json.dumps(v)
        if "traceback" in o:
            yield "\n".join(o["traceback"])


def _exists(ref: str) -> bool:
    """A document reference resolves if it is a path from the repository root or `nbs/`, or names a file somewhere in
    the repository."""
    return (ROOT / ref).exists() or (ROOT / "nbs" / ref).exists() or Path(ref).name in NAMES


def _bad_refs(text: str) -> list[str]:
    bad = [
        m
        for m in MD_REF.findall(text)
        if not _exists(m) and Path(m).name not in GENERATED and not GENERATED_PATTERN.fullmatch(Path(m).name)
    ]
    bad += [m for m in NB_REF.findall(text) if m not in STEMS and m not in MADE_UP]
    bad += OUTSIDE.findall(text)
    return bad


def test_scanner_catches_known_defects():
    assert _bad_refs("see `MAGNET.md` and HELPERS.md") == ["MAGNET.md", "HELPERS.md"]
    assert _bad_refs("as in 19_refcoco_tpu and 12_training") == ["19_refcoco_tpu"]
    assert _bad_refs("FIX = Path('../shared/fixtures')") == ["../shared"]
    assert _bad_refs("read `tests/fixtures/magnet_official_tiny/README.md`, then `02_shaperefs.ipynb`") == []
    assert MACHINE.search("saved to /tmp/tmpab12/run") and not MACHINE.search("saved to <tmp>/run")


@pytest.mark.parametrize("path", NBS, ids=lambda p: p.name)
def test_notebook_references_exist(path):
    bad = [
        (i, ref)
        for i, c in enumerate(_cells(path))
        if c["cell_type"] in ("markdown", "code")
        for ref in _bad_refs(_text(c))
    ]
    assert not bad, f"{path.name}: references to files not in the repository (cell index, reference): {bad}"


@pytest.mark.parametrize("path", NBS, ids=lambda p: p.name)
def test_saved_outputs_show_no_machine_path(path):
    bad = [(i, m.group(0)) for i, c in enumerate(_cells(path)) for t in _outputs(c) for m in [MACHINE.search(t)] if m]
    assert not bad, f"{path.name}: saved outputs show machine paths (cell index, match): {bad}"


OTHER = [
    ROOT / "README.md",
    ROOT / "Makefile",
    *sorted((ROOT / "tests").glob("*.py")),
    *sorted((ROOT / "bench").glob("*.py")),
]


@pytest.mark.parametrize("path", [p for p in OTHER if p.name != Path(__file__).name], ids=lambda p: p.name)
def test_repository_text_references_exist(path):
    text = path.read_text()
    bad = _bad_refs(text)
    assert not bad, f"{path.name}: references to files not in the repository: {bad}"
