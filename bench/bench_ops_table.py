"""One row per commit: `bench_ops.py` (this checkout's) run against each commit's `ris_nb`, one after the other in one
invocation, so the operator counts and the magnet_tiny quickstart step of every change sit in one table with the
512³ probe (one and two threads) and the load average (start → end of the timing) beside each row.

Usage: python bench/bench_ops_table.py COMMIT[:regional] [COMMIT ...] [--size 128] [--batch 1] [--threads 1]
       [--budget-s 60] [--reps 8] [--csv nbs/results/bench_ops.csv] [--only census|quickstart]

Each commit's `ris_nb/` is extracted with `git archive` into a temporary folder put first on PYTHONPATH (the
working tree is not touched); `bench_ops.py` writes its summary rows to a JSON-lines file per commit
(`BENCH_SUMMARY`), read back here. Counts do not depend on load; times do (a shared machine: compare rows only
beside their probes and load averages). With `--csv` the rows are appended to that file (its header widened when
this script has new columns). `COMMIT:regional` measures that commit with `bench_ops.py --compile regional` (its
repeated blocks compiled by inductor: a launch is then a compiled kernel or an eager call that runs one).
`--smoke`: HEAD's quickstart part, one kept timing, the row appended to a temporary CSV and printed (seconds).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIELDS = [
    "date",
    "commit",
    "subject",
    "size",
    "batch",
    "threads",
    "compile",
    "aten_calls",
    "top_level",
    "top_level_480px_b8",
    "launches",
    "launches_480px_b8",
    "ffn_top_480px_b8",
    "grid_sampler_calls",
    "qs_step_ms",
    "qs_samples_per_s",
    "qs_aten_calls",
    "qs_launches",
    "first_step_s",
    "qs_first_step_s",
    "probe_1t_ms",
    "probe_2t_ms",
    "load",
]
KEYS = {  # bench_ops.py summary row (start of its "what") → column
    "magnet_paper narrowed": "aten_calls",
    "same, top-level": "top_level",
    "same, launches": "launches",
    "launches per step at 480 px": "launches_480px_b8",
    "first step": "first_step_s",
    "top-level calls per step at 480 px": "top_level_480px_b8",
    "deformable-encoder FFN at 480 px": "ffn_top_480px_b8",
    "grid_sampler_2d calls": "grid_sampler_calls",
    "magnet_tiny quickstart step": "qs_step_ms",
    "magnet_tiny quickstart: aten": "qs_aten_calls",
    "magnet_tiny quickstart: launches": "qs_launches",
    "magnet_tiny quickstart: first step": "qs_first_step_s",
    "magnet_tiny quickstart": "qs_samples_per_s",
}


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True).stdout.strip()


def run_commit(spec: str, args, work: Path) -> dict:
    """bench_ops.py against the ris_nb of `spec` (COMMIT or COMMIT:regional): its summary as one row (its own output
    goes to stdout as it runs)."""
    commit, _, how = spec.partition(":")
    how = how or "none"
    src = work / spec.replace(":", "_")
    src.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "ris_nb"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive.stdout, check=True)
    summary = work / f"{commit}_{how}.jsonl"
    env = dict(os.environ, PYTHONPATH=str(src), BENCH_SUMMARY=str(summary))
    cmd = [sys.executable, str(ROOT / "bench" / "bench_ops.py"), "--size", str(args.size), "--batch", str(args.batch)]
    cmd += ["--threads", str(args.threads), "--budget-s", str(args.budget_s), "--reps", str(args.reps)]
    cmd += ["--compile", how] + (["--only", args.only] if args.only else [])
    print(f"\n## {commit} (compile: {how}) {git('log', '-1', '--format=%s', commit)[:100]}\n", flush=True)
    subprocess.run(cmd, env=env, check=True)
    row = {"commit": commit, "compile": how, "subject": git("log", "-1", "--format=%s", commit)[:80]}
    for line in summary.read_text().splitlines():
        r = json.loads(line)
        col = next((c for k, c in KEYS.items() if r["what"].startswith(k)), None)
        if col and col not in row:
            row[col] = r["value"]
        for k in ("probe_1t_ms", "probe_2t_ms", "load"):
            if k in r:
                row[k] = r[k]
    return row


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("commits", nargs="*", help="commits to measure, in table order (COMMIT or COMMIT:regional)")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--budget-s", type=float, default=60.0)
    ap.add_argument("--reps", type=int, default=8)
    ap.add_argument("--csv", type=Path, default=None, help="append the rows to this CSV")
    ap.add_argument("--only", choices=["census", "quickstart"], default=None, help="one part of bench_ops.py")
    ap.add_argument("--smoke", action="store_true", help="HEAD's quickstart part, one timing, a temporary CSV")
    args = ap.parse_args(argv)
    if args.smoke:
        with tempfile.TemporaryDirectory(prefix="bench_ops_table_smoke_") as tmp:
            out = Path(tmp) / "bench_ops.csv"
            main(
                ["HEAD", "--only", "quickstart", "--reps", "1", "--budget-s", "1", "--threads", "1", "--csv", str(out)]
            )
            return print(f"smoke: {out.name}\n{out.read_text()}", end="")
    if not args.commits:
        ap.error("name at least one commit")
    commits = [git("rev-parse", "--short", c.partition(":")[0]) + c[len(c.partition(":")[0]) :] for c in args.commits]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_ops_table_") as tmp:
        for c in commits:
            rows.append(run_commit(c, args, Path(tmp)))
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    for r in rows:
        r.update(date=date, size=args.size, batch=args.batch, threads=args.threads)
    print("\n| " + " | ".join(FIELDS[1:]) + " |\n|" + "---|" * (len(FIELDS) - 1))
    for r in rows:
        print("| " + " | ".join(str(r.get(k, "")) for k in FIELDS[1:]) + " |")
    base = rows[0]
    for col in ("top_level_480px_b8", "launches_480px_b8"):
        if base.get(col):
            ratios = ", ".join(
                f"{r['commit']}:{r['compile']} {base[col] / r[col]:.2f}×" for r in rows[1:] if r.get(col)
            )
            print(f"{col}: {base['commit']} {base[col]:,} per step; fewer by {ratios}")
    if args.csv:
        old = list(csv.DictReader(open(args.csv))) if args.csv.exists() else []
        with open(args.csv, "w", newline="") as f:  # rewritten whole: older rows get the new columns empty
            w = csv.DictWriter(f, fieldnames=FIELDS, lineterminator="\n")
            w.writeheader()
            w.writerows(old + rows)


if __name__ == "__main__":
    main()
