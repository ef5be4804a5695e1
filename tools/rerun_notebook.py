"""Re-execute notebooks in place and make their saved outputs fit to commit: `python tools/rerun_notebook.py
nbs/13_evaluation.ipynb ...`

`--cells 1-48,65` re-executes only those cells of one notebook, in order, in one kernel, and replaces only their
outputs: for a notebook whose long training cells must keep their saved outputs (list every cell the chosen ones depend
on).

A saved output must not show this machine's temporary folder (`tests/test_self_contained.py` rejects it), a progress
bar's widget, or the widgets' state; everything else the run printed or drew is kept. Run `nbdev_clean` afterwards."""

import json
import re
import tempfile
from pathlib import Path

_TMP = re.escape(str(Path(tempfile.gettempdir()).resolve()))
MKDTEMP, TMP_ROOT = re.compile(_TMP + r"/tmp\w+"), re.compile(_TMP + "/")
REPO_ROOT = re.compile(re.escape(str(Path(__file__).resolve().parents[1])) + "/")  # a warning's library file path
PROGRESS_BAR = re.compile(r"\d+%\|")  # tqdm's text form: "ShapeRefs:  40%|████      | 320/800"


def sanitise_text(s: str) -> str:
    """Machine temp paths -> `<tmp>/...` (a `tempfile.mkdtemp()` folder collapses to `<tmp>`); the checkout's own
    path -> relative (`ris_nb/...`)."""
    return REPO_ROOT.sub("", TMP_ROOT.sub("<tmp>/", MKDTEMP.sub("<tmp>", s)))


def _is_progress_bar(output: dict) -> bool:
    data = output.get("data", {})
    return "application/vnd.jupyter.widget-view+json" in data and bool(
        PROGRESS_BAR.search("".join(data.get("text/plain", "")))
    )


def sanitise(nb: dict) -> dict:
    "The notebook dict without temp paths in outputs, progress-bar widgets or widget state."
    nb["metadata"].pop("widgets", None)
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        cell["outputs"] = [
            json.loads(sanitise_text(json.dumps(o, ensure_ascii=False)))
            for o in cell.get("outputs", [])
            if not _is_progress_bar(o)
        ]
    return nb


# nbdev's "never run this cell" (Jupyter ignores it)
EVAL_FALSE = re.compile(r"^\s*#\|\s*eval:\s*false\b", re.MULTILINE)


def runnable_cells(path: Path) -> list[int]:
    "Indices of the code cells of `path` that nbdev would run: every one but those marked `#| eval: false`."
    cells = json.loads(path.read_text())["cells"]
    return [i for i, c in enumerate(cells) if c["cell_type"] == "code" and not EVAL_FALSE.search("".join(c["source"]))]


def rerun(path: Path, timeout: int = 3600) -> None:
    """Execute every runnable cell of `path` in its own folder (`#| eval: false` cells keep their outputs); write it
    back sanitised."""
    rerun_cells(path, runnable_cells(path), timeout)


def parse_cells(spec: str) -> list[int]:
    "'1-3,7' -> [1, 2, 3, 7]"
    out = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi or lo) + 1))
    return out


def rerun_cells(path: Path, cells: list[int], timeout: int = 3600) -> None:
    """Execute the code cells `cells` of `path` alone, in order, in its own folder; write back only their outputs,
    sanitised."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    code = [i for i in cells if nb.cells[i].cell_type == "code"]
    sub = nbformat.v4.new_notebook(metadata=nb.metadata, cells=[nb.cells[i] for i in code])
    NotebookClient(
        sub,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
        coalesce_streams=True,
    ).execute()
    done = sanitise(json.loads(nbformat.writes(sub)))
    saved = json.loads(path.read_text())  # re-read: outputs of the other cells stay as they were
    for i, cell in zip(code, done["cells"]):
        saved["cells"][i]["outputs"] = cell["outputs"]
    path.write_text(json.dumps(saved, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="+", type=Path)
    ap.add_argument("--cells", help="re-execute only these cells of one notebook, e.g. 1-48,65")
    args = ap.parse_args()
    if args.cells and len(args.notebooks) != 1:
        ap.error("--cells takes exactly one notebook")
    for p in args.notebooks:
        if args.cells:
            rerun_cells(p, parse_cells(args.cells))
        else:
            rerun(p)
        print(f"re-ran {p}" + (f" (cells {args.cells})" if args.cells else ""))
