"""The command line of the two ladder scripts (`tools/magnet_ladder.py`, `tools/sag_ladder.py`): `--data`, `--out`,
`--rungs` (checked against the ladder), `--results` and `--smoke`, then one call that trains and scores the rungs.
A helper, not a script: each ladder's `main` calls `ladder_main`, and their `--smoke` tests run it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, Sequence


def ladder_main(
    argv: list[str] | None,
    description: str,
    ladder: Sequence,
    results: str,
    language: str,
    run_rungs: Callable[[Path, Path, list[int], Path], None],
    smoke: Callable[[], int],
) -> int:
    "Parse a ladder script's arguments and run its rungs (or its smoke run); the exit status."
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--data", type=Path, help=f"a ShapeRefs folder of the {language} language")
    ap.add_argument("--out", type=Path, help="a folder for the runs, one per rung")
    ap.add_argument("--rungs", type=int, nargs="*", default=list(range(len(ladder))))
    ap.add_argument("--results", type=Path, default=Path(results))
    ap.add_argument("--smoke", action="store_true", help="two rungs, 2 steps each, in a temporary folder")
    a = ap.parse_args(argv)
    if a.smoke:
        return smoke()
    if a.data is None or a.out is None:
        ap.error("--data and --out are required (or --smoke)")
    bad = [k for k in a.rungs if not 0 <= k < len(ladder)]
    if bad:
        ap.error(f"--rungs {bad}: expected rungs 0–{len(ladder) - 1}")
    run_rungs(a.data, a.out, a.rungs, a.results)
    return 0
