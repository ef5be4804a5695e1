"""`ris_nb experiments` end to end at a toy budget (the mechanics, not the science): every table is written, and a
killed study (or main table) resumes without re-training its finished runs. The verdict rule itself is tested in
16_experiments."""

import json
import os
from dataclasses import replace

import pytest
import torch

os.environ.setdefault("TQDM_DISABLE", "1")

from ris_nb import experiments as E
from ris_nb import study_design as D
from ris_nb import study_report as R
from ris_nb import study_runner as S
from ris_nb.__main__ import main  # the whole command: `python -m ris_nb` (99_app)
from ris_nb.data.refer import Refer

# two optimizer steps a run, 60 scenes
TOY = ["--quick", "--seeds", "1", "--steps", "2", "--scenes", "60", "--jobs", "1"]


def result_mtimes(out):
    return {p.parent.parent.name: p.stat().st_mtime_ns for p in out.glob("*/seed0/result.json")}


def test_experiments_cli_writes_tables_and_resumes(tmp_path, monkeypatch):
    """MagNet's rows through the CLI (SaG's go through the same code in the parallel test below)."""
    torch.set_num_threads(1)
    out = tmp_path / "study"
    toy = TOY + ["--only", "magnet"]
    assert main(["experiments", *toy, "--out", str(out)]) == 0
    rows, claims = D.study_rows("magnet")
    md = (out / "study.md").read_text()
    assert f"## {R.GROUPS['magnet'][0]}" in md and "## SaG" not in md
    assert "## Claims" in md and md.count("inconclusive (one seed)") == len(claims)
    study = json.loads((out / "study.json").read_text())
    assert set(study["rows"]) == {r.name for r in rows} and study["runs_done_now"] == len(rows)
    assert (out / "study.png").stat().st_size > 10_000
    before = result_mtimes(out)
    assert set(before) == {r.name for r in rows}

    # killed during one training (its result.json never written): run the same command again
    (out / "lavt_mg" / "seed0" / "result.json").unlink()
    trained = []
    real = E.train_and_score
    monkeypatch.setattr(  # where `run_one` looks it up
        S, "train_and_score", lambda cfg, cbs=(), **kw: trained.append(cfg.model.name) or real(cfg, cbs, **kw)
    )
    assert main(["experiments", *toy, "--out", str(out)]) == 0
    after = result_mtimes(out)
    assert trained == ["lavt"], trained  # lavt_mg (a LAVT model) is the only training
    changed = {k for k in after if after[k] != before.get(k)}
    assert changed == {"lavt_mg"}, changed
    assert json.loads((out / "study.json").read_text())["runs_done_now"] == 1

    # a different budget in the same folder is refused, naming the run
    assert (
        main(
            [
                "experiments",
                "--quick",
                "--seeds",
                "1",
                "--steps",
                "3",
                "--scenes",
                "60",
                "--only",
                "magnet",
                "--out",
                str(out),
            ]
        )
        == 2
    )


def test_parallel_study_matches_serial_and_resumes(tmp_path):
    """--jobs 2 (two spawned processes, one thread each) gives the very numbers of --jobs 1, and resumes the same
    way."""
    serial, par = tmp_path / "serial", tmp_path / "parallel"
    toy = TOY[:-2] + ["--only", "sag"]  # TOY without its --jobs 1
    torch.set_num_threads(1)  # the same float sums in both: one thread per run
    assert main(["experiments", *toy, "--jobs", "1", "--out", str(serial)]) == 0
    torch.set_num_threads(2)  # shared out between the two pool processes: one each
    assert main(["experiments", *toy, "--jobs", "2", "--out", str(par)]) == 0
    a, b = (json.loads((d / "study.json").read_text()) for d in (serial, par))
    md = (par / "study.md").read_text()
    assert all(f"## {title}" in md for g, (title, _) in R.GROUPS.items() if g.startswith("sag")), md[:500]
    assert b["jobs"] == 2 and b["runs_done_now"] == len(D.sag_rows())
    for name, row in a["rows"].items():
        assert row["overall"] == b["rows"][name]["overall"], name
        assert row["by_type"] == b["rows"][name]["by_type"], name
    before = result_mtimes(par)
    (par / "sag" / "seed0" / "result.json").unlink()  # the source of the four inference rows: they are re-scored too
    assert main(["experiments", *toy, "--jobs", "2", "--out", str(par)]) == 0
    changed = {k for k, t in result_mtimes(par).items() if t != before.get(k)}
    assert changed == {"sag", "sag_infer_weighted", "sag_infer_max", "sag_infer_avg", "sag_infer_min"}, changed
    assert json.loads((par / "study.json").read_text())["runs_done_now"] == 5
    before = result_mtimes(par)
    # an inference row alone: re-scored from the kept checkpoint
    (par / "sag_infer_max" / "seed0" / "result.json").unlink()
    assert main(["experiments", *toy, "--jobs", "2", "--out", str(par)]) == 0
    assert {k for k, t in result_mtimes(par).items() if t != before.get(k)} == {"sag_infer_max"}


def test_jobs_must_be_positive(tmp_path):
    assert main(["experiments", *TOY[:-2], "--jobs", "0", "--out", str(tmp_path / "s")]) == 2


