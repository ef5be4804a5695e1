"""`ris_nb experiments` end to end at a toy budget (the mechanics, not the science): every table is written, and a killed
study resumes without re-training its finished runs. The verdict rule itself is tested in 16_experiments."""
import json
import os

import torch

os.environ.setdefault("TQDM_DISABLE", "1")

from ris_nb import experiments as E
from ris_nb.cli import main

TOY = ["--quick", "--seeds", "1", "--steps", "2", "--scenes", "60"]   # two optimizer steps a run, 60 scenes


def result_mtimes(out):
    return {p.parent.parent.name: p.stat().st_mtime_ns for p in out.glob("*/seed0/result.json")}


def test_experiments_cli_writes_tables_and_resumes(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    out = tmp_path / "study"
    assert main(["experiments", *TOY, "--out", str(out)]) == 0
    rows, claims = E.study_rows()
    md = (out / "study.md").read_text()
    for title, _ in E.GROUPS.values(): assert f"## {title}" in md, title
    assert "## Claims" in md and md.count("inconclusive (one seed)") == len(claims)
    study = json.loads((out / "study.json").read_text())
    assert set(study["rows"]) == {r.name for r in rows} and study["runs_done_now"] == len(rows)
    assert (out / "study.png").stat().st_size > 10_000
    before = result_mtimes(out)
    assert set(before) == {r.name for r in rows}

    # killed during one training (its result.json never written) and during a re-evaluation: run the same command again
    (out / "lavt_mg" / "seed0" / "result.json").unlink()
    (out / "sag_infer_max" / "seed0" / "result.json").unlink()
    trained = []
    real = E.train_and_score
    monkeypatch.setattr(E, "train_and_score", lambda cfg: trained.append(cfg.model.name) or real(cfg))
    assert main(["experiments", *TOY, "--out", str(out)]) == 0
    after = result_mtimes(out)
    assert trained == ["lavt"], trained                                   # lavt_mg (a LAVT model) is the only training
    changed = {k for k in after if after[k] != before.get(k)}
    assert changed == {"lavt_mg", "sag_infer_max"}, changed
    assert json.loads((out / "study.json").read_text())["runs_done_now"] == 2

    # a different budget in the same folder is refused, naming the run
    assert main(["experiments", "--quick", "--seeds", "1", "--steps", "3", "--scenes", "60", "--out", str(out)]) == 2
