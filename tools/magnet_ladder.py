"""09_magnet's ladder: MagNet trained once per rung of `MAGNET_LADDER`, from the paper's form at tiny size to
`magnet_tiny`, one departure at a time, on the shipped checkpoint's recipe (ShapeRefs' plain language, 600 × 32 at
64 px). One row per rung: val oIoU beside the answers that ignore the sentence, the training wall time and the 512³
matmul probe on one and two threads before and after.

Usage: OMP_NUM_THREADS=1 python tools/magnet_ladder.py --data D --out DIR [--rungs 0 3 ...]
       [--results nbs/results/magnet_ladder.csv]
       python tools/magnet_ladder.py --smoke    (two rungs, 2 steps each, 40 scenes at 64 px, in a temporary folder)
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from ladder_cli import ladder_main  # noqa: E402  (the command line both ladders share)
from sag_language_run import append_row  # noqa: E402  (a sibling script: one results-table writer)

from ris_nb.data.refer import RefDataset, language_blind_references
from ris_nb.data.shaperefs_files import generate
from ris_nb.machine import probe_ms

PAPER_WIDTHS = {  # official code: test.py and modeling/MaskFormerModel.py (magnet_paper's values)
    "model.magnet.hidden_dim": 256,
    "model.magnet.n_heads": 8,
    "model.magnet.enc_layers": 4,
    "model.magnet.enc_ffn": 1024,
    "model.magnet.dec_ffn": 2048,
    "model.mg.width": 256,
    "model.mg.ffn": 1024,
    "model.mg.heads": 8,
}
TINY_WIDTHS = {  # magnet_tiny's values of the same keys
    "model.magnet.hidden_dim": 32,
    "model.magnet.n_heads": 4,
    "model.magnet.enc_layers": 1,
    "model.magnet.enc_ffn": 128,
    "model.magnet.dec_ffn": 128,
    "model.mg.width": 64,
    "model.mg.ffn": 256,
    "model.mg.heads": 4,
}
PAPER_FORM = {  # the paper's form where magnet_tiny departs from it; Swin's and BERT's sizes stay tiny
    **PAPER_WIDTHS,
    "model.magnet.dec_layers": 9,
    "model.vision.stem": "patch",
    "model.vision.abs_pos": "none",
    "model.lavt.refine": 0,
    "model.magnet.offset_init_shift": 0.0,
}
MAGNET_LADDER = (  # (rung, the dotted keys it sets); the last rung is magnet_tiny
    ("paper form", PAPER_FORM),
    ("tiny widths", TINY_WIDTHS),
    ("4 decoder layers", {"model.magnet.dec_layers": 4}),
    ("conv stem", {"model.vision.stem": "conv"}),
    ("sine position", {"model.vision.abs_pos": "sine"}),
    ("refine head", {"model.lavt.refine": 16}),
    ("offset shift 1/64", {"model.magnet.offset_init_shift": 1 / 64}),
)
RECIPE = [
    "data.image_size=64",
    "train.batch_size=32",
    "train.max_steps=600",
    "train.eval_every=300",
    "train.ckpt_every=300",
]  # the shipped magnet_tiny checkpoint's
COLS = [
    "row",
    "scenes",
    "overrides",
    "steps",
    "val_oIoU",
    "val_mIoU",
    "testA_oIoU",
    "testB_oIoU",
    "random_shape_oIoU",
    "largest_shape_oIoU",
    "all_shapes_oIoU",
    "train_eval_s",
    "threads",
    "probe_1t_ms",
    "probe_2t_ms",
]


def ladder_overrides(rung: int) -> dict:
    "`magnet_tiny`'s dotted-key overrides for rung `rung` of `MAGNET_LADDER`: every change up to it."
    fields = {}
    for _, changes in MAGNET_LADDER[: rung + 1]:
        fields.update(changes)
    return fields


def as_flag(value) -> str:
    "A value as `ris_nb train --set` reads it."
    return str(value).lower() if isinstance(value, bool) else str(value)


def train_rung(data: Path, out: Path, sets: list[str]) -> float:
    "Train magnet_tiny with `sets` into `out`; the wall time (s)."
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "ris_nb", "train", "--preset", "magnet_tiny", "--data", str(data), "--out", str(out)]
    subprocess.run(cmd + ["--set", *sets], check=True)
    return time.perf_counter() - t0


def run_rung(data: Path, out: Path, rung: int, results: Path, extra: list[str] = ()) -> dict:
    "Train and score rung `rung` into `out/<rung>`, one row in `results`."
    name = f"{rung} {MAGNET_LADDER[rung][0]}"
    print(f"rung {name}", flush=True)
    sets = [f"{k}={as_flag(v)}" for k, v in ladder_overrides(rung).items()]
    before = probe_ms(threads=1), probe_ms(threads=2)
    run_sets = sets + [*RECIPE, *extra]
    wall = train_rung(data, out / str(rung), run_sets)
    after = probe_ms(threads=1), probe_ms(threads=2)
    res = json.loads((out / str(rung) / "results.json").read_text())
    blind = language_blind_references(RefDataset(data.parent, data.name, "shaperefs", "val"))
    scenes = json.loads((data / "meta.json").read_text())["n_images"]
    row = dict(
        row=name,
        scenes=scenes,
        overrides=" ".join(sets),
        steps=dict(s.split("=", 1) for s in run_sets)["train.max_steps"],
        val_oIoU=res["val"]["overall"]["oIoU"],
        val_mIoU=res["val"]["overall"]["mIoU"],
        testA_oIoU=res.get("testA", {}).get("overall", {}).get("oIoU", ""),
        testB_oIoU=res.get("testB", {}).get("overall", {}).get("oIoU", ""),
        random_shape_oIoU=blind["random shape"]["oIoU"],
        largest_shape_oIoU=blind["largest shape"]["oIoU"],
        all_shapes_oIoU=blind["all shapes"]["oIoU"],
        train_eval_s=wall,
        threads=os.environ.get("OMP_NUM_THREADS", ""),
        probe_1t_ms=f"{before[0]:.2f}/{after[0]:.2f}",
        probe_2t_ms=f"{before[1]:.2f}/{after[1]:.2f}",
    )
    row = {k: (f"{v:.1f}" if isinstance(v, float) else v) for k, v in row.items()}
    print(row, flush=True)
    append_row(results, row, COLS)
    return row


def smoke() -> int:
    "Two rungs (the paper form and magnet_tiny), 2 steps each, on 40 scenes: the script's whole path in seconds."
    with tempfile.TemporaryDirectory() as d:
        data = Path(d, "data", "shaperefs")
        generate(data, n_images=40, seed=0, size=64, verbose=False)
        results = Path(d, "ladder.csv")
        steps = ["train.max_steps=2", "train.eval_every=2", "train.ckpt_every=2", "train.batch_size=8"]
        for rung in (0, len(MAGNET_LADDER) - 1):
            run_rung(data, Path(d, "runs"), rung, results, steps)
        rows = list(csv.DictReader(open(results)))
        assert [r["row"] for r in rows] == ["0 paper form", f"{len(MAGNET_LADDER) - 1} offset shift 1/64"], rows
        print(f"smoke: {len(rows)} rows, val oIoU {[r['val_oIoU'] for r in rows]}")
    return 0


def run_rungs(data: Path, out: Path, rungs: list[int], results: Path) -> None:
    "Train and score each rung into `out/<rung>`, one row each in `results`."
    for rung in rungs:
        run_rung(data, out, rung, results)


def main(argv: list[str] | None = None) -> int:
    description, results = __doc__.split("\n\n")[0], "nbs/results/magnet_ladder.csv"
    return ladder_main(argv, description, MAGNET_LADDER, results, "plain", run_rungs, smoke)


if __name__ == "__main__":
    raise SystemExit(main())
