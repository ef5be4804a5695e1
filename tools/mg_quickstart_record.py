"""Add the finished runs of a quickstart-budget Mask Grounding study to the committed records.

    python tools/mg_quickstart_record.py runs/mg_qs_plain

The study folder is one made by `ris_nb experiments --only magnet --rows lavt,lavt_mg,magnet_no_mg,magnet --scenes 3000
--steps 1800 --language L ...`. Each finished (row, seed) not yet recorded becomes a line of
`nbs/results/mg_quickstart_<L>.csv`; the study's three language-blind answers on its val split replace L's lines in
`nbs/results/mg_quickstart_floors.csv`. A run of another budget is refused.
"""

import argparse
import csv
import json
from pathlib import Path

from ris_nb.io import write_atomic

RESULTS = Path(__file__).resolve().parents[1] / "nbs" / "results"
BUDGET = {"n_images": 3000, "steps": 1800, "batch_size": 32, "image_size": 64, "data_seed": 3}
RUN_FIELDS = [
    "row",
    "preset",
    "seed",
    "language",
    "scenes",
    "steps",
    "batch",
    "image_size",
    "val_oIoU",
    "val_mIoU",
    "train_s",
    "probe_1t_ms",
    "finished",
]
FLOOR_FIELDS = ["language", "answer", "val_oIoU", "val_mIoU", "n"]


def write_csv(path: Path, fields: list[str], rows: list[dict]) -> None:
    "Write `rows` to `path` through a temporary sibling (`ris_nb.io.write_atomic`: no half-written record)."

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
            w.writeheader()
            w.writerows(rows)

    write_atomic(path, write)


def read_csv(path: Path) -> list[dict]:
    return list(csv.DictReader(path.open())) if path.is_file() else []


def check_budget(study: dict, where: Path) -> str:
    "The study's language, after checking its budget is the quickstart's."
    b = study["budget"]
    wrong = {k: b[k] for k, v in BUDGET.items() if b[k] != v}
    if wrong:
        raise SystemExit(f"{where}: budget {wrong}, expected the quickstart's {BUDGET}")
    return b["language"]


def run_line(study: dict, row: str, seed: int, res: dict) -> dict:
    "One CSV line of a finished run, checked against the study's budget and the row's Mask Grounding switch."
    c, lang = res["config"], study["budget"]["language"]
    assert res["language"] == lang and c["seed"] == seed and res["data"]["n_images"] == BUDGET["n_images"]
    assert c["train"]["max_steps"] == BUDGET["steps"] and c["train"]["batch_size"] == BUDGET["batch_size"]
    return {
        "row": row,
        "preset": study["rows"][row]["preset"],
        "seed": seed,
        "language": lang,
        "scenes": BUDGET["n_images"],
        "steps": BUDGET["steps"],
        "batch": BUDGET["batch_size"],
        "image_size": BUDGET["image_size"],
        "val_oIoU": round(res["overall"]["oIoU"], 2),
        "val_mIoU": round(res["overall"]["mIoU"], 2),
        "train_s": round(res["train_s"]),
        "probe_1t_ms": round(res["probe_ms"], 2),
        "finished": res["finished"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study", type=Path, help="the study folder (holds study.json)")
    folder = ap.parse_args().study
    study = json.loads((folder / "study.json").read_text())
    lang = check_budget(study, folder / "study.json")
    runs_csv = RESULTS / f"mg_quickstart_{lang}.csv"
    old = read_csv(runs_csv)
    have = {(r["row"], int(r["seed"])) for r in old}
    new = [
        run_line(study, row, int(p.parent.name.removeprefix("seed")), json.loads(p.read_text()))
        for row in study["rows"]
        for p in sorted((folder / row).glob("seed*/result.json"))
        if (row, int(p.parent.name.removeprefix("seed"))) not in have
    ]
    write_csv(runs_csv, RUN_FIELDS, old + sorted(new, key=lambda r: r["finished"]))
    floors_csv = RESULTS / "mg_quickstart_floors.csv"
    floors = [r for r in read_csv(floors_csv) if r["language"] != lang] + [
        {"language": lang, "answer": k, "val_oIoU": round(v["oIoU"], 3), "val_mIoU": round(v["mIoU"], 3), "n": v["n"]}
        for k, v in study["blind"].items()
    ]
    write_csv(floors_csv, FLOOR_FIELDS, floors)
    print(f"{runs_csv.name}: {len(new)} runs added ({len(old) + len(new)} in all); {floors_csv.name}: {lang}'s floors")


if __name__ == "__main__":
    main()
