"""Run a two-process gloo worker under torchrun again and again while the CPU is kept busy; count the clean exits.

A distributed run that finishes its work but aborts at teardown ("terminate called without an active exception",
SIGABRT) shows up only now and then, and more often on a busy machine. This launches `--runs` torchrun jobs of
`tests/c3_ddp_worker.py` (one SaG step) with `--load` busy-loop processes beside them and prints how many exited 0,
and the first lines of every failure.

    python tools/ddp_stress.py --runs 40 --load 2
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORKER = HERE.parent / "tests" / "c3_ddp_worker.py"


def burn(stop_at: float) -> None:
    "Keep one core busy until `stop_at` (time.time())."
    x = 0
    while time.time() < stop_at:
        for i in range(100_000): x += i * i


def launch(out: Path, port: int) -> subprocess.CompletedProcess:
    "One torchrun job of the worker (two processes, gloo on CPU)."
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           str(WORKER), str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}   # a Python stack on SIGABRT
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def signature(proc: subprocess.CompletedProcess) -> str:
    "A short description of how a job ended."
    if proc.returncode == 0: return "ok"
    text = proc.stderr + proc.stdout
    for key in ("terminate called without an active exception", "terminate called after throwing", "Segmentation fault",
                "SIGABRT", "SIGSEGV", "Traceback"):
        if key in text: return f"rc={proc.returncode}: {key}"
    return f"rc={proc.returncode}"


def stress(runs: int, load: int, port0: int = 29620) -> Counter:
    "Launch `runs` jobs with `load` busy processes running beside them; the count of each way a job ended."
    stop_at = time.time() + 3600
    burners = [mp.Process(target=burn, args=(stop_at,), daemon=True) for _ in range(load)]
    for b in burners: b.start()
    ends: Counter = Counter()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(runs):
                proc = launch(Path(tmp) / f"run{i}.pt", port0 + i % 50)
                sig = signature(proc); ends[sig] += 1
                print(f"run {i + 1}/{runs}: {sig}", flush=True)
                if sig != "ok": print("   " + "\n   ".join((proc.stderr or proc.stdout).strip().splitlines()[-6:]), flush=True)
    finally:
        for b in burners: b.terminate()
    return ends


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--load", type=int, default=2, help="busy-loop processes beside the jobs (default: 2)")
    args = ap.parse_args(argv)
    t0 = time.time()
    ends = stress(args.runs, args.load)
    print(f"\n{ends['ok']}/{args.runs} clean exits with {args.load} busy processes beside them "
          f"({time.time() - t0:.0f} s); " + ", ".join(f"{k}: {v}" for k, v in ends.items() if k != "ok"))


if __name__ == "__main__":
    main()
