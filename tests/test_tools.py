"tools/rerun_notebook.py: saved outputs lose machine temp paths, progress bars and widget state, and keep the rest."
import importlib.util, tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("rerun_notebook", ROOT / "tools" / "rerun_notebook.py")
rerun_notebook = importlib.util.module_from_spec(spec); spec.loader.exec_module(rerun_notebook)

def test_sanitise_removes_temp_paths_bars_and_widget_state():
    tmp = str(Path(tempfile.gettempdir()).resolve())
    bar = {"output_type": "display_data", "metadata": {},
           "data": {"application/vnd.jupyter.widget-view+json": {"model_id": "x"}, "text/plain": ["ShapeRefs:  40%|████  | 320/800"]}}
    app = {"output_type": "execute_result", "metadata": {}, "execution_count": 1,
           "data": {"application/vnd.jupyter.widget-view+json": {"model_id": "y"}, "text/plain": ["VBox(children=(Button(),))"]}}
    text = {"output_type": "stream", "name": "stdout", "text": [f"written to {tmp}/tmpab_12/shaperefs and {tmp}/ris_nb_demo/run\n"]}
    nb = {"metadata": {"widgets": {"state": {}}}, "cells": [
        {"cell_type": "code", "source": [], "metadata": {}, "outputs": [bar, app, text]},
        {"cell_type": "markdown", "source": [f"{tmp}/kept in prose"], "metadata": {}}]}
    out = rerun_notebook.sanitise(nb)
    assert "widgets" not in out["metadata"]
    outputs = out["cells"][0]["outputs"]
    assert [o["output_type"] for o in outputs] == ["execute_result", "stream"]        # the bar goes, the app widget stays
    assert outputs[1]["text"] == ["written to <tmp>/shaperefs and <tmp>/ris_nb_demo/run\n"]
    assert out["cells"][1]["source"] == [f"{tmp}/kept in prose"]                      # only outputs are rewritten
