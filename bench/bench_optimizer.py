"""AdamW's kernels on magnet_tiny's parameters: fused (one kernel for every tensor), foreach (a few kernels per group)
and the per-tensor loop, interleaved in one process, one thread; the optimizer step alone and the whole training step
of the Learner, with the 512³ float32 matmul probe on one and on two threads beside the table, and the losses of a
short run under fused and foreach side by side (the same numbers up to float rounding).

Usage: python bench/bench_optimizer.py [--reps 20] [--budget-s 240] [--steps 20]
- `--reps`: kept (quiet) runs wanted per kernel (bench/common.py: each run is bracketed by probes, kept when both are
  ≤ 2× the floor);
- `--steps`: length of the short run whose losses are compared;
- `--smoke`: one kept run per kernel, a 2-step short run (seconds).
The library picks the kernel by the parameters' device (`ris_nb.train.adamw_kernel`); this script measures the choice.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import Probe, busy_note, header, interleaved, paired_ratio, probe_note, probes_1t_2t, stats_cells, table  # noqa: E402

from ris_nb.core import seed_everything  # noqa: E402
from ris_nb.registry import build_model
from ris_nb.presets import get_preset  # noqa: E402
from ris_nb.data.transforms import Batch  # noqa: E402
from ris_nb.train import Callback, DeviceCB, Learner, adamw_kernel, lr_factor  # noqa: E402

KERNELS = {"fused": {"fused": True}, "foreach": {"foreach": True}, "loop": {"foreach": False}}
SETTINGS = {"data.image_size": 64, "train.batch_size": 8, "model.text.vocab_size": 64, "train.device": "cpu"}
COLS = ["what", "kernel", "median ms", "p10–p90 ms", "kept/dropped", "× fused"]


def tiny_config():
    return get_preset("magnet_tiny").override(SETTINGS)


def random_batch(cfg, seed: int = 0) -> Batch:
    "A magnet_tiny batch: random images and ids, a square mask per sample."
    g, b, s = torch.Generator().manual_seed(seed), cfg.train.batch_size, cfg.data.image_size
    ids = torch.randint(4, cfg.model.text.vocab_size, (b, 12), generator=g)
    masks = torch.zeros(b, s, s)
    masks[:, s // 4 : s // 2, s // 3 : 2 * s // 3] = 1
    return Batch(
        images=torch.randn(b, 3, s, s, generator=g), input_ids=ids, attention_mask=torch.ones_like(ids), masks=masks
    )


def with_kernel(learn: Learner, kernel: dict) -> Learner:
    "`learn` with its AdamW rebuilt on `kernel` (same groups, lr and schedule)."
    cfg = learn.cfg
    groups = learn.core.param_groups(cfg)
    learn.opt = torch.optim.AdamW(groups, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay, **kernel)
    learn.sched = torch.optim.lr_scheduler.LambdaLR(learn.opt, lambda s: lr_factor(s, cfg))
    return learn


def learner(model, cfg, batches: list, kernel: dict, cbs: tuple = ()) -> Learner:
    return with_kernel(Learner(model, batches, cfg, [DeviceCB(), *cbs]), kernel)


class LossRecord(Callback):
    "The loss of every step."

    def __init__(self):
        self.losses = []

    def after_step(self):
        self.losses.append(float(self.learn.loss.detach()))


def optimizer_steps(model, cfg) -> dict:
    "One `opt.step()` per kernel, each with its own AdamW over the same gradients."
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    opts = {k: torch.optim.AdamW(model.param_groups(cfg), lr=1e-6, weight_decay=0.0, **kw) for k, kw in KERNELS.items()}
    return {k: o.step for k, o in opts.items()}


def train_steps(model, cfg, batch) -> dict:
    "One `Learner.one_batch()` (forward, losses, backward, optimizer step) per kernel, each on a copy of the model."
    learns = {k: learner(copy.deepcopy(model), cfg, [batch], kw) for k, kw in KERNELS.items() if k != "loop"}
    for l in learns.values():
        l.trainer.train()
        l.batch = batch
    return {k: l.one_batch for k, l in learns.items()}


def short_run_losses(cfg, steps: int) -> dict[str, list[float]]:
    "Losses of `steps` Learner steps from the same initial weights and batches under each of fused and foreach."
    out = {}
    for k in ("fused", "foreach"):
        seed_everything(cfg.seed)
        model = build_model(cfg)
        batches = [random_batch(cfg, i) for i in range(steps)]
        rec = LossRecord()
        l = learner(model, cfg.override({"train.max_steps": steps}), batches, KERNELS[k], (rec,))
        seed_everything(cfg.seed)
        l.fit()
        out[k] = rec.losses
    return out


def rows_of(title: str, stats: dict) -> list[dict]:
    ref = stats["fused"]
    return [
        {"what": title, "kernel": k, **stats_cells(s), "× fused": f"{paired_ratio(s, ref):.2f}"}
        for k, s in stats.items()
    ]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=20, help="kept runs per kernel (default 20)")
    ap.add_argument("--budget-s", type=float, default=240.0, help="seconds of measuring per table (default 240)")
    ap.add_argument("--steps", type=int, default=20, help="steps of the short run compared (default 20)")
    ap.add_argument("--smoke", action="store_true", help="--reps 1 --budget-s 1 --steps 2 (seconds)")
    args = ap.parse_args()
    if args.smoke:
        args.reps, args.budget_s, args.steps = 1, 1.0, 2
    torch.set_num_threads(1)
    cfg = tiny_config()
    seed_everything(cfg.seed)
    model = build_model(cfg)
    n_tensors = sum(p.requires_grad for p in model.parameters())
    assert adamw_kernel(model.parameters()) == {"fused": True}, "the library no longer picks fused AdamW on the CPU"
    probe, p0 = Probe(), probes_1t_2t()
    budget = dict(reps=args.reps, budget_s=args.budget_s)
    opt = interleaved(optimizer_steps(copy.deepcopy(model), cfg), probe, warmup=3, **budget)
    step = interleaved(train_steps(model, cfg, random_batch(cfg)), probe, warmup=2, **budget)
    p1 = probes_1t_2t()
    n_params = sum(p.numel() for p in model.parameters()) / 1e6
    note = (
        f"magnet_tiny, {n_tensors} parameter tensors ({n_params:.2f} M), batch {cfg.train.batch_size} at "
        f"{cfg.data.image_size} px, one thread, torch {torch.__version__}; {probe_note(p0, p1)}; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(
        header(
            "AdamW kernels, interleaved: the optimizer step alone and the Learner's whole training step",
            probe,
            "\n".join(x for x in (note, busy_note(*opt.values(), *step.values())) if x),
        )
    )
    print(table(rows_of("optimizer step", opt) + rows_of("training step", step), COLS))
    losses = short_run_losses(cfg, args.steps)
    diff = max(abs(a - b) for a, b in zip(losses["fused"], losses["foreach"]))
    print(
        f"\nshort run, {args.steps} steps from the same weights and batches: loss {losses['fused'][0]:.4f} → "
        f"{losses['fused'][-1]:.4f} (fused), {losses['foreach'][0]:.4f} → {losses['foreach'][-1]:.4f} (foreach); "
        f"largest |Δloss| at any step {diff:.2e}"
    )


if __name__ == "__main__":
    main()
