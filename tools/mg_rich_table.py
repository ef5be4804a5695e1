"""The MG diagnosis rows on the rich-language ShapeRefs: evaluate the last checkpoint of each run on val and write one
row per run (preset, MG weight, other MG settings that differ from the preset, train.amp, seed; overall, per expression
type, sentences with and without a rare word) to a CSV that `13a_learning` reads.

    python tools/mg_rich_table.py --runs RUN_DIR [RUN_DIR ...] --out nbs/results/mg_rich_13a.csv
    python tools/mg_rich_table.py --smoke   # lavt_mg_tiny, 2 steps on 40 rich scenes, its row (temporary files)
"""

from __future__ import annotations
import argparse
import csv
import io
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from ris_nb.core import Config
from ris_nb.presets import get_preset
from ris_nb.io import write_atomic
from ris_nb.evaluate import evaluate
from ris_nb.training_run import fit, prepare
from ris_nb.checkpoints import checkpoint_paths, load_checkpoint


def miou(rows: list[dict]) -> float:
    return 100 * float(np.mean([r["IoU"] for r in rows])) if rows else float("nan")


def mg_changes(cfg: Config) -> str:
    "The Mask Grounding settings that differ from the run's preset, as `field=value; ...` (empty for the preset's own)."
    mine, preset = cfg.to_dict()["model"]["mg"], get_preset(cfg.name).to_dict()["model"]["mg"]
    return "; ".join(f"mg.{k}={v}" for k, v in mine.items() if v != preset[k] and k != "weight")


def run_row(run: Path) -> dict:
    "One run's last checkpoint on val: preset, seed, samples, oIoU, mIoU, per type, rare / common."
    cfg = Config.from_dict(json.loads((run / "config.json").read_text()))
    _, loaders, model, cfg = prepare(cfg, ["val"])
    last = checkpoint_paths(run)[0]
    ck = load_checkpoint(last)
    model.load_state_dict(ck["model"])
    res = evaluate(model, loaders["val"], progress=False)
    refer = loaders["val"].dataset.base.refer
    rare = {s["sent_id"]: bool(s.get("rare")) for r in refer.refs.values() for s in r["sentences"]}
    samples = res["samples"]
    row = {
        "preset": cfg.name,
        "mg_weight": cfg.model.mg.weight if cfg.model.mg.enabled else "",
        "mg_changes": mg_changes(cfg),
        "amp": cfg.train.amp,
        "seed": cfg.seed,
        "step": ck["step"],
        "samples": ck["step"] * cfg.train.batch_size,
        "oIoU": round(res["overall"]["oIoU"], 2),
        "mIoU": round(res["overall"]["mIoU"], 2),
    }
    row.update({t: round(v["mIoU"], 2) for t, v in sorted(res["by_type"].items())})
    row["rare_mIoU"] = round(miou([s for s in samples if rare[s["sent_id"]]]), 2)
    row["common_mIoU"] = round(miou([s for s in samples if not rare[s["sent_id"]]]), 2)
    row["n_rare"] = sum(rare[s["sent_id"]] for s in samples)
    t = run.with_suffix(".time")
    row["wall_s"] = float(t.read_text().split()[0]) if t.exists() else ""
    return row


def train_smoke_run(root: Path) -> Path:
    "The smoke run's folder: lavt_mg_tiny trained 2 steps of 4 on 40 rich-language scenes generated under `root`."
    from ris_nb.data.shaperefs_files import generate

    generate(root / "data" / "shaperefs", n_images=40, seed=0, size=64, language="rich", verbose=False)
    over = {"data.root": str(root / "data"), "data.image_size": 64, "train.batch_size": 4, "train.max_steps": 2}
    over |= {"train.ckpt_every": 2, "train.eval_every": 2, "train.out_dir": str(root / "run")}
    _, loaders, model, cfg = prepare(get_preset("lavt_mg_tiny").override(over), ["train"])
    fit(model, loaders, cfg)  # no validation: `run_row` scores the last checkpoint
    return root / "run"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", nargs="+")
    ap.add_argument("--out")
    ap.add_argument("--smoke", action="store_true", help="a 2-step run's row, in a temporary folder (seconds)")
    a = ap.parse_args(argv)
    if a.smoke:
        with tempfile.TemporaryDirectory(prefix="mg_rich_table_") as tmp:
            torch.set_num_threads(1)
            return main(["--runs", str(train_smoke_run(Path(tmp))), "--out", str(Path(tmp) / "mg_rich.csv")])
    if not (a.runs and a.out):
        ap.error("--runs and --out are required")
    torch.set_num_threads(2)
    rows = [run_row(Path(r)) for r in a.runs]
    cols = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, cols)
    w.writeheader()
    w.writerows(rows)
    write_atomic(a.out, lambda tmp: tmp.write_text(buf.getvalue()))
    print(buf.getvalue())


if __name__ == "__main__":
    main()
