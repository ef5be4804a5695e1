"""Training-step time of LAVT presets (forward + backward + AdamW) at batch 8, MG's overhead, peak memory.

Usage: OMP_NUM_THREADS=2 python bench/bench_lavt.py [--reps 10] [--warmup 2] [--threads 2]
Medians over `reps` runs after warm-up, presets interleaved A/B/C in every round; each run is bracketed by a 512³
float32 matmul probe and discarded when the probe is slower than 2× the floor (min of 50 probes at start,
bench/common.py). Memory: on GPU, CUDA max_memory_allocated over the warm-up steps. On CPU (no allocator statistics) the
two parts that dominate a training step are counted exactly: the model state (weights + gradients + AdamW's two moments)
and the activations autograd saves for backward (distinct storages, parameters excluded) — the peak is at least their
sum.
"""

import argparse
import statistics
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import Probe, header, record  # noqa: E402

from ris_nb.core import get_device, special_token_ids
from ris_nb.registry import build_model
from ris_nb.presets import get_preset  # noqa: E402


def make_batch(cfg, B, device, vocab):
    g = torch.Generator().manual_seed(0)
    S, sp = cfg.data.image_size, special_token_ids(cfg.data.tokenizer)
    ids = torch.randint(5, vocab, (B, 20), generator=g)
    ids[:, 0] = sp["cls"]
    am = torch.ones_like(ids)
    for i in range(B):  # sentences of 6..14 tokens, then padding
        n = 6 + i % 9
        ids[i, n - 1], ids[i, n:], am[i, n:] = sp["sep"], sp["pad"], 0
    return SimpleNamespace(
        images=torch.randn(B, 3, S, S, generator=g).to(device),
        input_ids=ids.to(device),
        attention_mask=am.to(device),
        masks=(torch.rand(B, S, S, generator=g) > 0.8).float().to(device),
    )


def cpu_train_memory_mib(model, opt, batch) -> tuple[float, float]:
    "(model state, saved activations) in MiB for one training step of `model` on `batch`; runs the step."
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = {}

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in params:
            saved[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model.losses(model(batch), batch)["loss"]
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()

    def nbytes(ts):
        return sum(t.numel() * t.element_size() for t in ts)

    state = nbytes(model.parameters()) + nbytes(p.grad for p in model.parameters() if p.grad is not None)
    state += nbytes(v for st in opt.state.values() for v in st.values() if torch.is_tensor(v) and v.dim() > 0)
    return state / 2**20, sum(saved.values()) / 2**20


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", default="lavt_tiny,lavt_mg_tiny,lavt_mini,lavt_mg_mini")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--budget-s", type=float, default=120)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = get_device(args.device)
    names = args.presets.split(",")
    runs, mem = {}, {}
    for name in names:
        cfg = get_preset(name)
        if cfg.model.text.encoder == "bert":
            cfg = cfg.override({"model.text.vocab_size": 1000})
        torch.manual_seed(0)
        model = build_model(cfg).to(device).train()
        opt = torch.optim.AdamW(model.param_groups(cfg))
        batch = make_batch(cfg, args.batch, device, min(1000, model.text.vocab_size))

        def step(model=model, opt=opt, batch=batch):
            loss = model.losses(model(batch), batch)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize()

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        for _ in range(args.warmup):
            step()
        mem[name] = (
            (torch.cuda.max_memory_allocated() / 2**20,)
            if device.type == "cuda"
            else cpu_train_memory_mib(model, opt, batch)
        )
        runs[name] = dict(step=step, times=[], params=sum(p.numel() for p in model.parameters()))
    from common import interleaved

    probe = Probe()
    st = interleaved({n: runs[n]["step"] for n in names}, probe, reps=args.reps, warmup=0, budget_s=args.budget_s)
    for n in names:
        runs[n]["times"] = [t / 1e3 for t in st[n].times]
    print(
        header(
            f"LAVT training step: device {device}, threads {args.threads}, batch {args.batch}, up to "
            f"{args.reps} kept runs "
            f"after {args.warmup} warm-up, interleaved",
            probe,
        )
    )
    mem_cols = "peak allocated (MiB)" if device.type == "cuda" else "model state (MiB) | saved activations (MiB)"
    print(f"| preset | params (M) | step median (ms) | kept/dropped | MG overhead | {mem_cols} |")
    print("|---|---|---|---|---|---|" + "---|" * (device.type != "cuda"))
    med = {n: statistics.median(r["times"]) if r["times"] else float("nan") for n, r in runs.items()}
    for name in names:
        base = name.replace("_mg_", "_")
        ovh = f"{(med[name] / med[base] - 1) * 100:+.1f} %" if base != name and base in med else ""
        mem_cells = " | ".join(f"{v:.1f}" for v in mem[name])
        print(
            f"| {name} | {runs[name]['params'] / 1e6:.2f} | {med[name] * 1e3:.0f} | "
            f"{st[name].kept}/{st[name].dropped} | {ovh} | "
            f"{mem_cells} |"
        )
    record(
        "lavt",
        [{"what": f"train step {n}, batch {args.batch}", "value": round(med[n] * 1e3, 1), "unit": "ms"} for n in names],
        probe,
    )


if __name__ == "__main__":
    main()
