"""Time what a student's *Run All* costs: `python tools/run_all_times.py nbs/06_lavt.ipynb ...` (default: the course).

Jupyter's Run All ignores nbdev's flags (`#| slow`, `#| eval: false`), so this runs every code cell, in the notebook's
folder, in a fresh kernel, without `IN_TEST`, the way a student's first Run All does, and never writes the notebook.
It records each notebook's wall seconds, the first cell error if any, the tracked files the run changed (a notebook
must not rewrite them) and the machine's 512³ float32 matmul probe on one and two threads, measured just before the
notebook, into `nbs/results/run_all_times.csv` (one row per notebook, replaced on a re-run).

`--state` writes what the record says into each measured notebook's first cell (`**Run All:** about N min …`, N the
seconds rounded up to whole minutes; `tests/test_course_path.py` checks the two agree), replacing an older statement.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "nbs" / "results" / "run_all_times.csv"
FIELDS = ["notebook", "seconds", "error", "tracked_files_changed", "probe_1t_ms", "probe_2t_ms", "date"]


def course_notebooks() -> list[Path]:
    "The course path: notebooks numbered 00–89."
    return sorted((ROOT / "nbs").glob("[0-8][0-9]*.ipynb"))


def probe(threads: int) -> float:
    "The 512³ float32 matmul probe (ms, fastest of 5) on `threads` threads, in a fresh process."
    code = f"from ris_nb.testing import probe_ms; print(probe_ms(threads={threads}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return round(float(out.stdout.strip().splitlines()[-1]), 2)


def tracked_changes() -> set[str]:
    "Tracked files that differ from HEAD."
    out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
    return {line[3:] for line in out.stdout.splitlines()}


def run_all(path: Path, timeout: int) -> tuple[float, str]:
    "Execute every code cell of `path` in its folder as Run All does: (wall seconds, first error or '')."
    nb = nbformat.read(path, as_version=4)
    env = {k: v for k, v in os.environ.items() if k != "IN_TEST"}
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": path.parent}})
    t0, error = time.perf_counter(), ""
    try:
        client.execute(env=env)
    except CellExecutionError as e:
        error = str(e).strip().splitlines()[-1][:200]
    return time.perf_counter() - t0, error


def read_record() -> dict[str, dict]:
    if not RECORD.exists():
        return {}
    with RECORD.open() as f:
        return {r["notebook"]: r for r in csv.DictReader(f)}


def write_record(rows: dict[str, dict]) -> None:
    "Write the record atomically, sorted by notebook."
    tmp = RECORD.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        w.writerows(rows[k] for k in sorted(rows))
    tmp.replace(RECORD)


STATEMENT = re.compile(r"\n*\*\*Run All:\*\*[^\n]*")


def statement(row: dict) -> str:
    "The first cell's sentence for a record row."
    minutes = max(1, math.ceil(float(row["seconds"]) / 60))
    return (
        f"**Run All:** about {minutes} min on a laptop CPU (measured {float(row['seconds']):.0f} s on 2 cores, 512³ "
        f"matmul probe {row['probe_1t_ms']} ms on one thread); it needs nothing run before it."
    )


def state(rows: dict[str, dict]) -> None:
    "Write each error-free row's statement into its notebook's first cell (nothing else in the notebook changes)."
    for name, row in rows.items():
        path = ROOT / "nbs" / f"{name}.ipynb"
        if row["error"] or not path.exists():
            continue
        nb = json.loads(path.read_text())
        first = STATEMENT.sub("", "".join(nb["cells"][0]["source"])).rstrip("\n")
        nb["cells"][0]["source"] = (first + "\n\n" + statement(row)).splitlines(keepends=True)
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebooks", nargs="*", type=Path, help="default: every course notebook (00–89)")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    ap.add_argument("--state", action="store_true", help="only write the record into the notebooks' first cells")
    args = ap.parse_args()
    rows = read_record()
    if args.state:
        return state(rows)
    for path in [p.resolve() for p in args.notebooks] or course_notebooks():
        before = tracked_changes()
        p1, p2 = probe(1), probe(2)
        seconds, error = run_all(path, args.timeout)
        changed = sorted(tracked_changes() - before)
        rows[path.stem] = {
            "notebook": path.stem,
            "seconds": round(seconds, 1),
            "error": error,
            "tracked_files_changed": " ".join(changed),
            "probe_1t_ms": p1,
            "probe_2t_ms": p2,
            "date": time.strftime("%Y-%m-%d"),
        }
        write_record(rows)
        print(f"{path.stem}: {seconds:.0f} s (probe {p1} / {p2} ms){' ERROR ' + error if error else ''}", flush=True)


if __name__ == "__main__":
    main()
