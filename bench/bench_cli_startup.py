"""How long the `ris_nb` command takes to start: `python -c pass`, `python -m ris_nb --help` and `python -m ris_nb
presets`, each a fresh process, interleaved round by round, with the 512³ float32 matmul probe on one and on two threads
beside the table (taken in this process, before and after); whether each imports torch comes from one untimed
`-X importtime` run.

Usage: python bench/bench_cli_startup.py [--rounds 10] [--smoke (one round)]
Neither command imports torch (tests/test_cli_startup.py checks that); the table says whether a run did.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import probes_1t_2t, repo_root, table  # noqa: E402

COMMANDS = {
    "python -c pass": ["-c", "pass"],
    "python -m ris_nb --help": ["-m", "ris_nb", "--help"],
    "python -m ris_nb presets": ["-m", "ris_nb", "presets"],
}
COLS = ["command", "median s", "min s", "max s", "runs", "torch imported"]


def wall_s(args: list[str]) -> float:
    "Wall seconds of one `python ARGS` from the repository root."
    t = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=repo_root(), capture_output=True, check=True)
    return time.perf_counter() - t


def imports_torch(args: list[str]) -> bool:
    "Whether `python ARGS` imports torch (`-X importtime`'s list, in a run of its own, not timed)."
    p = subprocess.run(
        [sys.executable, "-X", "importtime", *args], cwd=repo_root(), capture_output=True, text=True, check=True
    )
    return any(line.rstrip().endswith("| torch") for line in p.stderr.splitlines())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=10, help="fresh processes per command (default: 10)")
    ap.add_argument("--smoke", action="store_true", help="one round (seconds)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.rounds = 1
    before = probes_1t_2t()
    torch_seen = {name: imports_torch(cmd) for name, cmd in COMMANDS.items()}  # also warms the file cache
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.rounds):  # interleaved: every command sees the same moments of a shared machine
        for name, cmd in COMMANDS.items():
            times[name].append(wall_s(cmd))
    after = probes_1t_2t()
    rows = [
        {
            "command": f"`{name}`",
            "median s": statistics.median(ts),
            "min s": min(ts),
            "max s": max(ts),
            "runs": len(ts),
            "torch imported": "yes" if torch_seen[name] else "no",
        }
        for name, ts in times.items()
    ]
    print("\n### `ris_nb` start-up (fresh processes)\n")
    print(f"probe 512³ float32 matmul, 1 / 2 threads: {before[0]:.2f} / {before[1]:.2f} ms before, ", end="")
    print(f"{after[0]:.2f} / {after[1]:.2f} ms after\n")
    print(table(rows, COLS))


if __name__ == "__main__":
    main()
