"""Train `sag_tiny` with `ris_nb train` on one ShapeRefs folder and append one row to a results table: val mIoU beside
the answers that ignore the sentence, the best single entity (the ceiling of any gather), how often A^fuse picks it, the
training wall time and the 512³ matmul probe on one and two threads before and after.

Usage: OMP_NUM_THREADS=2 python tools/sag_language_run.py --data D --out R --row NAME [--set key=value ...]
       [--results nbs/results/sag_languages.csv]
"""

from __future__ import annotations
import argparse
import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path


from ris_nb.machine import probe_ms
from ris_nb.io import write_atomic
from ris_nb.data.refer import RefDataset, language_blind_references
from ris_nb.data.transforms import make_dataloaders
from ris_nb.grounding import shatter_gather
from ris_nb.cli_checks import data_overrides
from ris_nb.run_folder import load_run

COLS = [
    "row",
    "language",
    "scenes",
    "overrides",
    "steps",
    "val_mIoU",
    "val_oIoU",
    "testA_mIoU",
    "testB_mIoU",
    "best_entity_mIoU",
    "picks_best_entity",
    "random_shape_mIoU",
    "largest_shape_mIoU",
    "all_shapes_mIoU",
    "train_eval_s",
    "threads",
    "probe_1t_ms",
    "probe_2t_ms",
]


def append_row(results: Path, row: dict, cols: list[str]) -> None:
    "Replace `row`'s earlier row (same name) in the table `results` (columns `cols`), atomically."
    old = list(csv.DictReader(results.read_text(encoding="utf-8").splitlines())) if results.exists() else []
    buf = io.StringIO()
    w = csv.DictWriter(buf, cols)
    w.writeheader()
    w.writerows([r for r in old if r["row"] != row["row"]] + [row])
    write_atomic(results, lambda tmp: tmp.write_text(buf.getvalue(), encoding="utf-8"))


def probes() -> tuple[float, float]:
    "The 512³ float32 matmul probe (ms) on one and on two threads."
    return probe_ms(threads=1), probe_ms(threads=2)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--row", required=True)
    ap.add_argument("--set", nargs="*", default=[])
    ap.add_argument("--results", type=Path, default=None)
    a = ap.parse_args(argv)
    before = probes()
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "ris_nb", "train", "--preset", "sag_tiny", "--data", str(a.data), "--out", str(a.out)]
    subprocess.run(cmd + (["--set", *a.set] if a.set else []), check=True)
    wall = time.perf_counter() - t0
    after = probes()
    res = json.loads((a.out / "results.json").read_text())
    cfg, tok, model = load_run(a.out / "best.pt", data_overrides(str(a.data)))
    loaders = make_dataloaders(cfg.override({"data.test_splits": []}), tok, splits=["val"])
    sg = shatter_gather(model, loaders["val"])
    blind = language_blind_references(RefDataset(a.data.parent, a.data.name, "shaperefs", "val"))
    meta = json.loads((a.data / "meta.json").read_text())
    row = dict(
        row=a.row,
        language=meta.get("language", "plain"),
        scenes=meta["n_images"],
        overrides=" ".join(a.set),
        steps=cfg.train.max_steps,
        val_mIoU=res["val"]["overall"]["mIoU"],
        val_oIoU=res["val"]["overall"]["oIoU"],
        testA_mIoU=res.get("testA", {}).get("overall", {}).get("mIoU", ""),
        testB_mIoU=res.get("testB", {}).get("overall", {}).get("mIoU", ""),
        best_entity_mIoU=sg["best_slot_mIoU"],
        picks_best_entity=sg["picks_best_slot"],
        random_shape_mIoU=blind["random shape"]["mIoU"],
        largest_shape_mIoU=blind["largest shape"]["mIoU"],
        all_shapes_mIoU=blind["all shapes"]["mIoU"],
        train_eval_s=wall,
        threads=os.environ.get("OMP_NUM_THREADS", ""),
        probe_1t_ms=f"{before[0]:.2f}/{after[0]:.2f}",
        probe_2t_ms=f"{before[1]:.2f}/{after[1]:.2f}",
    )
    row = {k: (f"{v:.1f}" if isinstance(v, float) else v) for k, v in row.items()}
    print(row)
    if a.results:
        append_row(a.results, row, COLS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
