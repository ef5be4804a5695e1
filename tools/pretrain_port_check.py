"""Entity pretraining before and after it moved onto the `Learner` (issue 49): the same short run (12a's: 400 scenes of data
seed 1, 300 steps at lr 2e-3, no centre term), seeds 0–5, with the hand-written loop of commit 955d6f9 (`ris_nb.models.slots`
then) and with `ris_nb.pretrain.pretrain_entities` now. Both draw their batches from their own random streams, so a seed is
not the same run; the question is whether the port learns as the loop did.

Usage (in a git clone, which holds the old commit): OMP_NUM_THREADS=1 python tools/pretrain_port_check.py
       [--seeds 0 1 2 3 4 5] [--results nbs/results/entity_pretrain_on_engine.csv]  (rows of other seeds in the file are kept)
"""
from __future__ import annotations
import argparse
import csv
import importlib.util
import io
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from ris_nb.testing import probe_ms
from ris_nb.io import write_atomic
from ris_nb.data.refer import Refer
from ris_nb.data.shaperefs import generate
from ris_nb.models.slots import EntityPretrainConfig, scene_object_masks, split_images
from ris_nb.pretrain import pretrain_entities

ROOT, OLD = Path(__file__).resolve().parents[1], "955d6f9"


def hand_loop_module():
    "`ris_nb/models/slots.py` of commit `OLD` (with its own training loop), imported as a module of today's package."
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{OLD}:ris_nb/models/slots.py"], capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "slots_hand_loop.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("ris_nb.models.slots_hand_loop", path)   # its `..core` imports resolve in ris_nb
    mod = importlib.util.module_from_spec(spec); sys.modules[spec.name] = mod; spec.loader.exec_module(mod)
    return mod


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    ap.add_argument("--results", default=None)
    a = ap.parse_args()
    torch.set_num_threads(1)
    old = hand_loop_module()
    root = Path(tempfile.mkdtemp()); generate(root / "shaperefs", n_images=400, seed=1, size=64, verbose=False)
    refer = Refer(root, "shaperefs", "shaperefs")
    train, _ = split_images(refer, "train", 64)
    vx, vids = split_images(refer, "val", 64)
    val = (vx, scene_object_masks(refer, vids, 64))
    quick = EntityPretrainConfig(steps=300, warmup=30, lr=2e-3, pos_weight=0.0)
    rows = []
    for seed in a.seeds:
        cfg = replace(quick, seed=seed)
        for loop, run in [("hand-written (955d6f9)", lambda: old.pretrain_entities(train, old.EntityPretrainConfig(**asdict(cfg)), val=val,
                                                                                      eval_every=cfg.steps, progress=False)),
                          ("Learner", lambda: pretrain_entities(train, cfg, val=val, eval_every=cfg.steps, progress=False))]:
            t0 = time.perf_counter(); r = run().log[-1]
            rows.append({"loop": loop, "seed": seed, "steps": cfg.steps, "best_slot_iou": round(r["best_slot_iou"], 1),
                         "objects_covered": round(r["objects_covered"], 1), "seconds": round(time.perf_counter() - t0, 1)})
            print(rows[-1], flush=True)
    one, two = probe_ms(threads=1), probe_ms(threads=2)
    for r in rows: r.update(probe_1t_ms=round(one, 2), probe_2t_ms=round(two, 2))
    if a.results:
        kept = [r for r in csv.DictReader(open(a.results))] if Path(a.results).exists() else []
        rows = [r for r in kept if int(r["seed"]) not in a.seeds] + rows
        rows.sort(key=lambda r: (int(r["seed"]), r["loop"] != "Learner"))
        buf = io.StringIO(); w = csv.DictWriter(buf, list(rows[0])); w.writeheader(); w.writerows(rows)
        write_atomic(a.results, lambda tmp: tmp.write_text(buf.getvalue()))
        print("written:", a.results)


if __name__ == "__main__":
    main()
