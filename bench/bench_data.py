"""Data pipeline throughput: ShapeRefs generation (images/s) and dataset read + transform + collate (samples/s) at 128
px.

Usage: OMP_NUM_THREADS=1 python bench/bench_data.py [--images 300] [--repeats 5]
Medians over repeats after one warm-up; each run is preceded by a 512^3 float32 matmul probe; 'median' keeps only runs
where the probe stayed within 2x the floor (min of 50 probes at start, bench/common.py), 'all runs' keeps every run.
Targets: >= 200 images/s, >= 1,000 samples/s."""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import Probe, header, record, time_left  # noqa: E402

from ris_nb.presets import get_preset
from ris_nb.data import shaperefs_files as S
from ris_nb.data import transforms as T


def measure(fn, repeats: int, probe: Probe):
    """Median rate of fn() -> (count, seconds) over runs whose probe was quiet; also their number and the median of
    all runs."""
    fn()  # warm-up
    runs = []
    for _ in range(repeats):
        if runs and time_left() <= 0:
            break  # $BENCH_DEADLINE (run_all.py): report what was measured
        p = probe()
        n, secs = fn()
        runs.append((p, n / secs))
    rates = [r for p, r in runs if probe.quiet(p)]
    every = statistics.median(r for _, r in runs)
    # no quiet run: all runs (kept 0 says so)
    return (statistics.median(rates) if rates else every), len(rates), every, len(runs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads (generation and reading are single-threaded Python)"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    probe = Probe()
    tmp = Path(tempfile.mkdtemp())
    rows = []

    def gen(workers):
        def f():
            t = time.perf_counter()
            S.generate(tmp / f"g{workers}", n_images=args.images, seed=0, workers=workers, verbose=False)
            return args.images, time.perf_counter() - t

        return f

    for w in (1, 2):
        rows.append((f"ShapeRefs generate, workers={w}", "images/s", *measure(gen(w), args.repeats, probe), 200))

    S.generate(tmp / "shaperefs", n_images=args.images, seed=0, verbose=False)
    cfg = get_preset("lavt_tiny").override({"data.root": str(tmp), "train.batch_size": 32, "eval.batch_size": 32})
    tok = T.build_tokenizer(cfg)

    def load(cache, per_ref):
        dss = T.make_datasets(cfg.override({"data.per_ref": per_ref}), tok, splits=["train"], cache=cache)
        loader = T.make_loader(dss["train"], 32, shuffle=True)

        def f():
            t = time.perf_counter()
            n = sum(len(b) for b in loader)
            return n, time.perf_counter() - t

        return f

    rows.append(
        ("read+collate, no cache, every sentence", "samples/s", *measure(load(False, False), args.repeats, probe), 1000)
    )
    rows.append(
        (
            "read+collate, cache warm, every sentence",
            "samples/s",
            *measure(load(True, False), args.repeats, probe),
            1000,
        )
    )
    rows.append(
        ("read+collate, cache warm, per_ref", "samples/s", *measure(load(True, True), args.repeats, probe), 1000)
    )

    print(header(f"Data pipeline: {args.images} images at 128 px, torch threads {args.threads}", probe))
    print(f"| {'what':42s} | {'unit':9s} | {'median':>8s} | runs kept | median, all runs | target |")
    print(f"|{'-' * 44}|{'-' * 11}|{'-' * 10}|-----------|------------------|--------|")
    for what, unit, rate, kept, every, runs, target in rows:
        print(f"| {what:42s} | {unit:9s} | {rate:8.0f} | {kept:5d}/{runs:<3d} | {every:16.0f} | {target:6d} |")
    print("(absolute rates: unlike the ratios of the other benches, these verdicts depend on the machine's speed)")
    record(
        "data",
        [
            {
                "what": w,
                "value": round(r, 0),
                "unit": u,
                "target": f"≥ {t}",
                "verdict": ("met" if r >= t else "missed") + " (absolute rate)",
                "kept": k,
                "dropped": m - k,
            }
            for w, u, r, k, _, m, t in rows
        ],
        probe,
    )


if __name__ == "__main__":
    main()
