"""TinyRefer (02a's first model) as a registered model: its preset trains through the engine and refers above the
language-blind answers on a short run; rows added to a main-table record must share its budget, seeds, languages,
splits and floors."""

import copy
import json
import os
from pathlib import Path

import pytest
import torch

from ris_nb.presets import get_preset
from ris_nb.data.refer import RefDataset
from ris_nb.evaluate import evaluate, language_blind_references
from ris_nb.study_runner import check_addable, merge_main_records, named_main_rows
from ris_nb.training_run import fit, prepare

os.environ.setdefault("TQDM_DISABLE", "1")
RECORD = Path(__file__).resolve().parents[1] / "nbs" / "results" / "main_table.json"


@pytest.fixture(scope="module")
def appearance(shaperefs_data):
    return shaperefs_data(300, 3, 64, "appearance")


# measured at this test's settings (seeds 0 / 1, one thread, 41 / 43 s with the 512³ probe at 1.90 / 2.56 ms):
# val oIoU 36.7 / 35.4 and mIoU 38.0 / 37.2 against 25.3 and 29.6 for the best language-blind answers (+11.5 / +10.1
# oIoU, +8.4 / +7.6 mIoU); the thresholds take about half of those margins
STEPS, MARGIN = 100, {"oIoU": 5.0, "mIoU": 3.5}


def test_tiny_refer_learns_to_refer(appearance, tmp_path):
    torch.set_num_threads(1)
    cfg = get_preset("tiny_refer").override(
        {
            "data.root": str(appearance),
            "data.image_size": 48,
            "train.max_steps": STEPS,
            "train.warmup_steps": STEPS // 5,
            "train.ckpt_every": STEPS,
            "train.out_dir": str(tmp_path),
        }
    )
    _, loaders, model, cfg = prepare(cfg, splits=["train", "val"])
    fit(model, {"train": loaders["train"]}, cfg)
    res = evaluate(model, loaders["val"], protocol="square", progress=False)["overall"]
    blind = language_blind_references(RefDataset(appearance, "shaperefs", "shaperefs", "val"))
    best = {m: max(b[m] for b in blind.values()) for m in ("oIoU", "mIoU")}
    assert all(res[m] > best[m] + MARGIN[m] for m in best), f"tiny_refer val {res} vs the best language-blind {best}"


def record() -> dict:
    return json.loads(RECORD.read_text())


def one_row(rec: dict, name: str) -> dict:
    "`rec` holding only row `name` and its runs, as a call with `--rows name` would write it."
    new = copy.deepcopy(rec)
    new["rows"] = {name: new["rows"][name]}
    new["runs"] = [r for r in new["runs"] if r["row"] == name]
    return new


def test_rows_merge_into_the_record():
    rec = record()
    name = next(iter(rec["rows"]))
    old = {**copy.deepcopy(rec), "rows": {n: r for n, r in rec["rows"].items() if n != name}}
    old["runs"] = [r for r in rec["runs"] if r["row"] != name]
    merged = merge_main_records(old, one_row(rec, name))
    assert list(merged["rows"]) == list(rec["rows"]) and len(merged["runs"]) == len(rec["runs"])
    assert merged["train_s"] == pytest.approx(rec["train_s"])
    assert merged["earlier_calls"][-1]["rows"] == list(old["rows"])
    again = merge_main_records(merged, one_row(rec, name))  # a row held already is replaced, not doubled
    assert len(again["runs"]) == len(rec["runs"])


@pytest.mark.parametrize(
    "change, field",
    [
        (lambda r: r["budget"].update(steps=200), "budget"),
        (lambda r: r["budget"].update(n_images=300), "budget"),
        (lambda r: r.update(seeds=1), "seeds"),
        (lambda r: r.update(languages=["plain"]), "languages"),
        (lambda r: r.update(splits=["val"]), "splits"),
        (lambda r: r["floors"]["rich"]["val"]["all shapes"].update(oIoU=50.0), "floors"),
    ],
)
def test_rows_of_another_budget_are_refused(change, field):
    rec = record()
    new = one_row(rec, next(iter(rec["rows"])))
    change(new)
    with pytest.raises(ValueError, match=f"main_table.json: its {field} is .* rows are added only to a record"):
        check_addable(rec, new, RECORD)
    with pytest.raises(ValueError, match=f"its {field} is"):
        merge_main_records(rec, new, RECORD)


def test_unknown_main_rows_are_refused():
    assert [r.name for r in named_main_rows(["sag", "tiny_refer"])] == ["tiny_refer", "sag"]  # the table's order
    for bad in (["tiny"], []):
        with pytest.raises(ValueError, match="expected names among tiny_refer, lavt"):
            named_main_rows(bad)
