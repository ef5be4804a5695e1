"""Shared timing helpers for the benchmarks: a probe floor measured on this machine, probe-filtered medians, interleaved
A/B.

The machine is shared and machines differ (a 512³ float32 matmul takes 2.3 ms on one thread of one of our machines, 4 ms
on another), so nothing here holds a machine constant. At start `Probe()` takes the minimum of ~50 matmul probes: that
is this machine's floor (a faster probe seen later lowers it: the start was busy). Every timed run is bracketed by two
probes; the run is kept when both are within `Probe.tolerance` (2×) of the final floor, and dropped otherwise (another
process had the cores). Comparisons are made A/B in one process, rep by rep, in alternating order, so both sides see the
same machine; their ratio is the verdict, never a number remembered from elsewhere.
Every table is printed with the floor and the kept/dropped counts (`header`).
"""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ris_nb.machine import probe_ms as _fastest_probe


def probe_ms(n: int = 512) -> float:
    "Wall time (ms) of one n³ float32 matmul — the probe (`ris_nb.machine.probe_ms` with a single repetition)."
    return _fastest_probe(n, reps=1)


def probes_1t_2t() -> tuple[float, float]:
    "The 512³ probe (fastest of five, ms) on one thread and on two: the pair quoted beside every time."
    return _fastest_probe(threads=1), _fastest_probe(threads=2)


def probe_note(start: tuple[float, float], end: tuple[float, float]) -> str:
    "The `probes_1t_2t` pairs at a bench's start and end, as printed above its table."
    return (
        f"512³ float32 matmul probe: {start[0]:.2f} / {end[0]:.2f} ms on one thread, {start[1]:.2f} / {end[1]:.2f} ms "
        "on two (start / end)"
    )


def probe_cells(start: tuple[float, float], end: tuple[float, float]) -> dict:
    "The probe cells of a table row: the faster of start and end, on one thread and on two."
    return {"probe 1t ms": round(min(start[0], end[0]), 2), "probe 2t ms": round(min(start[1], end[1]), 2)}


class Probe:
    "This machine's probe floor (min of `n` probes at start) and the keep rule: probe before a run ≤ tolerance × floor."

    tolerance = 2.0

    def __init__(self, n: int = 50):
        for _ in range(3):
            probe_ms()  # page in the buffers, wake the threads
        self.samples = [probe_ms() for _ in range(n)]
        self.floor = self.start_floor = min(self.samples)
        self.stats: list[Stats] = []  # every measurement made with this probe

    @property
    def kept(self) -> int:
        return sum(s.kept for s in self.stats)

    @property
    def dropped(self) -> int:
        return sum(s.dropped for s in self.stats)

    def __call__(self) -> float:
        "Probe now (ms); a probe below the floor lowers it."
        p = probe_ms()
        self.floor = min(self.floor, p)
        return p

    def quiet(self, p: float) -> bool:
        return p <= self.tolerance * self.floor

    def line(self) -> str:
        low = f", lowered from {self.start_floor:.2f} by a later probe" if self.floor < self.start_floor else ""
        return (
            f"probe floor {self.floor:.2f} ms (min of {len(self.samples)} 512³ float32 matmuls at start{low}; "
            f"{torch.get_num_threads()} threads); a run is kept when the probes just before and after it are ≤ "
            f"{self.tolerance:g}× the floor"
        )


@dataclass
class Stats:
    """(probe ms, time ms, round) of every run of one timed function; `times` are the kept ones (probes ≤ tolerance ×
    floor)."""

    name: str
    probe: Probe
    runs: list = field(default_factory=list)

    min_kept = 3  # fewer kept runs than this: report every run, flagged

    @property
    def filtered(self) -> bool:
        return self.kept >= self.min_kept

    @property
    def times(self) -> list:
        "Kept runs; all runs when fewer than `min_kept` were quiet (the CPU was busy throughout — see `busy_note`)."
        kept = [t for p, t, _ in self.runs if self.probe.quiet(p)]
        return kept if len(kept) >= self.min_kept else [t for _, t, _ in self.runs]

    @property
    def kept(self) -> int:
        return sum(self.probe.quiet(p) for p, _, _ in self.runs)

    @property
    def dropped(self) -> int:
        return len(self.runs) - self.kept

    @property
    def median(self) -> float:
        return statistics.median(self.times) if self.times else float("nan")

    def q(self, i: int) -> float:
        if len(self.times) < 2:
            return self.median
        return statistics.quantiles(self.times, n=10, method="inclusive")[i]

    @property
    def p10(self) -> float:
        return self.q(0)

    @property
    def p90(self) -> float:
        return self.q(-1)


def time_left() -> float:
    """Seconds until $BENCH_DEADLINE (epoch seconds; `run_all.py` sets it so that a bench stops measuring and prints
    what it has before its time limit); infinite without it."""
    d = os.environ.get("BENCH_DEADLINE")
    return float(d) - time.time() if d else float("inf")


