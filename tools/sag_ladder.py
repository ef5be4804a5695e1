"""11_sag's ladder: `sag_tiny` trained once per rung of `ris_nb.models.sag.SAG_LADDER` (from the paper's SaG fields to
`sag_tiny`, one departure at a time), each rung a row of `tools/sag_language_run.py` (val mIoU beside the floors, the
best single entity, the probe) in one results table.

Usage: OMP_NUM_THREADS=1 python tools/sag_ladder.py --data D --out DIR [--rungs 0 3 ...]
       [--results nbs/results/sag_ladder.csv]
       python tools/sag_ladder.py --smoke    (two rungs, 2 steps each, 40 scenes at 64 px, in a temporary folder)
"""

from __future__ import annotations

import csv
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import sag_language_run  # noqa: E402  (a sibling script)
from ladder_cli import ladder_main  # noqa: E402  (the command line both ladders share)

from ris_nb.data.shaperefs_files import generate  # noqa: E402
from ris_nb.models.sag import SAG_LADDER, ladder_overrides  # noqa: E402


def as_flag(value) -> str:
    "A value as `ris_nb train --set` reads it."
    return str(value).lower() if isinstance(value, bool) else str(value)


def rung_sets(rung: int) -> list[str]:
    "`--set` items of rung `rung`."
    return [f"{k}={as_flag(v)}" for k, v in ladder_overrides(rung).items()]


def run_rungs(data: Path, out: Path, rungs: list[int], results: Path, extra: list[str] = ()) -> None:
    "Train and score each rung into `out/<rung>`, one row each in `results`."
    for k in rungs:
        row = f"{k} {SAG_LADDER[k][0]}"
        print(f"rung {row}", flush=True)
        argv = ["--data", str(data), "--out", str(out / str(k)), "--row", row, "--results", str(results)]
        sag_language_run.main(argv + ["--set", *rung_sets(k), *extra])


def smoke() -> int:
    "Two rungs (the paper form and sag_tiny), 2 steps each, on 40 scenes: the script's whole path in seconds."
    with tempfile.TemporaryDirectory() as d:
        data = Path(d, "data", "shaperefs")
        generate(data, n_images=40, seed=0, size=64, verbose=False, language="appearance")
        results = Path(d, "ladder.csv")
        steps = ["train.max_steps=2", "train.eval_every=2", "train.ckpt_every=2", "train.batch_size=8"]
        run_rungs(data, Path(d, "runs"), [0, len(SAG_LADDER) - 1], results, steps)
        rows = list(csv.DictReader(open(results)))
        assert [r["row"] for r in rows] == ["0 paper form", f"{len(SAG_LADDER) - 1} pieces"], rows
        print(f"smoke: {len(rows)} rows, val mIoU {[r['val_mIoU'] for r in rows]}")
    return 0


def main(argv: list[str] | None = None) -> int:
    description, results = __doc__.split("\n\n")[0], "nbs/results/sag_ladder.csv"
    return ladder_main(argv, description, SAG_LADDER, results, "appearance", run_rungs, smoke)


if __name__ == "__main__":
    raise SystemExit(main())
