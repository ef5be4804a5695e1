"""How the quickstart's training step scales with threads: samples/s of one magnet_tiny step (batch 32 at 64 px, the
quickstart's recipe: fused AdamW, the preset's precision) at 1, 2, … up to this machine's usable cores, with the 512³
float32 matmul probe on one and on two threads beside every row.

Usage: python bench/bench_threads.py [--steps 20] [--max-threads N] [--budget-s 300]
- `--steps`: kept (quiet) steps wanted per thread count; the thread counts are interleaved round by round (1, 2, …, then
  back), each step bracketed by one-thread probes and kept when both are ≤ 2× the floor (bench/common.py).
- `--max-threads`: the largest count tried (default: `ris_nb.machine.usable_cores()`).
- `--smoke`: one step on one thread, batch 4 on 40 scenes (seconds).
Unlike `ris_nb train`, which uses every usable core by default, this script sets the count itself for every step, so
OMP_NUM_THREADS does not matter here.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import sys
import tempfile
from contextlib import nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import Probe, busy_note, header, interleaved, probe_cells, probe_note, probes_1t_2t, stats_cells, table  # noqa: E402

from ris_nb.machine import amp_dtype
from ris_nb.presets import get_preset  # noqa: E402
from ris_nb.machine import usable_cores
from ris_nb.data.shaperefs_files import generate  # noqa: E402
from ris_nb.training_run import prepare  # noqa: E402

QUICKSTART = {"data.image_size": 64, "train.batch_size": 32}  # the Makefile's QS_SET, as far as one step sees it
COLS = ["threads", "samples/s", "median ms", "p10–p90 ms", "kept/dropped", "probe 1t ms", "probe 2t ms"]


def small_shaperefs(scenes: int) -> Path:
    "A data root holding a fresh ShapeRefs of `scenes` 64-px scenes, removed when the script exits."
    root = Path(tempfile.mkdtemp(prefix="bench_threads_"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    generate(root / "shaperefs", n_images=scenes, seed=0, size=64, verbose=False)
    return root


def quickstart_step(scenes: int = 200, batch_size: int = 32, changes: dict | None = None, root: Path | None = None):
    """One training step of the quickstart (magnet_tiny, batch `batch_size` at 64 px, config `changes` on top) as `fit`
    runs it, on a small ShapeRefs (`root`, or a fresh one of `scenes` scenes); (step, batch size, model)."""
    root = root or small_shaperefs(scenes)
    over = {**QUICKSTART, "train.batch_size": batch_size, "data.root": str(root), "data.num_workers": 0}
    cfg = get_preset("magnet_tiny").override({**over, **(changes or {})})
    _, loaders, model, cfg = prepare(cfg, splits=["train"])
    batch = next(iter(loaders["train"]))
    opt = torch.optim.AdamW(model.param_groups(cfg), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay, fused=True)
    dtype = amp_dtype("cpu", cfg.train.amp)

    def step():
        model.train()
        with torch.autocast("cpu", dtype=dtype) if dtype else nullcontext():
            loss = model.losses(model(batch), batch)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step, len(batch.input_ids), model


def on_threads(step, n: int):
    "`step` run on `n` torch threads; one thread again afterwards, so that every probe runs on one."

    def run():
        torch.set_num_threads(n)
        try:
            step()
        finally:
            torch.set_num_threads(1)

    return run


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20, help="kept steps per thread count (default 20)")
    ap.add_argument(
        "--max-threads", type=int, default=usable_cores(), help="largest thread count (default: usable cores)"
    )
    ap.add_argument(
        "--budget-s", type=float, default=300.0, help="stop measuring after this many seconds (default 300)"
    )
    ap.add_argument("--smoke", action="store_true", help="one step on one thread, batch 4 (seconds)")
    args = ap.parse_args()
    if args.smoke:
        args.steps, args.max_threads, args.budget_s = 1, 1, 1.0  # two threads on a shared machine: seconds a step
    if args.steps < 1 or args.max_threads < 1:
        raise SystemExit("--steps and --max-threads must be >= 1")
    step, bs, _ = quickstart_step(*((40, 4) if args.smoke else ()))
    torch.set_num_threads(1)
    probe, p0 = Probe(), probes_1t_2t()
    counts = list(range(1, args.max_threads + 1))
    st = interleaved(
        {f"{n} threads": on_threads(step, n) for n in counts}, probe, reps=args.steps, warmup=1, budget_s=args.budget_s
    )
    p1 = probes_1t_2t()
    rows = [
        {
            "threads": n,
            "samples/s": round(bs * 1e3 / st[f"{n} threads"].median, 1),
            **stats_cells(st[f"{n} threads"]),
            **probe_cells(p0, p1),
        }
        for n in counts
    ]
    note = (
        f"{probe_note(p0, p1)}; {usable_cores()} usable cores, {os.cpu_count()} in the machine; load average "
        f"{os.getloadavg()[0]:.1f}"
    )
    print(
        header(
            f"quickstart training step (magnet_tiny, batch {bs}, 64 px) by thread count, interleaved",
            probe,
            "\n".join(x for x in (note, busy_note(*st.values())) if x),
        )
    )
    print(table(rows, COLS))


if __name__ == "__main__":
    main()
