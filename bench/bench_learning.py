"""Does each teaching preset learn on ShapeRefs within a CPU budget? Trains, evaluates val, prints one table.

Run: .venv/bin/python bench/bench_learning.py [--presets lavt_tiny magnet_tiny sag_tiny] [--seeds 0] [--threads 2]
     [--data data/shaperefs] [--steps N] [--batch B] [--size 64] [--out runs/bench_learning]
Generates ShapeRefs (--scenes, default 3,000, at --size px, seed 0) when --data does not exist. For every preset × seed
it trains with `ris_nb.training_run.fit` (the preset's recipe; --steps/--batch override it), then reports val
oIoU/mIoU, oIoU per expression type, the sentence sensitivity (LAVT/MagNet) or the shatter/gather figures (SaG), the
language-blind references of the same split, wall time (training + the final validation), training samples/s and the
512³ float32 matmul probe floor (minimum of 50 probes at start, so times from machines of different speed can be put
side by side). Finished runs are reloaded, not retrained. `--smoke`: lavt_tiny, 2 steps of 4 on 40 scenes, one thread,
in a temporary folder (seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
import torch


def _train_speed(log_path: Path) -> float:
    "Median training samples/s the engine logged (validation excluded)."
    from ris_nb.run_folder import read_log

    xs = [r["samples_per_s"] for r in read_log(log_path) if "samples_per_s" in r]
    return statistics.median(xs) if xs else float("nan")


def train_and_score(preset: str, seed: int, args) -> dict:
    "Train one preset/seed (or reload it) and score val."
    from ris_nb.core import seed_everything
    from ris_nb.registry import build_model
    from ris_nb.presets import get_preset
    from ris_nb.data.transforms import build_tokenizer, make_dataloaders
    from ris_nb.evaluate import evaluate, sentence_sensitivity
    from ris_nb.grounding import shatter_gather
    from ris_nb.training_run import fit
    from ris_nb.checkpoints import load_checkpoint

    out = Path(args.out) / f"{preset}_s{seed}"
    done = out / "bench.json"
    if done.exists():
        return json.loads(done.read_text())
    upd = {
        "data.root": str(Path(args.data).parent),
        "data.dataset": Path(args.data).name,
        "seed": seed,
        "data.image_size": args.size,
        "train.out_dir": str(out),
    }
    if args.steps:
        upd["train.max_steps"] = args.steps
    if args.batch:
        upd["train.batch_size"] = args.batch
    cfg = get_preset(preset).override(upd)
    cfg = cfg.override({"train.eval_every": cfg.train.max_steps, "train.ckpt_every": cfg.train.max_steps})
    tok = build_tokenizer(cfg)
    cfg = cfg.override({"model.text.vocab_size": len(tok)})
    loaders = make_dataloaders(cfg, tok, splits=["train", "val"])
    seed_everything(seed)
    model = build_model(cfg)
    t0 = time.perf_counter()
    fit(model, loaders, cfg, evaluate=evaluate)
    wall = time.perf_counter() - t0
    model.load_state_dict(load_checkpoint(out / "best.pt")["model"])
    res = evaluate(model, loaders["val"], protocol=cfg.eval.protocol, progress=False, keep_samples=False)
    row = {
        "preset": preset,
        "seed": seed,
        "steps": cfg.train.max_steps,
        "samples": cfg.train.max_steps * cfg.train.batch_size,
        "wall_s": wall,
        "samples_per_s": _train_speed(out / "log.jsonl"),
        "oIoU": res["overall"]["oIoU"],
        "mIoU": res["overall"]["mIoU"],
        "by_type": {k: v["oIoU"] for k, v in res["by_type"].items()},
    }
    row |= (
        shatter_gather(model, loaders["val"])
        if cfg.model.name == "sag"
        else sentence_sensitivity(model, loaders["val"])
    )
    done.write_text(json.dumps(row))
    return row


def mean_std(xs: list[float], digits: int = 1) -> str:
    "Mean, and ± the sample standard deviation when there are several seeds."
    return f"{statistics.mean(xs):.{digits}f}" + (f" ± {statistics.stdev(xs):.{digits}f}" if len(xs) > 1 else "")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=["lavt_tiny", "lavt_mg_tiny", "magnet_tiny", "sag_tiny"])
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data", default="data/shaperefs")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--steps", type=int, default=0, help="0 = the preset's max_steps")
    p.add_argument("--batch", type=int, default=0, help="0 = the preset's batch size")
    p.add_argument("--out", default="runs/bench_learning")
    p.add_argument("--scenes", type=int, default=3000, help="scenes generated when --data does not exist")
    p.add_argument("--smoke", action="store_true", help="lavt_tiny, 2 steps of 4 on 40 scenes, temporary folder")
    args = p.parse_args(argv)
    if args.smoke:
        with tempfile.TemporaryDirectory(prefix="bench_learning_") as tmp:
            return main(
                ["--presets", "lavt_tiny", "--threads", "1", "--steps", "2", "--batch", "4", "--scenes", "40"]
                + ["--data", f"{tmp}/shaperefs", "--out", f"{tmp}/runs"]
            )
    torch.set_num_threads(args.threads)
    from ris_nb.machine import probe_ms

    floor = probe_ms(reps=50)  # the floor: fastest of 50 probes
    from ris_nb.data.refer import RefDataset
    from ris_nb.data.shaperefs_files import ensure_shaperefs
    from ris_nb.evaluate import language_blind_references

    ensure_shaperefs(args.data, n_images=args.scenes, seed=0, size=args.size)
    blind = language_blind_references(RefDataset(Path(args.data).parent, Path(args.data).name, "shaperefs", "val"))
    rows = {pr: [train_and_score(pr, s, args) for s in range(args.seeds)] for pr in args.presets}
    types = sorted({t for rs in rows.values() for r in rs for t in r["by_type"]})
    print(
        f"\nprobe floor (512³ float32 matmul, min of 50): {floor:.2f} ms · {args.threads} threads · val of "
        f"{args.data}\n"
    )
    print(
        "| preset | seeds | steps × batch | samples/s | wall (s) | val oIoU | val mIoU | "
        + " | ".join(types)
        + " | cross-referent IoU | right shape % | best-slot mIoU | picks best slot % |"
    )
    print("|" + "---|" * (11 + len(types)))
    for pr, rs in rows.items():

        def g(k):
            return mean_std([r[k] for r in rs], 2 if k == "cross_referent_iou" else 1) if k in rs[0] else "—"

        print(
            f"| {pr} | {len(rs)} | {rs[0]['steps']} × {rs[0]['samples'] // rs[0]['steps']} | "
            f"{g('samples_per_s')} | {g('wall_s')} | "
            f"{g('oIoU')} | {g('mIoU')} | "
            + " | ".join(mean_std([r["by_type"].get(t, 0.0) for r in rs]) for t in types)
            + f" | {g('cross_referent_iou')} | {g('right_shape')} | {g('best_slot_mIoU')} | {g('picks_best_slot')} |"
        )
    for name, r in blind.items():
        print(
            f"| *{name}* (no model) | | | | | {r['oIoU']:.1f} | {r['mIoU']:.1f} | "
            + " | ".join("" for _ in types)
            + " | | | | |"
        )


if __name__ == "__main__":
    main()
