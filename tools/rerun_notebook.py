"""Re-execute notebooks in place and make their saved outputs fit to commit: `python tools/rerun_notebook.py nbs/13_evaluation.ipynb ...`

A saved output must not show this machine's temporary folder (`tests/test_self_contained.py` rejects it), a progress bar's
widget, or the widgets' state; everything else the run printed or drew is kept. Run `nbdev_clean` afterwards."""
import json, re, sys, tempfile
from pathlib import Path

_TMP = re.escape(str(Path(tempfile.gettempdir()).resolve()))
MKDTEMP, TMP_ROOT = re.compile(_TMP + r"/tmp\w+"), re.compile(_TMP + "/")
PROGRESS_BAR = re.compile(r"\d+%\|")          # tqdm's text form: "ShapeRefs:  40%|████      | 320/800"

def sanitise_text(s: str) -> str:
    "Machine temp paths -> `<tmp>/...`; a `tempfile.mkdtemp()` folder collapses to `<tmp>`."
    return TMP_ROOT.sub("<tmp>/", MKDTEMP.sub("<tmp>", s))

def _is_progress_bar(output: dict) -> bool:
    data = output.get("data", {})
    return "application/vnd.jupyter.widget-view+json" in data and bool(PROGRESS_BAR.search("".join(data.get("text/plain", ""))))

def sanitise(nb: dict) -> dict:
    "The notebook dict without temp paths in outputs, progress-bar widgets or widget state."
    nb["metadata"].pop("widgets", None)
    for cell in nb["cells"]:
        if cell["cell_type"] != "code": continue
        cell["outputs"] = [json.loads(sanitise_text(json.dumps(o, ensure_ascii=False))) for o in cell.get("outputs", [])
                           if not _is_progress_bar(o)]
    return nb

def rerun(path: Path, timeout: int = 3600) -> None:
    "Execute `path` in its own folder, then write it back sanitised."
    import nbformat
    from nbclient import NotebookClient
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    path.write_text(json.dumps(sanitise(json.loads(nbformat.writes(nb))), indent=1, ensure_ascii=False) + "\n")

if __name__ == "__main__":
    for p in sys.argv[1:]: rerun(Path(p)); print(f"re-ran {p}")
