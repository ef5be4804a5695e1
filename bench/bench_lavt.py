"""Training-step time of LAVT presets (forward + backward + AdamW) at batch 8, MG's overhead, peak memory.

Usage: OMP_NUM_THREADS=2 python bench/bench_lavt.py [--reps 10] [--warmup 2] [--threads 2]
Medians over `reps` runs after warm-up, presets interleaved A/B/C in every round; each run is bracketed by a 512³ float32
matmul probe and discarded when the probe is slower than 2× its best time (the machine is shared, DESIGN.md).
Peak memory: CUDA max_memory_allocated on GPU; on CPU the peak RSS (ru_maxrss) of a fresh subprocess that builds the
preset and runs 2 training steps, minus that of a subprocess that only imports torch and ris_nb (includes allocator
caching and the model's weights; a rough upper bound).
"""
import argparse
import resource
import subprocess
import sys
import statistics
import time
from types import SimpleNamespace

import torch

from ris_nb.core import build_model, get_device, get_preset, special_token_ids


def probe(n=512):
    a = torch.randn(n, n); b = torch.randn(n, n)
    t = time.perf_counter(); a @ b
    return time.perf_counter() - t


def make_batch(cfg, B, device, vocab):
    g = torch.Generator().manual_seed(0)
    S, sp = cfg.data.image_size, special_token_ids(cfg.data.tokenizer)
    ids = torch.randint(5, vocab, (B, 20), generator=g)
    ids[:, 0] = sp["cls"]
    am = torch.ones_like(ids)
    for i in range(B):                       # sentences of 6..14 tokens, then padding
        n = 6 + i % 9
        ids[i, n - 1], ids[i, n:], am[i, n:] = sp["sep"], sp["pad"], 0
    return SimpleNamespace(images=torch.randn(B, 3, S, S, generator=g).to(device), input_ids=ids.to(device),
                           attention_mask=am.to(device), masks=(torch.rand(B, S, S, generator=g) > 0.8).float().to(device))


def cpu_peak_mib(name, batch, threads):
    "Peak RSS (MiB) of a subprocess running 2 training steps of preset `name` ('' = imports only)."
    code = (f"import resource, torch; torch.set_num_threads({threads}); import bench_lavt as b; "
            f"b.run_steps({name!r}, {batch}) if {name!r} else None; "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=__import__("os").path.dirname(__file__) or ".")
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def run_steps(name, batch, steps=2):
    cfg = get_preset(name)
    if cfg.model.text.encoder == "bert": cfg = cfg.override({"model.text.vocab_size": 1000})
    model = build_model(cfg).train()
    opt = torch.optim.AdamW(model.param_groups(cfg))
    b = make_batch(cfg, batch, torch.device("cpu"), min(1000, model.text.vocab_size))
    for _ in range(steps):
        loss = model.losses(model(b), b)["loss"]
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", default="lavt_tiny,lavt_mg_tiny,lavt_mini,lavt_mg_mini")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = get_device(args.device)
    names = args.presets.split(",")
    runs, mem = {}, {}
    for name in names:
        cfg = get_preset(name)
        if cfg.model.text.encoder == "bert": cfg = cfg.override({"model.text.vocab_size": 1000})
        torch.manual_seed(0)
        model = build_model(cfg).to(device).train()
        opt = torch.optim.AdamW(model.param_groups(cfg))
        batch = make_batch(cfg, args.batch, device, min(1000, model.text.vocab_size))

        def step(model=model, opt=opt, batch=batch):
            loss = model.losses(model(batch), batch)["loss"]
            opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
            if device.type == "cuda": torch.cuda.synchronize()
        if device.type == "cuda": torch.cuda.reset_peak_memory_stats()
        for _ in range(args.warmup): step()
        mem[name] = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
                     else cpu_peak_mib(name, args.batch, args.threads) - cpu_peak_mib("", args.batch, args.threads))
        runs[name] = dict(step=step, times=[], params=sum(p.numel() for p in model.parameters()))
    best_probe, dropped = min(probe() for _ in range(20)), 0
    for _ in range(args.reps):
        for name in names:                  # interleaved A/B rounds
            p0 = probe(); t = time.perf_counter(); runs[name]["step"](); dt = time.perf_counter() - t; p1 = probe()
            if max(p0, p1) > 2 * best_probe: dropped += 1; continue
            runs[name]["times"].append(dt)
    print(f"device {device}, threads {args.threads}, batch {args.batch}, {args.reps} rounds after {args.warmup} warm-up; "
          f"512³ matmul probe best {best_probe * 1e3:.2f} ms; {dropped} busy runs dropped")
    print(f"| preset | params (M) | step median (ms) | runs kept | MG overhead | peak mem (MiB) |")
    print(f"|---|---|---|---|---|---|")
    med = {n: statistics.median(r["times"]) if r["times"] else float("nan") for n, r in runs.items()}
    for name in names:
        base = name.replace("_mg_", "_")
        ovh = f"{(med[name] / med[base] - 1) * 100:+.1f} %" if base != name and base in med else ""
        print(f"| {name} | {runs[name]['params'] / 1e6:.2f} | {med[name] * 1e3:.0f} | {len(runs[name]['times'])} | {ovh} | "
              f"{mem[name]:.0f} |")


if __name__ == "__main__":
    main()
