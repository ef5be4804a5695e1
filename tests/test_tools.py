"tools/rerun_notebook.py: saved outputs lose machine temp paths, progress bars and widget state, and keep the rest."

import importlib.util
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("rerun_notebook", ROOT / "tools" / "rerun_notebook.py")
rerun_notebook = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rerun_notebook)


def test_sanitise_removes_temp_paths_bars_and_widget_state():
    tmp = str(Path(tempfile.gettempdir()).resolve())
    bar = {
        "output_type": "display_data",
        "metadata": {},
        "data": {
            "application/vnd.jupyter.widget-view+json": {"model_id": "x"},
            "text/plain": ["ShapeRefs:  40%|████  | 320/800"],
        },
    }
    app = {
        "output_type": "execute_result",
        "metadata": {},
        "execution_count": 1,
        "data": {
            "application/vnd.jupyter.widget-view+json": {"model_id": "y"},
            "text/plain": ["VBox(children=(Button(),))"],
        },
    }
    text = {
        "output_type": "stream",
        "name": "stdout",
        "text": [f"written to {tmp}/tmpab_12/shaperefs and {tmp}/ris_nb_demo/run\n"],
    }
    nb = {
        "metadata": {"widgets": {"state": {}}},
        "cells": [
            {"cell_type": "code", "source": [], "metadata": {}, "outputs": [bar, app, text]},
            {"cell_type": "markdown", "source": [f"{tmp}/kept in prose"], "metadata": {}},
        ],
    }
    out = rerun_notebook.sanitise(nb)
    assert "widgets" not in out["metadata"]
    outputs = out["cells"][0]["outputs"]
    # the bar goes, the app widget stays
    assert [o["output_type"] for o in outputs] == ["execute_result", "stream"]
    assert outputs[1]["text"] == ["written to <tmp>/shaperefs and <tmp>/ris_nb_demo/run\n"]
    assert out["cells"][1]["source"] == [f"{tmp}/kept in prose"]  # only outputs are rewritten


def _load_tool(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gather_probe_shape_code_tells_square_disc_triangle_apart():
    import torch

    probe = _load_tool("sag_gather_probe")
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    square = ((xx - 10).abs() <= 4) & ((yy - 10).abs() <= 4)
    disc = ((xx - 20) ** 2 + (yy - 20) ** 2) <= 25
    triangle = (yy >= 5) & (yy <= 14) & ((xx - 20).abs() <= (yy - 5) / 2)
    code = probe.shape_moments(torch.stack([square, disc, triangle]).float().flatten(1)[None], (32, 32))[0]
    fill = code[:, 4]
    # a square fills its box, a disc ≈ π/4, a triangle ≈ ½
    assert fill[0] > 0.9 and 0.6 < fill[1] < 0.85 and fill[2] < 0.6
    # only the triangle is not point-symmetric (φ3)
    assert code[2, 2] > code[0, 2] + 5
    shifted = probe.shape_moments(torch.roll(square, (7, 5), (0, 1)).float().flatten()[None, None], (32, 32))[0, 0]
    # the code does not depend on where the shape is
    assert torch.allclose(shifted, code[0], atol=1e-4)


def test_gather_probe_context_fusion_masks_padding_and_sums_to_one():
    import torch

    probe = _load_tool("sag_gather_probe")
    fusion = probe.ContextFusion(16, 2, 8)
    valid = torch.tensor([[True, True, False], [True, True, True]])
    z, a = fusion(torch.randn(4, 16), torch.randn(2, 3, 16), valid)
    assert z.shape == (2, 4, 16) and a.shape == (2, 4, 3)
    assert torch.allclose(a.sum(-1), torch.ones(2, 4)) and (a[0, :, 2] == 0).all()


def test_rerun_cells_replaces_only_the_chosen_outputs(tmp_path):
    import json

    def code(src, out):
        return {
            "cell_type": "code",
            "execution_count": None,
            "id": f"c{len(src)}",
            "metadata": {},
            "source": src,
            "outputs": [{"output_type": "stream", "name": "stdout", "text": out}],
        }

    nb = {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "python3", "language": "python"}},
        "cells": [
            code("x = 41", "old 0\n"),
            code("print('slow')", "saved long run\n"),
            code("print(x + 1)", "stale\n"),
        ],
    }
    p = tmp_path / "nb.ipynb"
    p.write_text(json.dumps(nb))
    assert rerun_notebook.parse_cells("0,2-3") == [0, 2, 3]
    rerun_notebook.rerun_cells(p, [0, 2])
    outs = [c["outputs"] for c in json.loads(p.read_text())["cells"]]

    def text(o):
        return "".join(o[0]["text"])

    assert outs[0] == [] and text(outs[1]) == "saved long run\n" and text(outs[2]) == "42\n"


