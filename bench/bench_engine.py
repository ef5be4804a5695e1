"""Engine benchmark: training throughput (samples/s) of one step per tiny/mini preset, batch 8, 128 px, probe-filtered.
Run: OMP_NUM_THREADS=1 .venv/bin/python bench/bench_engine.py [presets…] [--reps 10] [--budget-s 40] [--threads 1]
(evaluation throughput: bench/bench_eval.py; the test-suite wall times and the quickstart's peak RSS:
bench/bench_suite.sh)."""

import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import Probe, header, record, table, time_left, timed  # noqa: E402

from ris_nb.core import seed_everything
from ris_nb.registry import build_model
from ris_nb.presets import get_preset
from ris_nb.data.shaperefs_files import generate
from ris_nb.data.transforms import build_tokenizer, make_dataloaders


def setup(preset: str, root: Path):
    cfg = get_preset(preset).override({"data.root": str(root), "train.batch_size": 8})
    tok = build_tokenizer(cfg)
    cfg = cfg.override({"model.text.vocab_size": len(tok)})
    loaders = make_dataloaders(cfg, tok, splits=["train", "val"])
    seed_everything(0)
    return cfg, loaders, build_model(cfg)


def train_throughput(cfg, loaders, model, probe, reps: int = 10, budget_s: float = 40) -> dict:
    opt = torch.optim.AdamW(model.param_groups(cfg), lr=cfg.train.lr)
    batch = next(iter(loaders["train"]))
    model.train()

    def step():
        out = model(batch)
        loss = model.losses(out, batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()

    t = timed(step, probe, reps=reps, budget_s=budget_s)
    return {"train samples/s": 8 / (t.median / 1e3), "step ms": t.median, "kept/dropped": f"{t.kept}/{t.dropped}"}


def main():
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "presets",
        nargs="*",
        default=["lavt_tiny", "lavt_mg_tiny", "magnet_tiny", "sag_tiny", "lavt_mini", "magnet_mini", "sag_mini"],
    )
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--budget-s", type=float, default=40, help="seconds of measuring per preset at most")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    probe = Probe()
    root = Path(tempfile.mkdtemp())
    generate(root / "shaperefs", n_images=200, seed=0, size=128, verbose=False)
    rows = []
    for p in args.presets:
        if time_left() <= 0:
            rows.append({"preset": p, "error": "not measured: the run's time limit came first"})
            continue
        try:
            cfg, loaders, model = setup(p, root)
            rows.append({"preset": p, **train_throughput(cfg, loaders, model, probe, args.reps, args.budget_s)})
        except Exception as e:  # a preset whose model is not built yet is reported, not hidden
            rows.append({"preset": p, "error": f"{type(e).__name__}: {str(e)[:60]}"})
    print(header("Engine benchmark: one training step (batch 8, 128 px, medians after warm-up)", probe))
    print(table(rows, ["preset", "train samples/s", "step ms", "kept/dropped", "error"]))
    record(
        "engine",
        [
            {"what": f"train step {r['preset']}, batch 8, 128 px", "value": round(r["step ms"], 1), "unit": "ms"}
            for r in rows
            if "step ms" in r
        ],
        probe,
    )


if __name__ == "__main__":
    main()