def interleaved(
    fns: dict[str, Callable], probe: Probe, reps: int = 20, warmup: int = 2, budget_s: float = 120.0
) -> dict[str, Stats]:
    """Time every function in `fns` rep by rep, in one process, order alternating each round (A B, B A, …).
    Each run is bracketed by probes and kept only when both are quiet. Stops when every function has `reps`
    kept runs, or after `budget_s` seconds or at $BENCH_DEADLINE (then whatever was measured is reported, with the drop
    count); at least one round is always run."""
    names = list(fns)
    for _ in range(warmup if time_left() > 0 else 0):
        for n in names:
            fns[n]()
    stats = {n: Stats(n, probe) for n in names}
    end, rnd = time.perf_counter() + min(budget_s, max(time_left(), 0.0)), 0
    while rnd == 0 or (min(s.kept for s in stats.values()) < reps and time.perf_counter() < end):
        order = names if rnd % 2 == 0 else names[::-1]
        rnd += 1
        for n in order:
            if stats[n].kept >= reps and len(names) == 1:
                continue  # A/B: every function runs every round (paired)
            p = probe()
            t = time.perf_counter()
            fns[n]()
            dt = (time.perf_counter() - t) * 1e3
            stats[n].runs.append((max(p, probe()), dt, rnd))  # bracketed: quiet before AND after the run
    probe.stats += list(stats.values())
    return stats


def timed(fn: Callable, probe: Probe, reps: int = 20, warmup: int = 2, budget_s: float = 120.0) -> Stats:
    "One function, probe-filtered: `interleaved` with a single entry."
    return interleaved({"fn": fn}, probe, reps, warmup, budget_s)["fn"]


def paired_ratio(a: Stats, b: Stats) -> float:
    """a/b of one interleaved measurement (> 1: b is faster): median of a's kept runs / median of b's kept runs (both
    were sampled over the same stretch of time, alternating); when either side has fewer than `Stats.min_kept` kept
    runs, the median over rounds of a/b within the same round, every round (flagged by `busy_note`)."""
    if a.filtered and b.filtered:
        return a.median / b.median
    A, B = ({r: t for _, t, r in s.runs} for s in (a, b))
    pairs = [A[r] / B[r] for r in A if r in B]
    return statistics.median(pairs) if pairs else float("nan")


def busy_note(*stats: Stats) -> str:
    "A warning when some timed function had fewer than `min_kept` quiet runs (its median is then over every run)."
    busy = [s.name for s in stats if not s.filtered]
    return (
        (
            f"CPU busy throughout for {', '.join(busy)}: fewer than {Stats.min_kept} runs had a quiet probe, "
            "so those medians "
            "are over every run and a ratio is the median of same-round ratios (like with like, but expect more noise)"
        )
        if busy
        else ""
    )


def header(title: str, probe: Probe, extra: str = "") -> str:
    "Title line + the probe floor and kept/dropped counts of this run, to print above every table."
    counts = f"; this run: {probe.kept} kept, {probe.dropped} dropped" if probe.stats else ""
    return f"\n### {title}\n\n{probe.line()}{counts}" + (f"\n{extra}" if extra else "") + "\n"


def table(rows: list[dict], cols: list[str]) -> str:
    "A markdown table of `rows` restricted to `cols`."

    def fmt(v):
        return f"{v:.2f}" if isinstance(v, float) else str(v)

    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(out)


def stats_cells(s: Stats) -> dict:
    "median / p10–p90 / kept / dropped cells of a table row."
    return {
        "median ms": s.median,
        "p10–p90 ms": f"{s.p10:.2f}–{s.p90:.2f}",
        "kept/dropped": f"{s.kept}/{s.dropped}" + ("" if s.filtered else " (all runs used)"),
    }


def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


def fixture_dir(name: str, fixtures: str | None = None) -> Path:
    "Folder of an official fixture: `--fixtures DIR` if given, else the repository's tests/fixtures (or nbs/fixtures)."
    roots = [Path(fixtures)] if fixtures else [repo_root() / "tests" / "fixtures", repo_root() / "nbs" / "fixtures"]
    for r in roots:
        if (r / name / "state_dict.safetensors").is_file():
            return r / name
    raise FileNotFoundError(
        f"official fixture {name!r} not found under {', '.join(map(str, roots))}; "
        f"pass --fixtures DIR (a folder holding {name}/state_dict.safetensors)"
    )


def record(bench: str, rows: list[dict], probe: Probe):
    """Append summary rows (what, value, unit, target, verdict) with the probe floor to $BENCH_SUMMARY (JSON lines),
    if set."""
    path = os.environ.get("BENCH_SUMMARY")
    if not path:
        return
    with open(path, "a") as f:
        for r in rows:
            f.write(
                json.dumps(
                    {
                        "bench": bench,
                        "probe_floor_ms": round(probe.floor, 3),
                        "kept": probe.kept,
                        "dropped": probe.dropped,
                        **r,
                    }
                )
                + "\n"
            )  # a row may carry its own kept/dropped
