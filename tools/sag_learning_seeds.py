"""The measurements behind `tests/test_learning.py::test_sag_tiny_learns_from_text`: the same training (`train_sag`,
imported from the test so that both stay one recipe) for several seeds, with the probe, appended to a results table.

Usage: OMP_NUM_THREADS=1 python tools/sag_learning_seeds.py --seeds 0 1 2 [--old] [--results
nbs/results/sag_learning_test.csv] `--old`: the previous preset (the slots themselves as entities, no appearance code),
which the thresholds must reject. `--smoke`: seed 0, 2 steps of 4 on 40 scenes, the row written to a temporary CSV and
printed (seconds).
"""

from __future__ import annotations
import argparse
import csv
import io
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_learning import SAG_STEPS, train_sag  # noqa: E402
from ris_nb.machine import probe_ms  # noqa: E402
from ris_nb.io import write_atomic  # noqa: E402
from ris_nb.data.shaperefs_files import generate  # noqa: E402

SMOKE = {"train.max_steps": 2, "train.eval_every": 2, "train.ckpt_every": 2, "train.batch_size": 4}
OLD = {"model.sag.entity_pieces": 0, "model.sag.entity_appearance": False, "model.sag.slot_vector": True}
COLS = [
    "recipe",
    "seed",
    "steps",
    "val_mIoU",
    "best_blind_mIoU",
    "picks_best_entity",
    "best_entity_mIoU",
    "train_s",
    "probe_1t_ms",
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--old", action="store_true")
    ap.add_argument("--results", type=Path, default=None)
    ap.add_argument("--smoke", action="store_true", help="seed 0, 2 steps of 4 on 40 scenes, temporary files")
    a = ap.parse_args(argv)
    if not a.smoke:
        return measure(a, Path(tempfile.mkdtemp()))
    with tempfile.TemporaryDirectory(prefix="sag_learning_seeds_") as tmp:
        a.seeds, a.results = [0], Path(tmp) / "sag_learning_test.csv"
        measure(a, Path(tmp), n_images=40, upd=SMOKE)
        print(f"smoke: {a.results.name}\n{a.results.read_text()}", end="")
    return 0


def measure(a: argparse.Namespace, root: Path, n_images: int = 800, upd: dict | None = None) -> int:
    "Train and score each of `a.seeds` on the test's data generated under `root`; the rows added to `a.results`."
    # the test's fixture
    generate(root / "shaperefs", n_images=n_images, seed=3, size=64, language="appearance", verbose=False)
    rows = []
    for seed in a.seeds:
        p0, t0 = probe_ms(threads=1), time.perf_counter()
        m, sg, blind = train_sag(root, seed, {**(OLD if a.old else {}), **(upd or {})})
        rows.append(
            dict(
                recipe="old (slots)" if a.old else "sag_tiny",
                seed=seed,
                steps=(upd or {}).get("train.max_steps", SAG_STEPS),
                val_mIoU=f"{m:.1f}",
                best_blind_mIoU=f"{max(r['mIoU'] for r in blind.values()):.1f}",
                picks_best_entity=f"{sg['picks_best_slot']:.1f}",
                best_entity_mIoU=f"{sg['best_slot_mIoU']:.1f}",
                train_s=f"{time.perf_counter() - t0:.0f}",
                probe_1t_ms=f"{p0:.2f}/{probe_ms(threads=1):.2f}",
            )
        )
        print(rows[-1], flush=True)
    if a.results:
        old = list(csv.DictReader(open(a.results))) if a.results.exists() else []
        keep = [r for r in old if (r["recipe"], r["seed"]) not in {(x["recipe"], str(x["seed"])) for x in rows}]
        buf = io.StringIO()
        w = csv.DictWriter(buf, COLS)
        w.writeheader()
        w.writerows(keep + rows)
        write_atomic(a.results, lambda tmp: tmp.write_text(buf.getvalue(), encoding="utf-8"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
