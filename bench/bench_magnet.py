"""magnet_tiny forward (batch 8, 128 px) and training-step time on CPU; the official-config network (fixture) forward too.
Medians after warm-up; runs where a 512³ matmul probe is slow (CPU busy) are discarded. Usage: python bench/bench_magnet.py [threads]"""
import json, sys, time
from pathlib import Path
from types import SimpleNamespace

import torch

from ris_nb.core import get_preset, build_model
from ris_nb.core import official_fixture
from ris_nb.models.magnet import load_official

OFFICIAL_FWD_S = 0.302   # official network, fixture tiny config, batch 8, 2 threads (fixture README)
FIX = official_fixture("magnet_official_tiny")

def probe() -> float:
    a = torch.randn(512, 512); t = time.perf_counter(); a @ a; return time.perf_counter() - t

def timed(fn, n=15, warm=2, probe_max=4e-3):
    for _ in range(warm): fn()
    ts, dropped = [], 0
    while len(ts) < n and dropped < 3 * n:
        p0 = probe(); t = time.perf_counter(); fn(); dt = time.perf_counter() - t; p1 = probe()
        if max(p0, p1) > probe_max: dropped += 1; continue
        ts.append(dt)
    ts = ts or [float("nan")]
    return sorted(ts)[len(ts) // 2], len(ts), dropped

def main():
    torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
    rows = []
    cfg = get_preset("magnet_tiny").override({"model.text.vocab_size": 200})
    torch.manual_seed(0)
    B = 8
    b = SimpleNamespace(images=torch.randn(B, 3, 128, 128), input_ids=torch.randint(5, 200, (B, 20)),
                        attention_mask=torch.ones(B, 20, dtype=torch.long), masks=(torch.rand(B, 128, 128) > 0.7).float())
    m = build_model(cfg)
    with torch.no_grad():
        m.eval(); rows.append(("magnet_tiny forward (eval)", *timed(lambda: m(b))))
    m.train(); opt = torch.optim.AdamW(m.param_groups(cfg))
    def step():
        L = m.losses(m(b), b); opt.zero_grad(); L["loss"].backward(); opt.step()
    rows.append(("magnet_tiny train step (MG+CAL)", *timed(step, n=8)))
    if FIX.exists():
        from safetensors.torch import load_file
        inp = torch.load(FIX / "inputs.pt", weights_only=True)
        off = load_official(load_file(FIX / "state_dict.safetensors"), json.loads((FIX / "config.json").read_text()))
        ob = SimpleNamespace(images=inp["image"].repeat(4, 1, 1, 1), input_ids=inp["input_ids"].repeat(4, 1),
                             attention_mask=inp["attention_mask"].repeat(4, 1))
        with torch.no_grad(): rows.append(("official tiny config, ours (compat) forward", *timed(lambda: off(ob))))
    print(f"threads={torch.get_num_threads()}  probe(512³ matmul, free CPU ≈ 0.8 ms)")
    print(f"| {'what':45s} | median s | runs | dropped |\n|{'-'*47}|----------|------|---------|")
    for name, t, n, d in rows: print(f"| {name:45s} | {t:8.3f} | {n:4d} | {d:7d} |")
    if FIX.exists():
        t = rows[-1][1]
        print(f"\nofficial network, same config, batch 8 (fixture README, 2 threads): {OFFICIAL_FWD_S:.3f} s "
              f"-> ours/official throughput ratio {OFFICIAL_FWD_S / t:.2f}x (not interleaved: remembered number)")

if __name__ == "__main__": main()