def test_study_data_follows_the_budgets_language(tmp_path):
    """`--language rich` generates the rich sentences once; a folder made with the other language is refused, naming
    both."""
    rich = replace(E.QUICK, n_images=20, language="rich")
    d = D.study_data(tmp_path, rich)
    assert json.loads((d / "meta.json").read_text())["language"] == "rich"
    refs = Refer(tmp_path / "data", "shaperefs", "shaperefs").refs.values()
    assert all("rare" in s for r in refs for s in r["sentences"])  # the rich generator tags every sentence
    assert D.study_data(tmp_path, rich) == d  # reused, not regenerated
    with pytest.raises(ValueError, match="'language': 'rich'.*'language': 'plain'"):
        D.study_data(tmp_path, replace(rich, language="plain"))
    with pytest.raises(SystemExit) as e:  # argparse's choices: usage line, exit 2
        main(["experiments", "--quick", "--language", "klingon", "--out", str(tmp_path / "x")])
    assert e.value.code == 2 and not (tmp_path / "x").exists()


def test_main_table_cli_writes_the_record_and_resumes(tmp_path):
    """`--table main`: five methods × three languages × val/testA/testB in one record; a lost run is the only one
    re-trained; the ablation study's options are refused with it; `--rows` adds rows to the record."""
    torch.set_num_threads(1)
    out, record = tmp_path / "main", tmp_path / "results" / "main_table.json"
    assert main(["experiments", "--table", "main", *TOY, "--out", str(out), "--record", str(record)]) == 0
    rec = json.loads(record.read_text())
    assert rec == json.loads((out / "main_table.json").read_text())
    assert rec["languages"] == ["plain", "appearance", "rich"] and rec["splits"] == ["val", "testA", "testB"]
    assert len(rec["runs"]) == 15 and rec["runs_done_now"] == 15
    for name, row in rec["rows"].items():
        for lang in rec["languages"]:
            for sp in rec["splits"]:
                assert 0 <= row["scores"][lang][sp][row["metric"]][0] <= 100, (name, lang, sp)
    assert {f for fl in rec["floors"].values() for s in fl.values() for f in s} == set(R.FLOOR_NAMES)
    md = (out / "main_table.md").read_text()
    assert all("| " + " | ".join(r) + " |" in md for r in R.main_table_rows(rec))
    lost = out / "rich" / "sag" / "seed0" / "result.json"
    before = {p: p.stat().st_mtime_ns for p in out.glob("*/*/seed0/result.json") if p != lost}
    lost.unlink()
    assert main(["experiments", "--table", "main", *TOY, "--out", str(out)]) == 0
    assert all(p.stat().st_mtime_ns == t for p, t in before.items()) and lost.exists()
    assert json.loads((out / "main_table.json").read_text())["runs_done_now"] == 1
    for extra in (["--only", "sag"], ["--language", "rich"], ["--rows", "lavt,nope"]):
        assert main(["experiments", "--table", "main", *TOY, *extra, "--out", str(tmp_path / "x")]) == 2
    assert main(["experiments", *TOY, "--record", str(record), "--out", str(tmp_path / "y")]) == 2
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    # --rows adds its rows to the record, whose other rows' folders are gone; another budget is refused
    one = ["experiments", "--table", "main", *TOY, "--rows", "tiny_refer", "--record", str(record)]
    assert main([*one, "--out", str(tmp_path / "z")]) == 0
    merged = json.loads(record.read_text())
    assert list(merged["rows"]) == list(rec["rows"]) and len(merged["runs"]) == 15
    assert merged["runs_done_now"] == 3 and merged["earlier_calls"][0]["runs_done_now"] == 15
    assert main([*one, "--steps", "3", "--out", str(tmp_path / "w")]) == 2
    assert json.loads(record.read_text()) == merged


@pytest.mark.parametrize("score", ["Infinity", "-50.0", "1e308", "NaN"])
def test_a_study_record_with_an_impossible_score_is_named_and_redone(tmp_path, score):
    """Issue 86, item 4 (6.1–6.4): an IoU that is no finite number from 0 to 100 is a damaged record, named in one
    line and run again (was: reused and tabulated as `inf`, `-50.0`, a 309-digit number, or `–` without a word)."""
    import warnings

    from ris_nb.presets import get_preset

    cfg = get_preset("lavt_tiny")
    rec = {"row": "lavt", "seed": 0, "run_id": "x", "config": cfg.to_dict()}
    (tmp_path / "result.json").write_text(json.dumps(rec)[:-1] + f', "overall": {{"oIoU": {score}, "n": 8}}}}')
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert S.finished(tmp_path, cfg) is None
    msgs = [str(x.message) for x in w]
    assert len(msgs) == 1 and "\n" not in msgs[0], msgs
    assert f"result.json: overall.oIoU={float(score)!r}: expected a finite number, from 0 to 100" in msgs[0], msgs
    assert msgs[0].endswith("running it again"), msgs
    for sound in ('{"oIoU": 0, "n": 0}', '{"oIoU": 100.0, "n": 8}'):  # the range's ends: reused
        (tmp_path / "result.json").write_text(json.dumps(rec)[:-1] + f', "overall": {sound}}}')
        assert S.finished(tmp_path, cfg)["overall"] == json.loads(sound)
    (tmp_path / "result.json").write_text(json.dumps({**rec, "overall": {"oIoU": 40.0, "n": -1}}))
    with pytest.warns(UserWarning, match=r"overall\.n=-1: expected a finite number, 0 or more"):
        assert S.finished(tmp_path, cfg) is None
