"""CPU bfloat16 autocast against float32 at the quickstart's budget: learning (val oIoU, per expression type) and speed.

Each row is one `ris_nb train` run: preset × seed × `train.amp` (off = float32, bf16 = autocast on a CPU with native
bf16), 1,800 steps of 32 at 64 px on the 3,000-scene ShapeRefs (the `make quickstart` recipe). Rows are appended to
`nbs/results/amp_13a.csv` as they finish, so an interrupted run resumes where it stopped; runs alternate fp32/bf16 per
seed so both precisions see the same machine. The 512³ probe (one and two threads) is taken before every run.

    python bench/bench_amp.py --data data/shaperefs --presets lavt_tiny magnet_tiny --seeds 0 1 2
    OMP_NUM_THREADS=1 python bench/bench_amp.py --presets magnet_tiny --seeds 2 --amps off --results a.csv &   # one
    thread OMP_NUM_THREADS=1 python bench/bench_amp.py --presets magnet_tiny --seeds 2 --amps bf16 --results b.csv  #
    each, paired python bench/bench_amp.py --speed --data data/shaperefs     # step time only: fp32 and bf16 steps
    interleaved in one process
                                                                # (written to nbs/results/amp_speed_13a.csv)
    python bench/bench_amp.py --smoke    # both parts in seconds: lavt_tiny, 2 steps of 4 on 40 scenes, temporary CSVs
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import probes_1t_2t  # noqa: E402
from ris_nb.run_folder import read_log  # noqa: E402

QUICKSTART = [
    "data.image_size=64",
    "train.batch_size=32",
    "train.max_steps=1800",
    "train.eval_every=600",
    "train.ckpt_every=600",
]
SMOKE = ["data.image_size=64", "train.batch_size=4", "train.max_steps=2", "train.eval_every=2", "train.ckpt_every=2"]
FIELDS = [
    "preset",
    "seed",
    "amp",
    "samples",
    "oIoU",
    "mIoU",
    "P@0.5",
    "attribute",
    "location",
    "relation",
    "ordinal",
    "negation",
    "wall_s",
    "samples_per_s",
    "probe_1t_ms",
    "probe_2t_ms",
    "threads",
]


def training_rate(run: Path) -> float:
    "Median training samples/s over the logged steps of `log.jsonl` (start-up and validation excluded)."
    rows = read_log(run)
    rates = sorted(r["samples_per_s"] for r in rows if r.get("samples_per_s"))
    return rates[len(rates) // 2] if rates else float("nan")


def one_run(preset: str, seed: int, amp: str, data: Path, out: Path, recipe: list[str] = QUICKSTART) -> dict:
    "Train and evaluate one configuration (the `--set` items `recipe`); its metrics, time and probes."
    one, two = probes_1t_2t()
    run = out / f"{preset}-{amp}-s{seed}"
    cmd = [
        sys.executable,
        "-m",
        "ris_nb",
        "train",
        "--preset",
        preset,
        "--data",
        str(data),
        "--out",
        str(run),
        "--set",
        *recipe,
        f"seed={seed}",
        f"train.amp={amp}",
    ]
    t0 = time.time()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.time() - t0
    val = json.loads((run / "results.json").read_text())["val"]
    res, by_type = val["overall"], val.get("by_type", {})
    train = json.loads((run / "config.json").read_text())["train"]
    return {
        "preset": preset,
        "seed": seed,
        "amp": amp,
        "samples": int(train["max_steps"]) * int(train["batch_size"]),
        "oIoU": round(res["oIoU"], 1),
        "mIoU": round(res["mIoU"], 1),
        "P@0.5": round(res["P@0.5"], 1),
        **{t: round(by_type[t]["oIoU"], 1) if t in by_type else "" for t in FIELDS[7:12]},
        "wall_s": round(wall, 1),
        "samples_per_s": round(training_rate(run), 1),
        "probe_1t_ms": round(one, 2),
        "probe_2t_ms": round(two, 2),
        "threads": os.environ.get("OMP_NUM_THREADS", ""),
    }


def step_times(preset: str, data: Path, reps: int = 12, batch: int = 32) -> dict[str, float]:
    """Median seconds of one training step (forward, losses, backward, AdamW) in float32 and under bf16 autocast,
    interleaved."""
    import statistics
    from ris_nb.training_run import prepare
    from ris_nb.presets import get_preset

    cfg = get_preset(preset).override(
        {"data.root": str(data.parent), "data.dataset": data.name, "data.image_size": 64, "train.batch_size": batch}
    )
    _, loaders, model, cfg = prepare(cfg, splits=["train"])
    batch_ = next(iter(loaders["train"]))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(bf16: bool) -> float:
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model.losses(model(batch_), batch_)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        return time.perf_counter() - t

    model.train()
    step(False)
    step(True)  # warm-up
    times = {False: [], True: []}
    for i in range(reps):
        for bf16 in (False, True) if i % 2 == 0 else (True, False):
            times[bf16].append(step(bf16))
    return {"fp32_ms": 1000 * statistics.median(times[False]), "bf16_ms": 1000 * statistics.median(times[True])}


SPEED_FIELDS = [
    "preset",
    "fp32_ms",
    "bf16_ms",
    "speedup",
    "probe_1t_ms",
    "probe_2t_ms",
    "probe_after_1t_ms",
    "probe_after_2t_ms",
    "load_before",
    "load_after",
    "threads",
]


def speed_table(presets: list[str], data: Path, results: Path | None = None, reps: int = 12, batch: int = 32) -> None:
    "Print fp32 and bf16 step times per preset with both probes (before and after); write them to `results` if given."
    one, two = probes_1t_2t()
    load0 = os.getloadavg()[0]
    print(
        f"512³ float32 matmul probe: {one:.2f} ms on one thread, {two:.2f} ms on two; "
        f"{torch.get_num_threads()} threads; "
        f"batch {batch}, 64 px; load average {load0:.1f} on {os.cpu_count()} cores"
    )
    print("| preset | fp32 step (ms) | bf16 step (ms) | speed-up |\n|---|---|---|---|")
    rows = []
    for p in presets:
        t = step_times(p, data, reps, batch)
        rows.append(
            {
                "preset": p,
                "fp32_ms": round(t["fp32_ms"], 1),
                "bf16_ms": round(t["bf16_ms"], 1),
                "speedup": round(t["fp32_ms"] / t["bf16_ms"], 2),
            }
        )
        print(f"| {p} | {t['fp32_ms']:.0f} | {t['bf16_ms']:.0f} | {t['fp32_ms'] / t['bf16_ms']:.2f}× |", flush=True)
    one2, two2 = probes_1t_2t()
    load1 = os.getloadavg()[0]
    print(f"probe after: {one2:.2f} ms on one thread, {two2:.2f} ms on two; load average {load1:.1f}")
    if results is None:
        return
    for r in rows:
        r.update(
            probe_1t_ms=round(one, 2),
            probe_2t_ms=round(two, 2),
            probe_after_1t_ms=round(one2, 2),
            probe_after_2t_ms=round(two2, 2),
            load_before=round(load0, 1),
            load_after=round(load1, 1),
            threads=torch.get_num_threads(),
        )
    tmp = results.with_name(f".{results.name}.tmp-{os.getpid()}")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=SPEED_FIELDS)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, results)
    print(f"written: {results}")


def done_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def append_row(path: Path, row: dict) -> None:
    "Rewrite the CSV with `row` added, through a temp file (never half-written)."
    rows = done_rows(path) + [row]
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("data/shaperefs"))
    ap.add_argument("--out", type=Path, default=Path("runs/bench_amp"))
    ap.add_argument("--results", type=Path, default=Path("nbs/results/amp_13a.csv"))
    ap.add_argument("--presets", nargs="+", default=["lavt_tiny", "magnet_tiny"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument(
        "--amps",
        nargs="+",
        choices=["off", "bf16"],
        default=["off", "bf16"],
        help="precisions to run (one each in two processes runs a seed's pair side by side)",
    )
    ap.add_argument(
        "--speed", action="store_true", help="only the interleaved step times (fp32 vs bf16) of the presets"
    )
    ap.add_argument(
        "--speed-results",
        type=Path,
        default=Path("nbs/results/amp_speed_13a.csv"),
        help="CSV the --speed table is written to",
    )
    ap.add_argument("--smoke", action="store_true", help="both parts at a tiny budget, temporary files (seconds)")
    args = ap.parse_args(argv)
    if args.smoke:
        return smoke()
    if args.speed:
        return speed_table(
            args.presets + (["sag_tiny"] if "sag_tiny" not in args.presets else []), args.data, args.speed_results
        )
    runs(args)


def smoke() -> None:
    "One run (lavt_tiny, float32, 2 steps of 4) and its step times, on 40 scenes; the CSVs printed."
    from ris_nb.data.shaperefs_files import generate

    with tempfile.TemporaryDirectory(prefix="bench_amp_") as tmp:
        data = Path(tmp) / "shaperefs"
        generate(data, n_images=40, seed=0, size=64, verbose=False)
        results = Path(tmp) / "amp_13a.csv"
        args = argparse.Namespace(presets=["lavt_tiny"], seeds=[0], amps=["off"], data=data, out=Path(tmp) / "runs")
        runs(args, results, SMOKE)
        speed_table(["lavt_tiny"], data, Path(tmp) / "amp_speed_13a.csv", reps=1, batch=4)
        for f in (results, Path(tmp) / "amp_speed_13a.csv"):
            print(f"smoke: {f.name}\n{f.read_text()}", end="")


def runs(args: argparse.Namespace, results: Path | None = None, recipe: list[str] = QUICKSTART) -> None:
    "The training rows `args` asks for that `results` (default: args.results) lacks, each added as it finishes."
    results = results or args.results
    have = {(r["preset"], r["seed"], r["amp"]) for r in done_rows(results)}
    for preset in args.presets:
        for seed in args.seeds:
            for amp in args.amps:
                if (preset, str(seed), amp) in have:
                    continue
                row = one_run(preset, seed, amp, args.data, args.out, recipe)
                append_row(results, row)
                print(" | ".join(str(row[k]) for k in FIELDS), flush=True)
    rows = done_rows(results)
    print(f"\n{'preset':12} {'amp':5} {'n':>2} {'val oIoU':>14} {'samples/s':>10}")
    for preset in args.presets:
        for amp in ("off", "bf16"):
            r = [x for x in rows if x["preset"] == preset and x["amp"] == amp]
            if not r:
                continue
            v = torch.tensor([float(x["oIoU"]) for x in r])
            sd = v.std().item() if len(v) > 1 else float("nan")
            sps = sum(float(x["samples_per_s"]) for x in r) / len(r)
            print(f"{preset:12} {amp:5} {len(r):>2} {v.mean().item():8.1f} ± {sd:3.1f} {sps:10.1f}")


if __name__ == "__main__":
    main()
