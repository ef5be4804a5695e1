"""The quickstart's recipes, run end to end as `make quickstart` runs them: wall time, training samples/s, each val
score with the minute it was printed, the 512³ matmul probe and the CPU's vector flags, one table row per recipe.

Each recipe is `ris_nb train --preset magnet_tiny` on the quickstart's data (ShapeRefs' plain language, 3,000 scenes at
64 px, seed 0: `ris_nb synth` once into --data) with its own `--set` items, in a fresh process; the final evaluation
is skipped (`--no-eval`): the val score is the one training selects by, as in the quickstart's report. `--smoke` runs
each recipe for a few steps on 60 scenes in a temporary folder (seconds; what tests/test_scripts_run.py runs).

    python bench/bench_quickstart.py --recipe today --recipe batch64 [--data data/shaperefs] [--torchrun]
    python bench/bench_quickstart.py --smoke
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# name -> the `--set` items of `ris_nb train` (beyond the preset's); "today" is the Makefile's QS_SET validating every
# 600 steps; "ddp64" is bench/README's session-25 torchrun recipe (run it with --torchrun)
RECIPES = {
    "today": "data.image_size=64 train.batch_size=32 train.max_steps=1800 train.eval_every=600 train.ckpt_every=600",
    "today-bf16": "data.image_size=64 train.batch_size=32 train.max_steps=1800 train.eval_every=300 "
    "train.ckpt_every=10000 train.amp=bf16",
    "batch64": "data.image_size=64 train.batch_size=64 train.lr=2e-3 train.max_steps=900 train.eval_every=150 "
    "train.ckpt_every=10000",
    "batch64-bf16": "data.image_size=64 train.batch_size=64 train.lr=2e-3 train.max_steps=900 train.eval_every=150 "
    "train.ckpt_every=10000 train.amp=bf16",
    "ddp64": "data.image_size=64 train.batch_size=64 train.lr=3e-3 train.max_steps=1200 train.eval_every=150 "
    "train.ckpt_every=10000",
}
VECTOR_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def cpu_line() -> str:
    "The CPU's model name and which of `VECTOR_FLAGS` it has."
    model, flags = "unknown CPU", set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name") and model == "unknown CPU":
            model = line.split(":", 1)[1].strip()
        if line.startswith("flags") and not flags:
            flags = set(line.split(":", 1)[1].split())
    return f"{model}; {' '.join(f for f in VECTOR_FLAGS if f in flags) or 'no AVX2'}"


def probe_pair() -> str:
    "The 512³ float32 matmul probe on one and two threads (ms), in a fresh process."
    code = "from ris_nb.machine import probe_ms; print(f'{probe_ms(threads=1):.2f} / {probe_ms(threads=2):.2f}')"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT).stdout.strip()


def train_command(recipe: str, data: Path, out: Path, torchrun: bool, extra: list[str]) -> list[str]:
    "The `ris_nb train` command of `recipe` (under torchrun: two processes of one thread each)."
    head = [sys.executable, "-m", "ris_nb"]
    if torchrun:
        head = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "ris_nb"]
    sets = RECIPES[recipe].split() + extra
    return (
        [*head, "train", "--preset", "magnet_tiny", "--data", str(data), "--out", str(out), "--no-eval"]
        + (["--threads", "1"] if torchrun else [])
        + ["--set", *sets]
    )


def watch(cmd: list[str], log: Path) -> tuple[int, float, list[tuple[float, int, float]]]:
    "Run `cmd`, noting each val line of `log` with the seconds it appeared at: exit code, wall, [(s, step, oIoU)]."
    start, seen, vals = time.monotonic(), 0, []
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MPLBACKEND": "Agg"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while True:
        done = proc.poll() is not None
        lines = log.read_text().splitlines() if log.exists() else []
        for line in lines[seen:]:
            rec = json.loads(line)
            if rec.get("split") == "val":
                vals.append((time.monotonic() - start, rec["step"], rec["oIoU"]))
        seen = len(lines)
        if done:
            break
        time.sleep(1.0)
    if proc.returncode:
        sys.stderr.write(proc.stderr.read()[-3000:])
    return proc.returncode, time.monotonic() - start, vals


def samples_per_s(log: Path) -> float:
    "The median training rate the run logged."
    rates = [r["samples_per_s"] for r in map(json.loads, log.read_text().splitlines()) if r.get("samples_per_s")]
    return statistics.median(rates) if rates else float("nan")


def ensure_data(data: Path, n_images: int) -> None:
    "The quickstart's ShapeRefs in `data` (generated once, as `make quickstart` does)."
    if not (data / "instances.json").exists():
        synth = [sys.executable, "-m", "ris_nb", "synth", "--out", str(data), "--n-images", str(n_images)]
        subprocess.run([*synth, "--seed", "0", "--size", "64"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", action="append", choices=sorted(RECIPES), help="default: every recipe")
    ap.add_argument("--data", default="data/shaperefs", help="the quickstart's dataset folder (made if missing)")
    ap.add_argument("--out", default=None, help="runs go under here (default: a temporary folder)")
    ap.add_argument("--torchrun", action="store_true", help="two processes of one thread each (gloo)")
    ap.add_argument("--set", dest="extra", nargs="*", default=[], help="more --set items for every recipe")
    ap.add_argument("--smoke", action="store_true", help="a few steps on 60 scenes in a temporary folder")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench_quickstart_"))
    data, extra = Path(args.data), list(args.extra)
    if args.smoke:
        data = tmp / "shaperefs"
        extra += ["train.max_steps=4", "train.eval_every=2", "train.batch_size=4", "train.log_every=1"]
    ensure_data(data, 60 if args.smoke else 3000)
    print(f"CPU: {cpu_line()}; 512³ matmul probe {probe_pair()} ms (one / two threads)")
    print("| recipe | processes | wall | samples/s | val oIoU (minute: score) | best | exit |")
    print("|---|---|---|---|---|---|---|")
    status = 0
    for name in args.recipe or list(RECIPES):
        out = Path(args.out or tmp) / name
        code, wall, vals = watch(train_command(name, data, out, args.torchrun, extra), out / "log.jsonl")
        status |= code
        timeline = ", ".join(f"{s / 60:.1f}: {v:.2f}" for s, _, v in vals)
        best = max((v for *_, v in vals), default=float("nan"))
        procs = "2 × 1 thread" if args.torchrun else "1"
        rate = samples_per_s(out / "log.jsonl") if (out / "log.jsonl").exists() else float("nan")
        print(f"| {name} | {procs} | {wall / 60:.1f} min | {rate:.0f} | {timeline} | {best:.2f} | {code} |", flush=True)
    print(f"probe after: {probe_pair()} ms")
    return status


if __name__ == "__main__":
    sys.exit(main())
