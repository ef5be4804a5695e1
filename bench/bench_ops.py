"""Operators per training step: magnet_paper narrowed to one small sample, counted by module; and the magnet_tiny
quickstart step's time on this machine, with the 512³ probe beside it.

Usage: python bench/bench_ops.py [--size 128] [--batch 1] [--threads N] [--reps 8] [--budget-s 60] [--top 12]
       [--only census|quickstart] [--compile none|regional]

1. `magnet_paper` with random encoders (nothing read from disk), `--size` px and `--batch` samples, otherwise the
   paper's architecture (Swin-B, BERT-base, 4 deformable encoder layers, 9 decoder layers, MG and CAL on): one training
   step of the Learner (forward, losses, backward, fused AdamW, schedule) in float32 under `torch.profiler`, every
   `aten::` call counted (nested calls too; "top-level" counts only those called from Python or autograd, not from
   another aten op). Each call is given to the module that issued it: forward ops to the innermost module running
   (forward hooks open a `record_function` range per module), backward ops to the module whose forward op made their
   autograd node (matched by sequence number), the optimizer's to `optimizer`, the loss code's to `losses`.
   "Launches" counts the top-level calls that run a kernel (the call or one it makes is not a view, an allocation or a
   `detach`: `NO_KERNEL`), about one GPU kernel launch each. With `--compile regional` both models go through
   `compile_regions` first: each C++ kernel inductor generated counts as one top-level call and one launch (seen
   through `cpp.enable_kernel_profile`), and so does each aten kernel the compiled code calls (`aten::mm`, or with
   `TORCHINDUCTOR_CPP_WRAPPER=1` its shim `aoti_torch_cpu_mm_out`); a compiled region is labelled as a whole.
   Compiling takes minutes on a CPU; `TORCHINDUCTOR_DEBUG_COMPILE=1` (-O0) builds the kernels faster and changes no
   count, only their speed.
2. The magnet_tiny quickstart step (batch 32 at 64 px on a generated ShapeRefs, the Learner's step at the preset's
   precision): median ms, samples/s and operators per step, with the probe on one and on two threads at start and end.
Run it on an otherwise idle machine for the times; the counts do not depend on load (with two threads on a machine
whose cores are taken by other jobs a step can take 20× longer than on one thread). Writes nothing in the repository.
"""

from __future__ import annotations

import argparse
import atexit
import copy
import math
import os
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import torch
from torch.autograd.profiler import record_function
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).parent))
from common import Probe, busy_note, header, probes_1t_2t, record, stats_cells, table, timed  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from gpu_check import random_batch  # noqa: E402  (the GPU check's batch: the same shapes on both)

from ris_nb.core import seed_everything  # noqa: E402
from ris_nb.registry import build_model
from ris_nb.presets import get_preset  # noqa: E402
from ris_nb.models.encoder_builds import offline_random  # noqa: E402
from ris_nb.models.mask2former import DeformEncoderLayer  # noqa: E402
from ris_nb.train import Learner  # noqa: E402

