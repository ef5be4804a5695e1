"""Add the finished runs of a quickstart-budget Mask Grounding study to the committed records.

    python tools/mg_quickstart_record.py runs/mg_qs_plain

The study folder is one made by `ris_nb experiments --only magnet --rows lavt,lavt_mg,magnet_no_mg,magnet --scenes 3000
--steps 1800 --language L ...`. Each finished (row, seed) not yet recorded becomes a line of
`nbs/results/mg_quickstart_<L>.csv`; the study's three language-blind answers on its val split replace L's lines in
`nbs/results/mg_quickstart_floors.csv`. A run of another budget is refused.

    python tools/mg_quickstart_record.py --smoke

runs a real study of the same rows at a tiny budget (`SMOKE`: 40 scenes, 2 steps, one seed) in a temporary folder and
records it twice in temporary CSVs (the second time adds nothing), then prints them (seconds).
"""

import argparse
import csv
import json
import tempfile
from pathlib import Path

from ris_nb.io import write_atomic

RESULTS = Path(__file__).resolve().parents[1] / "nbs" / "results"
BUDGET = {"n_images": 3000, "steps": 1800, "batch_size": 32, "image_size": 64, "data_seed": 3}
SMOKE = {"n_images": 40, "steps": 2, "batch_size": 32, "image_size": 64, "data_seed": 3}
ROWS = "lavt,lavt_mg,magnet_no_mg,magnet"
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


def check_budget(study: dict, where: Path, budget: dict = BUDGET) -> str:
    "The study's language, after checking its budget is the quickstart's (`budget`)."
    b = study["budget"]
    wrong = {k: b[k] for k, v in budget.items() if b[k] != v}
    if wrong:
        raise SystemExit(f"{where}: budget {wrong}, expected the quickstart's {budget}")
    return b["language"]


def run_line(study: dict, row: str, seed: int, res: dict, budget: dict = BUDGET) -> dict:
    "One CSV line of a finished run, checked against the study's budget and the row's Mask Grounding switch."
    c, lang = res["config"], study["budget"]["language"]
    assert res["language"] == lang and c["seed"] == seed and res["data"]["n_images"] == budget["n_images"]
    assert c["train"]["max_steps"] == budget["steps"] and c["train"]["batch_size"] == budget["batch_size"]
    return {
        "row": row,
        "preset": study["rows"][row]["preset"],
        "seed": seed,
        "language": lang,
        "scenes": budget["n_images"],
        "steps": budget["steps"],
        "batch": budget["batch_size"],
        "image_size": budget["image_size"],
        "val_oIoU": round(res["overall"]["oIoU"], 2),
        "val_mIoU": round(res["overall"]["mIoU"], 2),
        "train_s": round(res["train_s"]),
        "probe_1t_ms": round(res["probe_ms"], 2),
        "finished": res["finished"],
    }


def record(folder: Path, results: Path = RESULTS, budget: dict = BUDGET) -> None:
    "Add the finished runs of the study in `folder` to the CSVs in `results`; its floors replace its language's."
    study = json.loads((folder / "study.json").read_text())
    lang = check_budget(study, folder / "study.json", budget)
    runs_csv = results / f"mg_quickstart_{lang}.csv"
    old = read_csv(runs_csv)
    have = {(r["row"], int(r["seed"])) for r in old}
    new = [
        run_line(study, row, int(p.parent.name.removeprefix("seed")), json.loads(p.read_text()), budget)
        for row in study["rows"]
        for p in sorted((folder / row).glob("seed*/result.json"))
        if (row, int(p.parent.name.removeprefix("seed"))) not in have
    ]
    write_csv(runs_csv, RUN_FIELDS, old + sorted(new, key=lambda r: r["finished"]))
    floors_csv = results / "mg_quickstart_floors.csv"
    floors = [r for r in read_csv(floors_csv) if r["language"] != lang] + [
        {"language": lang, "answer": k, "val_oIoU": round(v["oIoU"], 3), "val_mIoU": round(v["mIoU"], 3), "n": v["n"]}
        for k, v in study["blind"].items()
    ]
    write_csv(floors_csv, FLOOR_FIELDS, floors)
    print(f"{runs_csv.name}: {len(new)} runs added ({len(old) + len(new)} in all); {floors_csv.name}: {lang}'s floors")


def smoke() -> None:
    "A study of `ROWS` at the `SMOKE` budget (one seed), recorded twice in a temporary folder; the CSVs printed."
    from ris_nb.__main__ import main as ris_nb

    with tempfile.TemporaryDirectory(prefix="mg_quickstart_record_") as tmp:
        study = Path(tmp) / "study"
        args = ["experiments", "--only", "magnet", "--rows", ROWS, "--seeds", "1", "--jobs", "1", "--threads", "1"]
        args += ["--scenes", str(SMOKE["n_images"]), "--steps", str(SMOKE["steps"]), "--out", str(study)]
        assert ris_nb(args) == 0
        for _ in range(2):  # the second time: every run is recorded already
            record(study, Path(tmp), SMOKE)
        for f in sorted(Path(tmp).glob("*.csv")):
            print(f"smoke: {f.name}\n{f.read_text()}", end="")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study", type=Path, nargs="?", help="the study folder (holds study.json)")
    ap.add_argument("--smoke", action="store_true", help="a tiny study recorded in a temporary folder (seconds)")
    a = ap.parse_args(argv)
    if a.smoke:
        return smoke()
    if a.study is None:
        ap.error("the study folder is required")
    record(a.study)


if __name__ == "__main__":
    main()
