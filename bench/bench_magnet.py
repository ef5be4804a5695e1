"""MagNet speed on CPU: magnet_tiny forward and training step (batch 8, 128 px), and the network at the official tiny
fixture's configuration — against the OFFICIAL network in the same process when `--official-src` is given.

Usage: OMP_NUM_THREADS=2 python bench/bench_magnet.py [--official-src DIR] [--fixtures DIR] [--threads 2] [--reps 15]
       [--profile]
       OMP_NUM_THREADS=2 python bench/bench_magnet.py --step [--before REV] [--results
       nbs/results/magnet_step_profile.csv]
- `--official-src DIR`: a checkout of yxchng/mask-grounding you fetched yourself (bench/README.md). The official
  `WrapperModel` is built at the fixture's configuration with the fixture's weights (bench/official.py), both networks
  are checked to give the same mask logits on the fixture inputs, then timed interleaved, rep by rep (batch 8 = the
  fixture's 2 inputs repeated 4 times). Without it, only our times are printed and no comparison is made.
- `--fixtures DIR`: folder holding magnet_official_tiny/ (default: the repository's tests/fixtures).
- `--profile`: where the forward's time goes (pixel decoder, mask decoder, the rest), ours and official, by wall clock.
- `--step`: only the magnet_tiny training step at the quickstart's shape (batch 32, 64 px, fused AdamW), the code at git
  revision `--before` (default: the last commit before the step was restructured, imported from `git archive` under
  another package name) against the code now, fp32 and bf16 autocast, interleaved in one process on the same batch:
  median step time and operator calls per step (torch.profiler), with the 512³ probe on one and on two threads.
Probe-relative filtering and the printed floor: bench/common.py.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import (
    Probe,
    busy_note,
    probe_note,
    probes_1t_2t,
    fixture_dir,
    header,
    interleaved,
    paired_ratio,
    record,
    stats_cells,
    table,
)  # noqa: E402

from ris_nb.registry import build_model
from ris_nb.presets import get_preset  # noqa: E402
from ris_nb.official import load_magnet  # noqa: E402
from ris_nb.models.fast import to_impl  # noqa: E402

TARGET = 3.0  # the target: ours ≥ 3× the official network's forward throughput at the official tiny config, batch 8


def tiny_batch(B: int = 8):
    g = torch.Generator().manual_seed(0)
    return SimpleNamespace(
        images=torch.randn(B, 3, 128, 128, generator=g),
        input_ids=torch.randint(5, 200, (B, 20), generator=g),
        attention_mask=torch.ones(B, 20, dtype=torch.long),
        masks=(torch.rand(B, 128, 128, generator=g) > 0.7).float(),
    )


def tiny_forward(m, b):
    "An eval forward of `m` on `b`, without autograd."

    def fwd():
        m.eval()
        with torch.no_grad():
            m(b)

    return fwd


def tiny_step(m, b, cfg):
    "One training step of `m` on `b` (its own AdamW)."
    opt = torch.optim.AdamW(m.param_groups(cfg))

    def step():
        m.train()
        L = m.losses(m(b), b)
        opt.zero_grad()
        L["loss"].backward()
        opt.step()

    return step


def fixture_batch(fix: Path, reps: int = 4) -> SimpleNamespace:
    inp = torch.load(fix / "inputs.pt", weights_only=True)
    return SimpleNamespace(
        images=inp["image"].repeat(reps, 1, 1, 1),
        input_ids=inp["input_ids"].repeat(reps, 1),
        attention_mask=inp["attention_mask"].repeat(reps, 1),
    )


def profile(label: str, fn, parts: dict[str, tuple[object, str]], reps: int = 6) -> str:
    "Median wall time of `fn()` and of the methods in `parts` ({name: (object, method name)}) inside it, over `reps`."
    import statistics
    import time

    spent = {k: 0.0 for k in parts}
    orig = {k: getattr(o, meth) for k, (o, meth) in parts.items()}

    def wrap(k, f):
        def g(*a, **kw):
            t = time.perf_counter()
            r = f(*a, **kw)
            spent[k] += time.perf_counter() - t
            return r

        return g

    for k, (o, meth) in parts.items():
        setattr(o, meth, wrap(k, orig[k]))
    tot, per = [], {k: [] for k in parts}
    try:
        fn()
        for _ in range(reps):
            for k in spent:
                spent[k] = 0.0
            t = time.perf_counter()
            fn()
            tot.append((time.perf_counter() - t) * 1e3)
            for k in parts:
                per[k].append(spent[k] * 1e3)
    finally:
        for k, (o, meth) in parts.items():
            setattr(o, meth, orig[k])
    T = statistics.median(tot)
    cells = ", ".join(
        f"{k} {statistics.median(v):.1f} ms ({100 * statistics.median(v) / T:.0f} %)" for k, v in per.items()
    )
    rest = T - sum(statistics.median(v) for v in per.values())
    return f"{label}: forward {T:.1f} ms = {cells}, encoder and the rest {rest:.1f} ms ({100 * rest / T:.0f} %)"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official-src", default=None, help="checkout of yxchng/mask-grounding (see bench/README.md)")
    ap.add_argument("--fixtures", default=None, help="folder holding magnet_official_tiny/ (default: tests/fixtures)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--budget-s", type=float, default=90, help="seconds of measuring per table at most")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--skip-tiny", action="store_true", help="only the official-config comparison")
    ap.add_argument("--step", action="store_true", help="only the magnet_tiny training step, before vs now")
    ap.add_argument("--before", default=BEFORE, help="git revision of the 'before' code for --step")
    ap.add_argument("--results", default=None, help="CSV to write the --step table to")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    probe = Probe()
    summary = []
    if args.step:
        record("magnet", step_profile(args, probe), probe)
        return

    if not args.skip_tiny:
        cfg = get_preset("magnet_tiny").override({"model.text.vocab_size": 200, "model.impl": "reference"})
        torch.manual_seed(0)
        b, ref = tiny_batch(), build_model(cfg)
        fns = {}
        for form, m in (("reference", ref), ("fast", to_impl(copy.deepcopy(ref), "fast"))):  # one state dict
            fns[f"magnet_tiny forward, {form} (eval, batch 8)"] = tiny_forward(m, b)
            fns[f"magnet_tiny train step, {form} (MG+CAL, batch 8)"] = tiny_step(m, b, cfg)
        st = interleaved(fns, probe, reps=args.reps, budget_s=args.budget_s)
        print(header("MagNet, magnet_tiny preset (128 px)", probe, busy_note(*st.values())))
        print(
            table(
                [{"what": k, **stats_cells(s)} for k, s in st.items()],
                ["what", "median ms", "p10–p90 ms", "kept/dropped"],
            )
        )
        for k, s in st.items():
            summary.append({"what": k, "value": round(s.median, 2), "unit": "ms"})
        for what in ("forward", "train step"):
            ref_s, fast_s = (next(v for k, v in st.items() if f"{what}, {f}" in k) for f in ("reference", "fast"))
            r = paired_ratio(ref_s, fast_s)
            print(f"magnet_tiny {what}: fast vs reference (same run) {r:.2f}×")
            summary.append(
                {"what": f"magnet_tiny {what}, fast vs reference (same run)", "value": round(r, 2), "unit": "×"}
            )

    try:
        fix = fixture_dir("magnet_official_tiny", args.fixtures)
    except FileNotFoundError as e:
        print(f"\n(no official-config rows: {e})")
        record("magnet", summary, probe)
        return
    sd = __import__("safetensors.torch", fromlist=["load_file"]).load_file(str(fix / "state_dict.safetensors"))
    official_cfg = json.loads((fix / "config.json").read_text())
    forms = {form: load_magnet(sd, official_cfg, impl=form) for form in ("reference", "fast")}  # the fixture's weights
    ours = forms["reference"]
    ob = fixture_batch(fix)

    def forward_of(m):
        def fwd():
            with torch.no_grad():
                m(ob)

        return fwd

    fns = {f"ours ({form}) forward": forward_of(m) for form, m in forms.items()}
    ours_fwd = fns["ours (reference) forward"]
    note = (
        "no comparison made: pass --official-src DIR (a checkout of yxchng/mask-grounding) to time the official "
        "network beside ours"
    )
    if args.official_src:
        from official import commit_of, magnet_official

        off = magnet_official(args.official_src, fix)
        inp = torch.load(fix / "inputs.pt", weights_only=True)
        one = SimpleNamespace(images=inp["image"], input_ids=inp["input_ids"], attention_mask=inp["attention_mask"])
        with torch.no_grad():
            a = off(inp["image"], inp["input_ids"], inp["attention_mask"])["pred_masks"]
            a8 = off(ob.images, ob.input_ids, ob.attention_mask)["pred_masks"]
            diff = max((a - m(one).mask_logits).abs().max().item() for m in forms.values())
            diff8 = max((a8 - m(ob).mask_logits).abs().max().item() for m in forms.values())
        if max(diff, diff8) > 1e-4:
            raise SystemExit(
                f"official and ours disagree on the fixture inputs: max |Δ mask logit| {diff:.2e} (batch 2), "
                f"{diff8:.2e} (batch 8), over our two forms"
            )

        def off_fwd():
            with torch.no_grad():
                off(ob.images, ob.input_ids, ob.attention_mask)

        fns["official WrapperModel forward"] = off_fwd
        note = (
            f"official: {args.official_src} at commit {commit_of(Path(args.official_src))}; same outputs "
            "checked first (both our forms): "
            f"max |Δ mask logit| {diff:.1e} (fixture batch 2), {diff8:.1e} (batch 8)"
        )
    st = interleaved(fns, probe, reps=args.reps, budget_s=args.budget_s)
    print(
        header(
            "MagNet at the official tiny configuration (fixture weights, batch 8, 128 px), interleaved",
            probe,
            "\n".join(x for x in (note, busy_note(*st.values())) if x),
        )
    )
    rows = [{"what": k, **stats_cells(s)} for k, s in st.items()]
    print(table(rows, ["what", "median ms", "p10–p90 ms", "kept/dropped"]))
    for form in forms:
        s_ours = st[f"ours ({form}) forward"]
        what = f"MagNet forward, official tiny config, batch 8 (ours, {form})"
        summary.append({"what": what, "value": round(s_ours.median, 2), "unit": "ms"})
        if "official WrapperModel forward" not in st:
            continue
        r = paired_ratio(st["official WrapperModel forward"], s_ours)
        verdict = "met" if r >= TARGET else "MISSED"
        print(f"\nspeed-up, ours ({form}) vs official (same run): {r:.2f}×  (target ≥ {TARGET}×: {verdict})")
        busy = "" if (s_ours.filtered and st["official WrapperModel forward"].filtered) else " (CPU busy: unfiltered)"
        summary.append(
            {
                "what": f"MagNet forward speed-up vs official (same run, ours {form})",
                "value": round(r, 2),
                "unit": "×",
                "target": f"≥ {TARGET}",
                "verdict": verdict.lower() + busy,
            }
        )
    if "official WrapperModel forward" not in st:
        print("\n" + note)
    if args.profile:
        print("\nwhere the forward's time goes (medians of 6 calls, wall clock):")
        print(
            profile(
                "ours",
                ours_fwd,
                {"pixel decoder": (ours.pixel_decoder, "forward"), "mask decoder": (ours.decoder, "forward")},
            )
        )
        if args.official_src:
            print(
                profile(
                    "official",
                    fns["official WrapperModel forward"],
                    {
                        "pixel decoder": (off.classifier.pixel_decoder, "forward_features"),
                        "mask decoder": (off.classifier.predictor, "forward"),
                    },
                )
            )
    record("magnet", summary, probe)


# ---- the magnet_tiny training step before/after (issue: fewer, larger operations)
# ----------------------------------------
BEFORE = "aa4151b"  # the last commit before the step was restructured (cal_loss batched onward)
STEP_COLS = [
    "code",
    "precision",
    "median ms",
    "p10–p90 ms",
    "kept/dropped",
    "aten::mm",
    "aten::copy_",
    "aten::_to_copy",
    "ops",
]


def package_at(rev: str, name: str = "ris_nb_before"):
    "The `ris_nb` package as it was at git revision `rev`, imported under `name` (a temp copy; modules renamed inside)."
    import atexit
    import importlib
    import re
    import shutil
    import subprocess
    import tempfile

    root = Path(__file__).resolve().parents[1]
    if subprocess.run(["git", "-C", str(root), "cat-file", "-e", f"{rev}^{{commit}}"], capture_output=True).returncode:
        raise SystemExit(
            f"--step compares with git revision {rev}, which this checkout does not hold (a shallow clone or an "
            "installed package?): clone the full history, or name another revision with --before REV"
        )
    d = Path(tempfile.mkdtemp(prefix="ris_nb_at_"))
    atexit.register(shutil.rmtree, d, ignore_errors=True)
    tar = subprocess.run(["git", "-C", str(root), "archive", rev, "ris_nb"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(d)], input=tar, check=True)
    (d / "ris_nb").rename(d / name)
    for p in (d / name).rglob("*.py"):
        p.write_text(re.sub(r"\bris_nb(\.| import)", rf"{name}\1", p.read_text()))
    sys.path.insert(0, str(d))
    return importlib.import_module(f"{name}.core")


def step_fn(model, batch, opt, bf16: bool):
    """One training step as `fit` runs it: forward + losses under autocast (bf16) or not, backward, fused AdamW,
    zero_grad."""
    from contextlib import nullcontext

    def step():
        model.train()
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext():
            loss = model.losses(model(batch), batch)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def op_counts(fn) -> dict:
    """Calls per step of aten::mm, copy_, _to_copy and of every operator (torch.profiler, nested calls counted), one
    step."""
    from torch.profiler import ProfilerActivity, profile as tprofile

    with tprofile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    ev = {e.key: e.count for e in prof.key_averages()}
    return {
        "aten::mm": ev.get("aten::mm", 0),
        "aten::copy_": ev.get("aten::copy_", 0),
        "aten::_to_copy": ev.get("aten::_to_copy", 0),
        "ops": sum(c for k, c in ev.items() if k.startswith("aten::")),
    }


def step_profile(args, probe) -> list[dict]:
    """magnet_tiny, batch 32 at 64 px on a 200-image ShapeRefs: the step at `--before` and now, fp32 and bf16,
    interleaved."""
    import atexit
    import os
    import shutil
    import tempfile
    from ris_nb.machine import cpu_native_bf16
    from ris_nb.data.shaperefs_files import generate
    from ris_nb.training_run import prepare

    load0, p0 = os.getloadavg()[0], probes_1t_2t()
    root = Path(tempfile.mkdtemp(prefix="magnet_step_"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    generate(root / "shaperefs", 200, 0, 64)
    over = {"data.root": str(root), "data.image_size": 64, "train.batch_size": 32, "data.num_workers": 0}
    cfg = get_preset("magnet_tiny").override(over)
    prep = prepare(cfg, ["train"])
    batch = next(iter(prep.loaders["train"]))
    old_core = package_at(args.before)
    # the old code knows fewer config keys: build its config from its own preset with the same overrides
    old_cfg = old_core.get_preset("magnet_tiny").override(
        {**over, "model.text.vocab_size": prep.cfg.model.text.vocab_size}
    )
    for sec in ("vision", "text", "lavt", "mg", "cal", "magnet"):
        was, now = old_cfg.to_dict()["model"][sec], prep.cfg.to_dict()["model"][sec]
        default = dataclasses.asdict(type(getattr(prep.cfg.model, sec))())
        # options added since, left at their default
        added_off = all(v == default[k] for k, v in now.items() if k not in was)
        if any(now[k] != v for k, v in was.items()) or not added_off:
            raise SystemExit(
                f"model.{sec} of magnet_tiny differs between {args.before} and now; the step comparison needs "
                "the same model"
            )
    old = old_core.build_model(old_cfg)
    old.load_state_dict(prep.model.state_dict())
    models = {f"before ({args.before})": old, "now": prep.model}
    precisions = ["fp32"] + (["bf16"] if cpu_native_bf16() else [])
    fns, counts = {}, {}
    for code, m in models.items():
        opt = torch.optim.AdamW(m.param_groups(prep.cfg), lr=prep.cfg.train.lr, fused=True)
        for prec in precisions:
            fns[(code, prec)] = step_fn(m, batch, opt, prec == "bf16")
    for k, f in fns.items():
        f()
        counts[k] = op_counts(f)
    st = interleaved({f"{c} {p}": f for (c, p), f in fns.items()}, probe, reps=args.reps, budget_s=args.budget_s)
    load1, p1 = os.getloadavg()[0], probes_1t_2t()
    rows = [
        {
            "code": c,
            "precision": p,
            **stats_cells(st[f"{c} {p}"]),
            **counts[(c, p)],
            "median_ms": round(st[f"{c} {p}"].median, 1),
            "probe_1t_ms": round(min(p0[0], p1[0]), 2),
            "probe_2t_ms": round(min(p0[1], p1[1]), 2),
            "threads": torch.get_num_threads(),
        }
        for (c, p) in fns
    ]
    note = f"{probe_note(p0, p1)}; load average {load0:.1f} → {load1:.1f} on {os.cpu_count()} cores"
    print(
        header(
            "magnet_tiny training step (batch 32, 64 px, fused AdamW), before vs now, interleaved",
            probe,
            "\n".join(x for x in (note, busy_note(*st.values())) if x),
        )
    )
    print(table(rows, STEP_COLS))
    for prec in precisions:
        r = paired_ratio(st[f"{list(models)[0]} {prec}"], st[f"now {prec}"])
        print(f"{prec}: now is {r:.2f}× the speed of before (same run)")
    b, n = (st[f"{c} bf16"] for c in models) if "bf16" in precisions else (None, None)
    if b:
        print(
            f"bf16 over fp32: before {paired_ratio(st[f'{list(models)[0]} fp32'], b):.2f}×, now "
            f"{paired_ratio(st['now fp32'], n):.2f}×"
        )
    if args.results:
        import csv
        import io
        from ris_nb.io import write_atomic

        cols = [
            "code",
            "precision",
            "median_ms",
            "p10–p90 ms",
            "kept/dropped",
            "aten::mm",
            "aten::copy_",
            "aten::_to_copy",
            "ops",
            "probe_1t_ms",
            "probe_2t_ms",
            "threads",
        ]
        buf = io.StringIO()
        w = csv.DictWriter(buf, cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
        write_atomic(args.results, lambda p: p.write_text(buf.getvalue()))
        print(f"\nwritten: {args.results}")
    speedups = [
        {
            "what": f"magnet_tiny step, now over {args.before}, {prec} (same run)",
            "value": round(paired_ratio(st[f"{list(models)[0]} {prec}"], st[f"now {prec}"]), 2),
            "unit": "×",
        }
        for prec in precisions
    ]
    return [
        {"what": f"magnet_tiny step {r['code']} {r['precision']}", "value": r["median_ms"], "unit": "ms"} for r in rows
    ] + speedups


if __name__ == "__main__":
    main()