PAPER_ROWS = 8 * sum((480 // s) ** 2 for s in (4, 8, 16, 32))  # deformable-encoder tokens of a batch of 8 at 480 px
# methods of a top-level module called directly (not through __call__), so no forward hook sees them
DIRECT = {"backbone": ("stem", "stage"), "text": ("embed", "group")}
MARK = "mod:"  # prefix of our record_function labels: "mod:<module path>|<class or class.method>"


# ---------------------------------------------------------------- labelling the step


def _enter(label: str, stack: list):
    rf = record_function(label)
    rf.__enter__()
    stack.append(rf)


def _leave(stack: list):
    stack.pop().__exit__(None, None, None)


def _wrap(fn, label: str, stack: list):
    def g(*a, **k):
        _enter(label, stack)
        try:
            return fn(*a, **k)
        finally:
            _leave(stack)

    return g


FUSION = ("pwams", "cams", "word_pwams", "gates", "word_gates")  # the modules `MagNet._fuse` calls


def label_model(model: torch.nn.Module) -> list:
    """A `record_function` range around every submodule's forward, around the top-level modules' directly called
    methods (`DIRECT`), each `DeformEncoderLayer.ffn` and the losses; returns the hook handles. A compiled region
    (`compile_regions`: a module whose `forward`, or the model's `_fuse`, was replaced) gets one range, its insides
    none (the compiled code runs no hooks)."""
    stack, handles = [], []
    compiled = [n for n, m in model.named_modules() if "forward" in vars(m)]
    compiled += [n for n, meths in DIRECT.items() if any(m in vars(getattr(model, n)) for m in meths)]  # stage, group
    if "_fuse" in vars(model):
        compiled += list(FUSION)
        model._fuse = _wrap(model._fuse, f"{MARK}fusion|MagNet._fuse", stack)
    for name, mod in model.named_modules():
        if not name or any(name.startswith(c + ".") for c in compiled) or (name in FUSION and name in compiled):
            continue
        label = f"{MARK}{name}|{type(mod).__name__}"
        handles.append(mod.register_forward_pre_hook(lambda m, a, label=label: _enter(label, stack)))
        handles.append(mod.register_forward_hook(lambda m, a, o: _leave(stack)))
        for meth in DIRECT.get(name, ()):
            setattr(mod, meth, _wrap(getattr(mod, meth), f"{MARK}{name}|{type(mod).__name__}.{meth}", stack))
        if isinstance(mod, DeformEncoderLayer) and name not in compiled:
            mod.ffn = _wrap(mod.ffn, f"{MARK}{name}.ffn|DeformEncoderLayer.ffn", stack)
    model.losses = _wrap(model.losses, f"{MARK}losses|losses", stack)
    return handles


def _own_label(e, labels: dict) -> str | None:
    "The innermost of our labels enclosing event `e` (memoised per event id)."
    chain, p, found = [], e, None
    while p is not None:
        if id(p) in labels:
            found = labels[id(p)]
            break
        if p.name.startswith(MARK):
            found = p.name[len(MARK) :]
            break
        chain.append(p)
        p = p.cpu_parent
    for q in chain:
        labels[id(q)] = found
    return found


# aten ops that launch no kernel on a GPU: views, aliases, allocations, metadata (a top-level call counts as a launch
# when it or an op it calls is not one of these)
NO_KERNEL = {
    f"aten::{n}"
    for n in (
        "view _unsafe_view reshape _reshape_alias transpose t permute expand expand_as slice select narrow unsqueeze "
        "squeeze as_strided detach alias split split_with_sizes chunk unbind unflatten flatten view_as movedim "
        "diagonal empty empty_like empty_strided new_empty new_empty_strided resize_ set_ resolve_conj resolve_neg "
        "lift_fresh to type_as contiguous requires_grad_ result_type unfold real conj _unsafe_split"
    ).split()
}


def compiled_kernel(name: str) -> bool:
    "A kernel that torch.compile (inductor, C++ on the CPU) generated, seen through `cpp.enable_kernel_profile`."
    return "cpp_fused" in name


SHIM = "aoti_torch_cpu_"  # with TORCHINDUCTOR_CPP_WRAPPER=1 compiled code calls aten's kernels (mm, bmm) through these


def extern_call(name: str) -> bool:
    "An aten kernel that compiled C++ code calls through inductor's shim (`aoti_torch_cpu_mm_out`): one launch."
    base = name[len(SHIM) :].removesuffix("_out") if name.startswith(SHIM) else None
    return base is not None and f"aten::{base}" not in NO_KERNEL


def _aten_like(name: str) -> bool:
    return name.startswith("aten::") or name.startswith(SHIM)


def attribute(events) -> list[tuple[str, str, str, bool, bool]]:
    """(label, phase, op name, top-level, launch) of every `aten::` call and compiled kernel: phase forward / backward
    / optimizer / other; label 'module path|class' of the module that issued it (backward: of the forward op whose
    autograd node ran); launch: a top-level call that runs a kernel (itself or an op it calls not in `NO_KERNEL`;
    every compiled kernel)."""
    labels, fwd_label = {}, {}
    for e in events:  # forward ops that made an autograd node: its sequence number → their label
        made_node = e.name.startswith("aten::") or e.name == "CompiledFunction"
        if e.sequence_nr >= 0 and not e.name.startswith("autograd::") and made_node:
            lab = _own_label(e, labels)
            if lab is not None:
                fwd_label.setdefault(e.sequence_nr, lab)
    launching = set()  # ids of top-level calls that run a kernel
    for e in events:
        if e.name.startswith("aten::") and e.name not in NO_KERNEL:
            p = e
            while p.cpu_parent is not None and _aten_like(p.cpu_parent.name):
                p = p.cpu_parent
            launching.add(id(p))
    out = []
    for e in events:
        kernel = compiled_kernel(e.name) or extern_call(e.name)
        if not (e.name.startswith("aten::") or kernel):
            continue
        phase, lab, p = "forward", None, e.cpu_parent
        while p is not None:
            if p.name.startswith("autograd::engine::evaluate_function"):
                phase = "backward"
                acc = "AccumulateGrad" in p.name
                lab = "gradient accumulation|AccumulateGrad" if acc else fwd_label.get(p.sequence_nr)
                break
            if p.name.startswith("Optimizer.") or p.name.startswith("Optimizer.step"):
                phase, lab = "optimizer", "optimizer|AdamW"
                break
            p = p.cpu_parent
        if phase == "forward":
            lab = _own_label(e, labels)
        parent = e.cpu_parent
        top = kernel or parent is None or not _aten_like(parent.name)
        name = "compiled kernel" if compiled_kernel(e.name) else e.name
        out.append((lab or "(outside any module)|", phase, name, top, kernel or (top and id(e) in launching)))
    return out


def profile_step(fn) -> list[tuple[str, str, str, bool, bool]]:
    "`fn()` once under torch.profiler (CPU), its aten calls attributed (`attribute`)."
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return attribute(prof.events())


# ---------------------------------------------------------------- the two models


def compiled(model, how: str):
    """`model` compiled as `train.compile=regional` compiles it, when `how` is 'regional' (kernels named in profiles):
    `compile_regions`, with the run's graph pass where the commit has one."""
    if how == "none":
        return model
    import torch._inductor.config as inductor

    inductor.cpp.enable_kernel_profile = True  # each generated C++ kernel opens a profiler range: counted as a launch
    try:  # since model.impl (issue 80): appendix 97c's, with its graph pass by default
        from ris_nb.models.fast import compile_regions

        return compile_regions(model)
    except ImportError:
        from ris_nb.models.magnet import compile_regions  # only in commits that have it
    try:  # between: the pass in the run's loaders (93b); before, compile_regions applied it itself, or none
        from ris_nb.loaders import shared_input_linears
    except ImportError:
        return compile_regions(model)
    return compile_regions(model, {"pre_grad_custom_pass": shared_input_linears()})


def learner_step(model, batch, cfg):
    "The Learner's training step (`one_batch`: forward, losses, backward, optimizer and schedule) on `batch`."
    learn = Learner(model, [batch], cfg.override({"train.max_steps": 10**6}))
    learn.trainer.train()

    def step():
        learn.batch = batch
        learn.one_batch()

    return step


def narrowed_paper(size: int, batch: int):
    "magnet_paper, random encoders, `size` px, `batch` samples, float32: (model, batch, cfg)."
    cfg = offline_random(get_preset("magnet_paper")).override(
        {"data.image_size": size, "train.batch_size": batch, "train.device": "cpu", "train.amp": "off"}
    )
    seed_everything(0)
    model = build_model(cfg)
    return model, random_batch(batch, size, cfg.model.text.vocab_size), cfg


def quickstart(root: Path):
    "magnet_tiny as the quickstart trains it (batch 32 at 64 px) on a generated 200-image ShapeRefs: model, batch, cfg."
    try:
        from ris_nb.data.shaperefs_files import generate
    except ImportError:  # commits before issue 69 moved the dataset writing out of 02
        from ris_nb.data.shaperefs_files import generate
    from ris_nb.training_run import prepare

    generate(root / "shaperefs", 200, 0, 64, verbose=False)
    over = {"data.root": str(root), "data.image_size": 64, "train.batch_size": 32, "data.num_workers": 0}
    prep = prepare(get_preset("magnet_tiny").override(over), ["train"])
    return prep.model, next(iter(prep.loaders["train"])), prep.cfg


# ---------------------------------------------------------------- tables


def by_module(calls, depth: int) -> list[dict]:
    "Calls per step grouped by module path cut to `depth` components (forward, backward, all, top-level)."
    groups = defaultdict(Counter)
    for lab, phase, _, top, launch in calls:
        path = lab.split("|")[0]
        key = ".".join(path.split(".")[:depth]) if path and not path.startswith("(") else lab.split("|")[0]
        groups[key][phase] += 1
        groups[key]["all"] += 1
        groups[key]["top-level"] += top
        groups[key]["launches"] += launch
    total = len(calls)
    rows = [
        {
            "module": k,
            "forward": c["forward"],
            "backward": c["backward"],
            "optimizer": c["optimizer"],
            "aten calls": c["all"],
            "top-level": c["top-level"],
            "launches": c["launches"],
            "share": f"{100 * c['all'] / total:.1f} %",
        }
        for k, c in groups.items()
    ]
    return sorted(rows, key=lambda r: -r["aten calls"])


def by_kind(calls) -> list[dict]:
    "Calls per step grouped by (top-level module, innermost class or method): where inside each module they come from."
    groups = defaultdict(Counter)
    for lab, _, _, top, _ in calls:
        path, kind = (lab.split("|") + [""])[:2]
        groups[(path.split(".")[0], kind)]["all"] += 1
        groups[(path.split(".")[0], kind)]["top"] += top
    rows = [
        {"module": m, "innermost": k or "—", "aten calls": c["all"], "top-level": c["top"]}
        for (m, k), c in groups.items()
    ]
    return sorted(rows, key=lambda r: -r["aten calls"])


def by_op(calls, top: int) -> list[dict]:
    "The `top` most called aten ops, with their calls from the pixel decoder and from the backbone."
    n = Counter(op for _, _, op, _, _ in calls)
    pd = Counter(op for lab, _, op, _, _ in calls if lab.startswith("pixel_decoder"))
    bb = Counter(op for lab, _, op, _, _ in calls if lab.startswith("backbone"))
    return [{"op": op, "calls": c, "pixel_decoder": pd[op], "backbone": bb[op]} for op, c in n.most_common(top)]


def ffn_chunks(layer: DeformEncoderLayer, rows: int) -> int:
    "How many pieces `layer.ffn` cuts `rows` tokens into under autograd (calls of linear1 on a meta-device copy)."
    meta, calls = copy.deepcopy(layer).to("meta"), []
    meta.linear1.register_forward_hook(lambda *a: calls.append(1))
    with torch.enable_grad():
        # the class's method: the instance's `ffn` may be label_model's wrapper around the original layer
        type(meta).ffn(meta, torch.empty(rows, meta.linear1.in_features, device="meta", requires_grad=True))
    return len(calls)


def ffn_projection(model, calls, batch: int, size: int) -> dict:
    "Calls in the deformable encoder's FFN per piece, and what its pieces under autograd give at 480 px, batch 8."
    layers = [m for m in model.modules() if isinstance(m, DeformEncoderLayer)]
    rows = batch * sum(math.ceil(size / s) ** 2 for s in (4, 8, 16, 32))
    here, paper = ffn_chunks(layers[0], rows), ffn_chunks(layers[0], PAPER_ROWS)
    # the FFN's own ops and those of its two Linear layers (called only from it)
    ffn = [c for c in calls if c[0].split("|")[0].rsplit(".", 1)[-1] in ("ffn", "linear1", "linear2")]
    ffn = [c for c in ffn if c[0].startswith("pixel_decoder.")]
    per_chunk = len(ffn) / (len(layers) * here)
    top = sum(c[3] for c in ffn) / (len(layers) * here)
    launch = sum(c[4] for c in ffn) / (len(layers) * here)
    return {
        "layers": len(layers),
        "rows": rows,
        "chunks here": here,
        "calls here": len(ffn),
        "per chunk": per_chunk,
        "top per chunk": top,
        "launches per chunk": launch,
        "paper rows": PAPER_ROWS,
        "paper chunks": paper,
        "paper calls": round(per_chunk * paper * len(layers)),
        "paper top": round(top * paper * len(layers)),
        "paper launches": round(launch * paper * len(layers)),
    }


# ---------------------------------------------------------------- main

COLS = ["module", "forward", "backward", "optimizer", "aten calls", "top-level", "launches", "share"]


def census(args) -> list[dict]:
    "Part 1: the narrowed magnet_paper step, counted and attributed; prints its tables, returns summary rows."
    t = time.perf_counter()
    model, batch, cfg = narrowed_paper(args.size, args.batch)
    n_params = sum(p.numel() for p in model.parameters()) / 1e6
    label_model(compiled(model, args.compile))
    step = learner_step(model, batch, cfg)
    t0 = time.perf_counter()
    step()  # warm-up: the optimizer's state, first-call caches, compilation
    if args.compile != "none":  # deformable attention's layout cache, filled by step 1, is a guard: step 2 recompiles
        step()
    t1 = time.perf_counter()
    calls = profile_step(step)
    secs = time.perf_counter() - t1
    total, top, launches = len(calls), sum(c[3] for c in calls), sum(c[4] for c in calls)
    print(
        f"\n### Operators per training step: magnet_paper narrowed to batch {args.batch} at {args.size} px "
        f"({n_params:.1f} M parameters, random weights, float32, {torch.get_num_threads()} threads, compile: "
        f"{args.compile})\n\n{total:,} aten calls and compiled kernels per step ({top:,} top-level: called from "
        f"Python, autograd or compiled code; {launches:,} launches: the top-level calls that run a kernel, ≈ kernel "
        f"launches on a GPU); profiled step {secs:.1f} s, build {t0 - t:.1f} s, warm-up (compilation included) "
        f"{t1 - t0:.1f} s\n"
    )
    print(table(by_module(calls, 1), COLS))
    print("\nBy top-level module and the innermost module (class) or method that issued the call:\n")
    print(table(by_kind(calls)[: args.top], ["module", "innermost", "aten calls", "top-level"]))
    print(f"\nThe {args.top} most called aten ops (all calls; of them from the pixel decoder, from the backbone):\n")
    print(table(by_op(calls, args.top), ["op", "calls", "pixel_decoder", "backbone"]))
    f = ffn_projection(model, calls, args.batch, args.size)
    print(
        f"\nDeformable encoder FFN (`DeformEncoderLayer.ffn` under autograd): {f['rows']:,} tokens "
        f"here → {f['chunks here']} piece(s) per layer, {f['calls here']} aten calls in {f['layers']} layers "
        f"(forward and backward) = {f['per chunk']:.0f} per chunk per layer ({f['top per chunk']:.0f} top-level). At "
        f"480 px, batch 8 ({f['paper rows']:,} tokens) the same code makes {f['paper chunks']} piece(s) per layer: ≈ "
        f"{f['paper calls']:,} calls ({f['paper top']:,} top-level) per step from the FFN alone (computed: calls per "
        f"piece × pieces × layers)."
    )
    grid = sum(1 for _, _, op, _, _ in calls if op.startswith("aten::grid_sampler_2d"))
    bag = sum(
        1 for _, _, op, _, _ in calls if op.startswith("aten::embedding_bag") or op.startswith("aten::_embedding_bag")
    )
    print(f"grid_sampler_2d calls (forward and backward): {grid}; embedding_bag calls: {bag}")
    return [
        {
            "what": f"magnet_paper narrowed ({args.size} px, batch {args.batch}): aten calls per step",
            "value": total,
            "unit": "calls",
        },
        {"what": "same, top-level aten calls per step", "value": top, "unit": "calls"},
        {"what": "same, launches per step", "value": launches, "unit": "calls"},
        {
            "what": "deformable-encoder FFN at 480 px, batch 8: top-level calls per step",
            "value": f["paper top"],
            "unit": "calls",
        },
        {
            "what": "top-level calls per step at 480 px, batch 8 (this census with the FFN's pieces at that size)",
            "value": round(top - f["top per chunk"] * f["chunks here"] * f["layers"] + f["paper top"]),
            "unit": "calls",
        },
        {
            "what": "launches per step at 480 px, batch 8 (same projection)",
            "value": round(launches - f["launches per chunk"] * f["chunks here"] * f["layers"] + f["paper launches"]),
            "unit": "calls",
        },
        {"what": "first step (compilation included; two steps when compiled)", "value": round(t1 - t0, 1), "unit": "s"},
        {"what": "grid_sampler_2d calls per step (forward and backward)", "value": grid, "unit": "calls"},
    ]


def quickstart_step(args, probe) -> list[dict]:
    "Part 2: the magnet_tiny quickstart step timed (probe-filtered) with the probes beside it; its op count."
    root = Path(tempfile.mkdtemp(prefix="bench_ops_"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    model, batch, cfg = quickstart(root)
    step = learner_step(compiled(model, args.compile), batch, cfg)
    t0 = time.perf_counter()
    step()  # compilation, when compiled
    first = time.perf_counter() - t0
    p0, load0 = probes_1t_2t(), os.getloadavg()[0]
    st = timed(step, probe, reps=args.reps, budget_s=args.budget_s)
    p1, load1 = probes_1t_2t(), os.getloadavg()[0]
    calls = profile_step(step)
    bs = cfg.train.batch_size
    row = {
        "what": f"magnet_tiny quickstart step (batch {bs}, 64 px, train.amp={cfg.train.amp})",
        **stats_cells(st),
        "samples/s": round(bs / st.median * 1e3, 1),
        "aten calls": len(calls),
        "top-level": sum(c[3] for c in calls),
        "launches": sum(c[4] for c in calls),
        "first step s": round(first, 1),
        "probe 1t ms": f"{p0[0]:.2f} / {p1[0]:.2f}",
        "probe 2t ms": f"{p0[1]:.2f} / {p1[1]:.2f}",
        "threads": torch.get_num_threads(),
    }
    note = "\n".join(
        x
        for x in (
            f"probes at start / end of the timing; load average {load0:.1f} → {load1:.1f} on {os.cpu_count()} cores",
            busy_note(st),
        )
        if x
    )
    print(header("The magnet_tiny quickstart step on this machine", probe, note))
    cols = ["what", "median ms", "p10–p90 ms", "kept/dropped", "samples/s", "aten calls", "top-level", "launches"]
    print(table([row], cols + ["first step s", "probe 1t ms", "probe 2t ms", "threads"]))
    return [
        {
            "what": "magnet_tiny quickstart step",
            "value": round(st.median, 1),
            "unit": "ms",
            "probe_1t_ms": row["probe 1t ms"],
            "probe_2t_ms": row["probe 2t ms"],
            "load": f"{load0:.1f} → {load1:.1f}",
        },
        {"what": "magnet_tiny quickstart", "value": row["samples/s"], "unit": "samples/s"},
        {"what": "magnet_tiny quickstart: aten calls per step", "value": row["aten calls"], "unit": "calls"},
        {"what": "magnet_tiny quickstart: launches per step", "value": row["launches"], "unit": "calls"},
        {"what": "magnet_tiny quickstart: first step", "value": row["first step s"], "unit": "s"},
    ]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128, help="image size of the narrowed magnet_paper (default 128)")
    ap.add_argument("--batch", type=int, default=1, help="its batch (default 1)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--reps", type=int, default=8, help="kept timings of the quickstart step wanted (default 8)")
    ap.add_argument("--budget-s", type=float, default=60.0, help="time for those timings (default 60)")
    ap.add_argument("--top", type=int, default=12, help="rows of the by-class and by-op tables (default 12)")
    ap.add_argument(
        "--only", choices=["census", "quickstart"], default=None, help="one of the two parts (default: both)"
    )
    ap.add_argument(
        "--compile",
        choices=["none", "regional"],
        default="none",
        help="regional: both models through compile_regions (appendix 97c; inductor, C++ kernels on a CPU)",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    summary = census(args) if args.only != "quickstart" else []
    probe = Probe()
    if args.only != "census":
        summary += quickstart_step(args, probe)
    record("ops", summary, probe)


if __name__ == "__main__":
    main()
