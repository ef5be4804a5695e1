"""What each part of MagNet costs in the quickstart's training step: samples/s of one magnet_tiny step (batch 32 at
64 px, fused AdamW, the preset's precision, every usable core) with one part switched off at a time, and with all five
changes at once, interleaved in one process, the 512³ float32 matmul probe on one and on two threads beside it.

Usage: python bench/bench_parts.py [--steps 10] [--budget-s 400]
- `--steps`: kept (quiet) steps wanted per variant; variants are interleaved round by round, each step bracketed by
  one-thread probes and kept when both are ≤ 2× the floor (bench/common.py).
- `--smoke`: one step per variant on one thread, batch 4 on 40 scenes (seconds).
It answers how much faster the step could get by dropping parts; what each part buys in val oIoU is measured elsewhere
(nbs/results/magnet_ladder.csv and the learning log), not here.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_threads import on_threads, quickstart_step, small_shaperefs  # noqa: E402
from common import Probe, busy_note, header, interleaved, probe_cells, probe_note, probes_1t_2t, stats_cells, table  # noqa: E402

from ris_nb.machine import usable_cores  # noqa: E402

PARTS = {  # variant: the config changes that switch its part off
    "the quickstart step": {},
    "no refine head": {"model.lavt.refine": 0},
    "no CAM": {"model.cal.cam": False},
    "no Mask Grounding": {"model.mg.enabled": False},
    "no CAL loss": {"model.cal.enabled": False},
    "2 decoder layers, not 4": {"model.magnet.dec_layers": 2},
}
PARTS["all five at once"] = {k: v for changes in PARTS.values() for k, v in changes.items()}
COLS = [
    "variant",
    "samples/s",
    "× the step",
    "parameters",
    "median ms",
    "p10–p90 ms",
    "kept/dropped",
    "probe 1t ms",
    "probe 2t ms",
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10, help="kept steps per variant (default 10)")
    ap.add_argument(
        "--budget-s", type=float, default=400.0, help="stop measuring after this many seconds (default 400)"
    )
    ap.add_argument("--smoke", action="store_true", help="one step per variant on one thread, batch 4 (seconds)")
    args = ap.parse_args()
    if args.steps < 1:
        raise SystemExit(f"--steps must be >= 1, got {args.steps}")
    scenes, batch, threads = (40, 4, 1) if args.smoke else (200, 32, usable_cores())
    if args.smoke:
        args.steps, args.budget_s = 1, 1.0
    root = small_shaperefs(scenes)
    built = {name: quickstart_step(batch_size=batch, changes=changes, root=root) for name, changes in PARTS.items()}
    steps = {name: step for name, (step, _, _) in built.items()}
    params = {name: sum(p.numel() for p in model.parameters()) for name, (_, _, model) in built.items()}
    torch.set_num_threads(1)
    probe, p0 = Probe(), probes_1t_2t()
    st = interleaved(
        {n: on_threads(s, threads) for n, s in steps.items()}, probe, reps=args.steps, warmup=1, budget_s=args.budget_s
    )
    p1 = probes_1t_2t()
    base = st["the quickstart step"].median
    rows = [
        {
            "variant": name,
            "samples/s": round(batch * 1e3 / s.median, 1),
            "× the step": round(base / s.median, 2),
            "parameters": params[name],
            **stats_cells(s),
            **probe_cells(p0, p1),
        }
        for name, s in st.items()
    ]
    note = f"{threads} threads; {probe_note(p0, p1)}; load average {os.getloadavg()[0]:.1f}"
    title = f"quickstart training step (magnet_tiny, batch {batch}, 64 px) with one part off at a time, interleaved"
    print(header(title, probe, "\n".join(x for x in (note, busy_note(*st.values())) if x)))
    print(table(rows, COLS))


if __name__ == "__main__":
    main()
