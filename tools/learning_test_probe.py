"""One run of `tests/test_learning.py`'s budget, with any overrides: where its thresholds come from.

The test's data (800 ShapeRefs scenes, data seed 3, 64 px), `steps` optimizer steps of `--batch` on one thread, the
final weights scored on val: oIoU, the best language-blind answer, cross-referent IoU and the share of masks on the
referred shape (`ris_nb.evaluate.sentence_sensitivity`), and the training seconds with the 512³ probe beside them.

Usage: OMP_NUM_THREADS=1 python tools/learning_test_probe.py --preset magnet_tiny [--steps 300] [--batch 32] [--seed 0]
       [--set train.amp=bf16 model.vision.abs_pos=none ...] [--recipe NAME] [--results nbs/results/learning_tests.csv]
The rows of nbs/results/learning_tests.csv: lavt_tiny and magnet_tiny, seeds 0/1/2, `train.amp=bf16` and float32; the
old recipes (`--recipe old`): lavt_tiny `model.vision.abs_pos=none model.lavt.loss=dice`, magnet_tiny
`model.vision.abs_pos=none model.vision.stem=patch model.vision.depths=[1,1,1,1] model.lavt.refine=0`; magnet_tiny at
200 steps; and the budget the test now runs, `--set data.image_size=48` (`--recipe "48 px"`, and `"old 48 px"` with the
old recipes' overrides added).
`--smoke`: lavt_tiny, 2 steps of 4 on 40 scenes in a temporary folder, the row written to a temporary CSV (seconds).
"""

from __future__ import annotations
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
import torch

from ris_nb.core import parse_override
from ris_nb.presets import get_preset
from ris_nb.machine import probe_ms
from ris_nb.data.refer import RefDataset
from ris_nb.data.shaperefs_files import ensure_shaperefs
from ris_nb.evaluate import evaluate, language_blind_references, sentence_sensitivity
from ris_nb.training_run import fit, prepare

sys.path.insert(0, str(Path(__file__).parent))
from sag_gather_probe import write_row  # noqa: E402


def test_data(root: Path, n_images: int = 800) -> Path:
    "The learning tests' ShapeRefs under `root` (generated once; `n_images` fewer for the smoke run)."
    ensure_shaperefs(root / "shaperefs", n_images=n_images, seed=3, size=64)
    return root


def run(root: Path, preset: str, steps: int, batch: int, seed: int, overrides: dict) -> dict:
    "Train on the test's data, score the final weights on val; the row for the results CSV."
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as out:
        cfg = get_preset(preset).override(
            {
                "data.root": str(root),
                "data.image_size": 64,
                "train.batch_size": batch,
                "seed": seed,
                "train.max_steps": steps,
                "train.ckpt_every": steps,
                "train.out_dir": out,
                **overrides,
            }
        )
        t = time.perf_counter()
        _, loaders, model, cfg = prepare(cfg, splits=["train", "val"])
        fit(model, {"train": loaders["train"]}, cfg)
        train_s = time.perf_counter() - t
    res = evaluate(model, loaders["val"], protocol="square", progress=False)
    sens = sentence_sensitivity(model, loaders["val"])
    blind = language_blind_references(RefDataset(root, "shaperefs", "shaperefs", "val"))
    return {
        "preset": preset,
        "amp": cfg.train.amp,
        "steps": steps,
        "batch": batch,
        "seed": seed,
        "overrides": " ".join(f"{k}={v}" for k, v in overrides.items() if k != "train.amp"),
        "oIoU": round(res["overall"]["oIoU"], 2),
        "best_blind_oIoU": round(max(r["oIoU"] for r in blind.values()), 2),
        "cross_referent_iou": round(sens["cross_referent_iou"], 3),
        "right_shape_pct": round(sens["right_shape"], 1),
        "val_sentences": sens["n"],
        "train_s": round(train_s, 1),
        "probe_1t_ms": round(probe_ms(reps=20), 2),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default=None, help="required but with --smoke")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    ap.add_argument("--recipe", default="preset", help="a name for the overrides in the CSV (e.g. old)")
    ap.add_argument("--data", default=str(Path(tempfile.gettempdir()) / "ris_nb_learning_tests"))
    ap.add_argument("--results", default=None, help="CSV to add the row to (replacing a row of the same name)")
    ap.add_argument("--smoke", action="store_true", help="lavt_tiny, 2 steps of 4 on 40 scenes, temporary files")
    a = ap.parse_args(argv)
    if not a.smoke and a.preset is None:
        ap.error("--preset is required")
    if not a.smoke:
        return probe(a)
    with tempfile.TemporaryDirectory(prefix="learning_test_probe_") as tmp:
        a.preset, a.steps, a.batch, a.data, a.results = "lavt_tiny", 2, 4, tmp, Path(tmp) / "learning_tests.csv"
        probe(a, n_images=40)
        print(f"smoke: {a.results.name}\n{a.results.read_text()}", end="")


def probe(a: argparse.Namespace, n_images: int = 800) -> None:
    "The run `a` asks for, its row printed and added to `a.results` when given."
    overrides = dict(parse_override(s) for s in a.set)
    row = run(test_data(Path(a.data), n_images), a.preset, a.steps, a.batch, a.seed, overrides)
    row = {"row": f"{a.preset}/{row['amp']}/{a.recipe}/{a.steps}x{a.batch}/seed{a.seed}", "recipe": a.recipe, **row}
    print(row)
    if a.results:
        write_row(Path(a.results), row)


if __name__ == "__main__":
    main()
