"""Engine benchmark: training throughput per tiny/mini preset, batched evaluation vs a batch-1 loop (target ≥ 10×).
Run: OMP_NUM_THREADS=2 .venv/bin/python bench/bench_engine.py   (the quickstart's peak RSS and the test-suite wall
times are measured by bench/bench_quickstart.sh)."""
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).parent))
from common import table, timed  # noqa: E402

from ris_nb.core import build_model, get_preset, seed_everything
from ris_nb.data.shaperefs import generate
from ris_nb.data.transforms import build_tokenizer, make_dataloaders
from ris_nb.evaluate import evaluate


def setup(preset: str, root: Path):
    cfg = get_preset(preset).override({"data.root": str(root), "train.batch_size": 8})
    tok = build_tokenizer(cfg)
    cfg = cfg.override({"model.text.vocab_size": len(tok)})
    loaders = make_dataloaders(cfg, tok, splits=["train", "val"])
    seed_everything(0)
    return cfg, loaders, build_model(cfg)


def train_throughput(cfg, loaders, model) -> dict:
    opt = torch.optim.AdamW(model.param_groups(cfg), lr=cfg.train.lr)
    batch = next(iter(loaders["train"]))
    model.train()
    def step():
        out = model(batch); loss = model.losses(out, batch)["loss"]
        opt.zero_grad(); loss.backward(); opt.step()
    t = timed(step, n=10)
    return {"train samples/s": 8 / (t["median_ms"] / 1e3), "step ms": t["median_ms"]}


def eval_speedup(cfg, loaders, model, n: int = 64) -> dict:
    ds = torch.utils.data.Subset(loaders["val"].dataset, range(min(n, len(loaders["val"].dataset))))
    coll = loaders["val"].collate_fn
    batched, single = DataLoader(ds, batch_size=32, collate_fn=coll), DataLoader(ds, batch_size=1, collate_fn=coll)
    tb = timed(lambda: evaluate(model, batched, cfg.eval.protocol, progress=False), n=3, warmup=1)
    t1 = timed(lambda: evaluate(model, single, cfg.eval.protocol, progress=False), n=3, warmup=1)
    return {"eval samples/s (batch 32)": len(ds) / (tb["median_ms"] / 1e3),
            "eval samples/s (batch 1)": len(ds) / (t1["median_ms"] / 1e3), "eval speed-up": t1["median_ms"] / tb["median_ms"]}


def main(presets=("lavt_tiny", "lavt_mg_tiny", "magnet_tiny", "sag_tiny", "lavt_mini", "magnet_mini", "sag_mini")):
    torch.set_num_threads(2)
    root = Path(tempfile.mkdtemp())
    t = time.perf_counter(); generate(root / "shaperefs", n_images=200, seed=0, size=128)
    rows = []
    for p in presets:
        try:
            cfg, loaders, model = setup(p, root)
            rows.append({"preset": p, **train_throughput(cfg, loaders, model), **eval_speedup(cfg, loaders, model)})
        except Exception as e:   # a preset whose model is not built yet is reported, not hidden
            rows.append({"preset": p, "error": f"{type(e).__name__}: {str(e)[:60]}"})
        print(table(rows[-1:], list(rows[-1])), flush=True)
    print("\n## Engine benchmark (2 threads, batch 8, 128 px, medians after warm-up)\n")
    print(table(rows, ["preset", "train samples/s", "step ms", "eval samples/s (batch 32)", "eval samples/s (batch 1)",
                       "eval speed-up", "error"]))


if __name__ == "__main__":
    main(tuple(sys.argv[1:]) or None) if len(sys.argv) > 1 else main()
