"""Run a two-process gloo worker under torchrun again and again while the CPU is kept busy; count the clean exits.

A distributed run that finishes its work but aborts at teardown ("terminate called without an active exception",
SIGABRT) shows up only now and then, and more often on a busy machine. This launches `--runs` torchrun jobs with
`--load` busy-loop processes beside them and prints how many exited 0, and the last lines of every failure. The job is
`--worker c3` (default): `tests/c3_ddp_worker.py`, one SaG step under a bare DDP wrapper; `--worker bare`: one step of
a DDP-wrapped 4×4 linear layer between `init_distributed` and `finish_distributed` (nothing else, so the process
reaches interpreter shutdown soonest after the last collective; with `--hold-gil` its main thread keeps the GIL unless
it blocks, from just before `finish_distributed`, so a gloo thread that still needs the GIL after the last collective
waits for it, as a descheduled one does on a busy machine); or `--worker cli`: the CLI's
`main()` training lavt_tiny for 2 steps on a small ShapeRefs (DDP through `fit`, then the report), ended by a normal
interpreter exit (`sys.exit(main())`, as `python -m ris_nb` does).

    python tools/ddp_stress.py --runs 40 --load 2
    python tools/ddp_stress.py --runs 15 --load 2 --worker cli
    python tools/ddp_stress.py --runs 20 --load 2 --worker bare --hold-gil
    python tools/ddp_stress.py --smoke   # one bare job, no load, on a free port (tests/test_scripts_run.py)
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import socket
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
        for i in range(100_000):
            x += i * i


BARE = (
    "import os\nimport sys\nimport torch\nfrom torch import nn\n"
    "from ris_nb.distributed import finish_distributed, init_distributed\n"
    "torch.set_num_threads(1)\ninit_distributed('cpu')\nstep = nn.parallel.DistributedDataParallel(nn.Linear(4, 4))\n"
    "step(torch.randn(2, 4)).sum().backward()\ndel step\n"
    "if os.environ.get('DDP_STRESS_HOLD_GIL'): sys.setswitchinterval(30)\nfinish_distributed()\n"
)
CLI_MAIN = "import sys\nfrom ris_nb.cli import main\nsys.exit(main())\n"
CLI_TRAIN = [
    "--preset",
    "lavt_tiny",
    "--set",
    "data.image_size=64",
    "train.batch_size=4",
    "train.max_steps=2",
    "train.eval_every=1000",
    "train.device=cpu",
]


def worker_args(worker: str, tmp: Path, i: int) -> list[str]:
    "The script and arguments of job `i` of `worker` (`c3`, `bare` or `cli`); files go under `tmp`."
    if worker == "c3":
        return [str(WORKER), str(tmp / f"run{i}.pt")]
    if worker == "bare":
        (tmp / "bare.py").write_text(BARE)
        return [str(tmp / "bare.py")]
    data, script = tmp / "shaperefs", tmp / "cli_main.py"
    if not script.exists():
        from ris_nb.data.shaperefs_files import generate

        generate(data, n_images=48, seed=3, size=64)
        script.write_text(CLI_MAIN)
    return [str(script), "train", "--data", str(data), "--out", str(tmp / f"run{i}")] + CLI_TRAIN


def launch(args: list[str], port: int, hold_gil: bool = False) -> subprocess.CompletedProcess:
    "One torchrun job (two processes, gloo on CPU) of the script and arguments `args`."
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port)] + args
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}  # a Python stack on SIGABRT
    if hold_gil:
        env["DDP_STRESS_HOLD_GIL"] = "1"
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def signature(proc: subprocess.CompletedProcess) -> str:
    "A short description of how a job ended."
    if proc.returncode == 0:
        return "ok"
    text = proc.stderr + proc.stdout
    for key in (
        "terminate called without an active exception",
        "terminate called after throwing",
        "Segmentation fault",
        "SIGABRT",
        "SIGSEGV",
        "Traceback",
    ):
        if key in text:
            return f"rc={proc.returncode}: {key}"
    return f"rc={proc.returncode}"


def stress(runs: int, load: int, worker: str = "c3", hold_gil: bool = False, port0: int = 29620) -> Counter:
    "Launch `runs` jobs of `worker` with `load` busy processes running beside them; the count of each way a job ended."
    stop_at = time.time() + 3600
    burners = [mp.Process(target=burn, args=(stop_at,), daemon=True) for _ in range(load)]
    for b in burners:
        b.start()
    ends: Counter = Counter()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(runs):
                proc = launch(worker_args(worker, Path(tmp), i), port0 + i % 50, hold_gil)
                sig = signature(proc)
                ends[sig] += 1
                print(f"run {i + 1}/{runs}: {sig}", flush=True)
                if sig != "ok":
                    print("   " + "\n   ".join((proc.stderr or proc.stdout).strip().splitlines()[-6:]), flush=True)
    finally:
        for b in burners:
            b.terminate()
    return ends


def free_port() -> int:
    "A TCP port no process listens on now."
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--load", type=int, default=2, help="busy-loop processes beside the jobs (default: 2)")
    ap.add_argument("--worker", choices=["c3", "bare", "cli"], default="c3", help="the job to repeat (default: c3)")
    ap.add_argument("--hold-gil", action="store_true", help="bare only: the main thread keeps the GIL at teardown")
    ap.add_argument("--smoke", action="store_true", help="one bare job, no load, on a free port (seconds)")
    args = ap.parse_args(argv)
    if args.hold_gil and args.worker != "bare":
        ap.error("--hold-gil applies to --worker bare only")
    if args.smoke:
        args.runs, args.load, args.worker = 1, 0, "bare"
    t0 = time.time()
    ends = stress(args.runs, args.load, args.worker, args.hold_gil, port0=free_port() if args.smoke else 29620)
    print(
        f"\n{args.worker}{' --hold-gil' * args.hold_gil}: {ends['ok']}/{args.runs} clean exits with {args.load} busy "
        f"processes beside them "
        f"({time.time() - t0:.0f} s); " + ", ".join(f"{k}: {v}" for k, v in ends.items() if k != "ok")
    )


if __name__ == "__main__":
    main()
