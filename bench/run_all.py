"""`make bench`: run every speed benchmark with bounded budgets, then print ONE summary table, each row with the probe
floor of the run that measured it. Each bench prints its own detailed table first.

Usage: python bench/run_all.py [--official-magnet DIR] [--official-sag DIR] [--fixtures DIR] [--only magnet eval …]
Environment equivalents (used by the Makefile): OFFICIAL_MAGNET, OFFICIAL_SAG, FIXTURES.
Without the official checkouts the MagNet and SaG rows show our times only, and say that no comparison was made.
Not run here: bench_learning.py (trains every preset: tens of minutes) and bench_suite.sh (runs the test suite).
Budgets keep the whole run ≤ 10 minutes on an idle 2-core machine; on a busy one each bench stops at its own time
limit\nand the run at TOTAL_S (a bench not reached is listed as skipped). Threads: OMP_NUM_THREADS when set, else every
usable core (the Makefile pins none). On a machine shared with other jobs, 1 thread gives steadier ratios: with 2
threads a batch-1 forward waits whenever one of its threads is descheduled.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# (name, script, arguments, timeout s)
BENCHES = [
    ("data", "bench_data.py", ["--images", "150", "--repeats", "5"], 60),
    ("magnet", "bench_magnet.py", ["--reps", "8", "--budget-s", "40"], 150),
    ("magnet_step", "bench_magnet.py", ["--step", "--reps", "6", "--budget-s", "40"], 120),
    ("sag", "bench_sag.py", ["--reps", "15", "--budget-s", "35"], 100),
    ("eval", "bench_eval.py", ["--reps", "3", "--budget-s", "45"], 200),
    ("lavt", "bench_lavt.py", ["--presets", "lavt_tiny,lavt_mg_tiny", "--reps", "5", "--budget-s", "25"], 70),
    ("engine", "bench_engine.py", ["lavt_tiny", "magnet_tiny", "sag_tiny", "--reps", "6", "--budget-s", "15"], 80),
    # last: building the 307 M-parameter model and profiling its step take about two minutes on one thread
    ("ops", "bench_ops.py", ["--reps", "6", "--budget-s", "30"], 240),
]
TOTAL_S = 590  # the whole run stops here: a bench gets at most the time left (so ≤ 10 min even on a busy machine)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official-magnet", default=os.environ.get("OFFICIAL_MAGNET") or None)
    ap.add_argument("--official-sag", default=os.environ.get("OFFICIAL_SAG") or None)
    ap.add_argument("--fixtures", default=os.environ.get("FIXTURES") or None)
    ap.add_argument("--only", nargs="*", default=None)
    args = ap.parse_args()
    summary = Path(tempfile.mkstemp(suffix=".jsonl")[1])
    env = dict(os.environ, BENCH_SUMMARY=str(summary))
    status, t0 = {}, time.perf_counter()
    for name, script, extra, timeout in BENCHES:
        if args.only and name not in args.only:
            continue
        cmd = [sys.executable, str(HERE / script), *extra]
        cmd += ["--threads", os.environ.get("OMP_NUM_THREADS") or str(len(os.sched_getaffinity(0)))]
        if name in ("magnet", "sag") and args.fixtures:
            cmd += ["--fixtures", args.fixtures]
        src = {"magnet": args.official_magnet, "sag": args.official_sag}.get(name)
        if src:
            cmd += ["--official-src", src]
        print(f"\n## bench {name}: {' '.join(cmd[1:])}", flush=True)
        t = time.perf_counter()
        left = TOTAL_S - (time.perf_counter() - t0)
        if left < 20:
            status[name] = ("skipped: the 10-minute total was spent", 0.0)
            continue
        # measuring stops at 80 % of it, so the bench prints what it has
        limit = min(timeout, left)
        env["BENCH_DEADLINE"] = str(time.time() + 0.8 * limit)
        try:
            rc = subprocess.run(cmd, env=env, timeout=limit).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
        status[name] = (rc, time.perf_counter() - t)
    rows = [json.loads(l) for l in summary.read_text().splitlines() if l.strip()]
    print(f"\n# Summary ({time.perf_counter() - t0:.0f} s in all)\n")
    print("| bench | what | value | unit | target | verdict | probe floor (ms) | kept/dropped runs |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['bench']} | {r['what']} | {r['value']} | {r['unit']} | {r.get('target', '')} | "
            f"{r.get('verdict', '')} | "
            f"{r['probe_floor_ms']:.2f} | {r['kept']}/{r['dropped']} |"
        )
    for name, (rc, secs) in status.items():
        if rc != 0:
            print(f"| {name} | did not finish (exit {rc}, {secs:.0f} s) | | | | | | |")
    if not args.official_magnet or not args.official_sag:
        print(
            "\nNo comparison with the official code for "
            + " and ".join(n for n, s in (("MagNet", args.official_magnet), ("SaG", args.official_sag)) if not s)
            + ": pass OFFICIAL_MAGNET=DIR / OFFICIAL_SAG=DIR (checkouts of the official repositories, bench/README.md)."
        )
    summary.unlink()
    sys.exit(0 if all(rc == 0 for rc, _ in status.values()) else 1)


if __name__ == "__main__":
    main()
