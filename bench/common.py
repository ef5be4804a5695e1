"Shared timing helpers for the benchmarks: medians after warm-up, discarding runs where a matmul probe says the CPU is busy."
import statistics
import time

import torch

PROBE_FREE_MS = 0.8   # a 512³ float32 matmul on this machine when its 2 cores are free (the probe floor is re-measured per run; this is only a reference)


def probe_ms() -> float:
    a = torch.randn(512, 512)
    t = time.perf_counter(); a @ a; return (time.perf_counter() - t) * 1e3


def timed(fn, n: int = 20, warmup: int = 2, max_probe_ms: float = 4 * PROBE_FREE_MS, max_tries: int = 200) -> dict:
    "Median/p10/p90 wall time (ms) of `fn()` over `n` kept runs; a run is kept when the probe before it is fast."
    for _ in range(warmup): fn()
    kept, tries = [], 0
    while len(kept) < n and tries < max_tries:
        tries += 1
        if probe_ms() > max_probe_ms: time.sleep(0.05); continue
        t = time.perf_counter(); fn(); kept.append((time.perf_counter() - t) * 1e3)
    if not kept: raise RuntimeError("the CPU stayed busy: no clean measurement")
    q = statistics.quantiles(kept, n=10) if len(kept) >= 2 else [kept[0]] * 9
    return {"median_ms": statistics.median(kept), "p10_ms": q[0], "p90_ms": q[-1], "n": len(kept), "tries": tries}


def table(rows: list[dict], cols: list[str]) -> str:
    "A markdown table of `rows` restricted to `cols`."
    fmt = lambda v: f"{v:.2f}" if isinstance(v, float) else str(v)
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(out)
