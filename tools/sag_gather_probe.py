"""How far can SaG's gather go with `sag_tiny`'s shipped entities if it is *told* which slot to pick? A diagnostic, not a method.

The entity module stays frozen (the shipped weights); the text encoder and the fusion (and `model.sag.entity_appearance`'s CNN when
set) are trained with masks, on purpose: the target of A^fuse is the slot whose region best overlaps the referred object's mask
(cross-entropy on log A^fuse). Its val picks and mIoU bound what C³ could reach with these entities and this fusion; the gap
between them and C³'s own numbers is what the text-only signal fails to teach.

Usage: OMP_NUM_THREADS=2 python tools/sag_gather_probe.py --data data/shaperefs [--steps 500] [--set key=value ...]
       [--results nbs/results/sag_gather_probe.csv --row NAME]
"""
from __future__ import annotations
import argparse, csv, io, os, time
from pathlib import Path

import torch
import torch.nn.functional as F

from ris_nb.core import get_preset, parse_override, probe_ms, write_atomic
from ris_nb.evaluate import evaluate, shatter_gather
from ris_nb.train import prepare


def best_slot_targets(a_slot: torch.Tensor, hw: tuple[int, int], masks: torch.Tensor) -> torch.Tensor:
    "(B,) index of the slot whose hard region (argmax of A^slot on the token grid) has the highest IoU with each mask."
    K = a_slot.shape[1]
    regions = a_slot.argmax(1)[:, None] == torch.arange(K)[None, :, None]                  # (B,K,N)
    gt = F.interpolate(masks[:, None].float(), size=hw, mode="area").flatten(1)[:, None] > 0.5   # (B,1,N)
    inter, union = (regions & gt).sum(-1), (regions | gt).sum(-1)
    return (inter / union.clamp(min=1)).argmax(1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", nargs="*", default=[], help="config overrides of sag_tiny, key=value")
    ap.add_argument("--results", default=None)
    ap.add_argument("--row", default="probe")
    a = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 2)))
    one = (torch.set_num_threads(1), probe_ms())[1]; torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 2)))
    two = probe_ms()
    cfg = get_preset("sag_tiny").override({"data.root": str(Path(a.data).parent), "data.weak": False, "seed": a.seed,
                                           "train.max_steps": a.steps, **dict(parse_override(o) for o in a.set)})
    tok, loaders, model, cfg = prepare(cfg, ["train", "val"])
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=cfg.train.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, a.lr, total_steps=a.steps, pct_start=0.05)
    model.train(); step, t0 = 0, time.perf_counter()
    while step < a.steps:
        for batch in loaders["train"]:
            out = model(batch)
            target = best_slot_targets(out.a_slot.detach(), out.hw, batch.masks)
            loss = F.nll_loss(out.a_fuse.clamp(min=1e-8).log(), target)
            opt.zero_grad(set_to_none=True); loss.backward(); opt.step(); sched.step(); step += 1
            if step % 100 == 0: print(f"step {step}: loss {loss.item():.3f}", flush=True)
            if step == a.steps: break
    secs = time.perf_counter() - t0
    sg = shatter_gather(model, loaders["val"])
    res = evaluate(model, loaders["val"], progress=False, keep_samples=False)
    row = {"row": a.row, "overrides": " ".join(a.set), "steps": a.steps, "samples": a.steps * cfg.train.batch_size,
           "val_mIoU": round(res["overall"]["mIoU"], 2), "val_oIoU": round(res["overall"]["oIoU"], 2),
           "picks_best_slot": round(sg["picks_best_slot"], 1), "best_slot_mIoU": round(sg["best_slot_mIoU"], 1),
           **{f"mIoU_{k}": round(v["mIoU"], 2) for k, v in sorted(res["by_type"].items())},
           "train_s": round(secs), "probe_1t_ms": round(one, 2), "probe_2t_ms": round(two, 2)}
    print(row)
    if a.results:
        p = Path(a.results)
        rows = list(csv.DictReader(p.open())) if p.exists() else []
        rows = [r for r in rows if r["row"] != a.row] + [row]
        cols = list(dict.fromkeys(k for r in rows for k in r))
        buf = io.StringIO(); w = csv.DictWriter(buf, cols); w.writeheader(); w.writerows(rows)
        write_atomic(p, lambda tmp: tmp.write_text(buf.getvalue()))
        print("written:", p)


if __name__ == "__main__":
    main()