def test_oracle_gather_scene_entities_are_the_true_shapes(shaperefs_data):
    import numpy as np
    import torch
    from ris_nb.data.refer import RefDataset, scene_masks

    oracle = _load_tool("sag_oracle_gather")
    ds = RefDataset(shaperefs_data(12, 3, 64), "shaperefs", "shaperefs", "train")
    scene = oracle.SceneEntities(ds.refer, 64, (32, 32))
    refs = [ds.index(i)[0] for i in range(min(len(ds), 6))]
    maps, valid, target = scene([r["image_id"] for r in refs], [r["ann_id"] for r in refs])
    for b, r in enumerate(refs):
        shapes = scene_masks(ds.refer, r["image_id"])
        assert valid[b].sum() == len(shapes) and not valid[b, len(shapes) :].any()
        own = torch.from_numpy(np.asarray(shapes[r["ann_id"]], dtype=np.float32))
        pooled = torch.nn.functional.adaptive_avg_pool2d(own[None, None], (32, 32)).flatten()
        # the target's map is the ref's own shape
        assert torch.allclose(maps[b, target[b]], pooled, atol=1e-6)
    assert (maps.sum(1) <= 1 + 1e-5).all()  # visible masks do not overlap


def test_probe_tools_train_on_the_engine(shaperefs_data, tmp_path, monkeypatch, capsys):
    """Both SaG probes run end to end on the library's `Learner` (their loss and parameters from a callback) and
    write a row. Each runs as `python tools/<tool>.py …` would, in this process (a process of its own would import
    torch, transformers and timm again: ≈ 8 CPU s each)."""
    import csv
    import runpy
    import sys

    import torch

    data = shaperefs_data(40, 3, 64) / "shaperefs"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the tools take their thread count from it
    threads = torch.get_num_threads()
    try:
        for tool, extra in [
            ("sag_gather_probe", []),
            ("sag_oracle_gather", ["--loss", "told"]),
            ("sag_oracle_gather", ["--set", "model.sag.in_image_negatives=true"]),
        ]:
            out = tmp_path / f"{tool}.csv"
            args = ["--data", str(data), "--steps", "3", "--results", str(out), "--row", "t", *extra]
            monkeypatch.setattr(sys, "argv", [str(ROOT / "tools" / f"{tool}.py"), *args])
            runpy.run_path(str(ROOT / "tools" / f"{tool}.py"), run_name="__main__")
            assert f"written: {out}" in capsys.readouterr().out
            row = list(csv.DictReader(out.open()))[-1]
            assert row["row"] == "t" and row["steps"] == "3", row
            score = row.get("picks_best_slot") or row["picks"]
            assert 0 <= float(score) <= 100, row
    finally:
        torch.set_num_threads(threads)


def test_move_names_splits_an_import_and_keeps_alias_indent_and_comment():
    spec = importlib.util.spec_from_file_location("move_names", ROOT / "tools" / "move_names.py")
    move_names = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(move_names)
    src = "def f():\n    from ris_nb.core import Config, get_preset as gp  # why\n    return gp\nimport os\n"
    out = move_names.rewrite(src, "ris_nb.core", "ris_nb.presets", {"get_preset"})
    assert out == (
        "def f():\n    from ris_nb.core import Config\n    from ris_nb.presets import get_preset as gp  # why\n"
        "    return gp\nimport os\n"
    )
    assert move_names.rewrite("x = ris_nb.core.get_preset\n", "ris_nb.core", "ris_nb.presets", {"get_preset"}) == (
        "x = ris_nb.core.get_preset\n"
    )
    assert move_names.attribute_uses("ris_nb.core.get_preset()", "ris_nb.core", {"get_preset"}) == [
        "ris_nb.core.get_preset"
    ]
