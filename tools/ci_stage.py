"""Time the stages of `.ci/run` and `make test-all` against their budgets, and print them as one table at the end.

`run NAME BUDGET -- CMD ...` runs CMD, prints its wall seconds beside BUDGET (seconds on an idle 2-core machine),
naming it when it ran past, appends a row to the file `$CI_STAGES` (when set) and exits with CMD's status.
`table [FILE]` prints FILE's rows (default `$CI_STAGES`) as a table with their sum and the stages past their budget.
Standard library only: `.ci/run` times its first stages before the virtual environment exists.

    CI_STAGES=/tmp/stages.tsv python3 tools/ci_stage.py run notebooks 600 -- make test
    python3 tools/ci_stage.py table /tmp/stages.tsv
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path


def over(seconds: float, budget: float) -> bool:
    "Whether a stage of `seconds` ran past its `budget`."
    return seconds > budget


def run_stage(name: str, budget: float, cmd: list[str], record: str | None) -> int:
    "Run `cmd` as stage `name`; print and record its wall seconds beside `budget`; its exit status."
    start = time.monotonic()
    status = subprocess.run(cmd).returncode
    seconds = time.monotonic() - start
    past = f", PAST ITS BUDGET by {seconds - budget:.0f} s" if over(seconds, budget) else ""
    print(f"== stage {name}: {seconds:.0f} s (budget {budget:.0f} s{past}), exit {status}", flush=True)
    if record:
        with open(record, "a") as f:
            f.write(f"{name}\t{seconds:.1f}\t{budget:.0f}\t{status}\n")
    return status


def read_rows(path: str) -> list[tuple[str, float, float, int]]:
    "The (name, seconds, budget, status) rows of a stage file."
    rows = []
    for line in Path(path).read_text().splitlines():
        name, seconds, budget, status = line.split("\t")
        rows.append((name, float(seconds), float(budget), int(status)))
    return rows


def table(rows: list[tuple[str, float, float, int]]) -> str:
    "The stages as a markdown table, their sum, and the names of those past their budget."
    lines = ["| stage | wall | budget | exit |", "|---|---|---|---|"]
    for name, seconds, budget, status in rows:
        mark = " **past**" if over(seconds, budget) else ""
        lines.append(f"| {name} | {seconds:.0f} s{mark} | {budget:.0f} s | {status} |")
    total, budget = sum(r[1] for r in rows), sum(r[2] for r in rows)
    lines.append(f"| all | {total:.0f} s ({total / 60:.1f} min) | {budget:.0f} s ({budget / 60:.1f} min) | |")
    past = [r[0] for r in rows if over(r[1], r[2])]
    lines.append("stages past their budget: " + (", ".join(past) if past else "none"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cmd = argv[argv.index("--") + 1 :] if "--" in argv else []
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    r = sub.add_parser("run", help="run one stage: NAME BUDGET -- CMD ...")
    r.add_argument("name")
    r.add_argument("budget", type=float, help="seconds")
    t = sub.add_parser("table", help="print the recorded stages")
    t.add_argument("file", nargs="?", default=os.environ.get("CI_STAGES"))
    args = ap.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    if args.what == "run":
        if not cmd:
            ap.error("run: give the command after --")
        return run_stage(args.name, args.budget, cmd, os.environ.get("CI_STAGES"))
    if not args.file or not Path(args.file).exists():
        print("no stage file (set CI_STAGES or give FILE)", file=sys.stderr)
        return 2
    print(table(read_rows(args.file)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
