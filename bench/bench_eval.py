"""Evaluation throughput (sentences/s): what `ris_nb eval` does (`evaluate` on the eval loader: each image decoded once,
each ref's mask once, batched forward) against the official evaluation loop's pattern (one sentence at a time, the image
re-read and re-decoded and the mask re-decoded for every sentence, batch-1 forward) — same model, same process,
interleaved rep by rep. Both must give the same intersection/union for every sentence.

Usage: OMP_NUM_THREADS=2 python bench/bench_eval.py [--presets magnet_tiny lavt_tiny sag_tiny] [--sentences 96]
       [--size 64] [--reps 5] [--threads 2] [--profile]
`--profile` first splits each pattern's time into data (read, decode, transform, collate) and model (forward + predict).
Random-init models on a freshly generated ShapeRefs (the timing does not depend on the weights).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).parent))
from common import Probe, busy_note, header, interleaved, paired_ratio, record, stats_cells, table  # noqa: E402

from ris_nb.core import build_model, get_preset, seed_everything  # noqa: E402
from ris_nb.data.refer import RefDataset, Refer  # noqa: E402
from ris_nb.data.shaperefs import generate  # noqa: E402
from ris_nb.data.transforms import Collate, RISDataset, build_tokenizer  # noqa: E402
from ris_nb.evaluate import evaluate  # noqa: E402

TARGET = 10.0   # our target: ris_nb eval ≥ 10× the official loop's pattern, same model


def setup(preset: str, root: Path, size: int, refer: Refer):
    cfg = get_preset(preset).override({"data.root": str(root), "data.image_size": size, "eval.batch_size": 32})
    tok = build_tokenizer(cfg)
    cfg = cfg.override({"model.text.vocab_size": len(tok)})
    seed_everything(0)
    model = build_model(cfg).eval()
    d = cfg.data
    def dataset(cache: bool) -> RISDataset:
        base = RefDataset(d.root, d.dataset, d.split_by, d.val_split, refer=refer, text_field=d.text_field, cache=cache)
        return RISDataset(base, d.image_size, d.normalize, masks=True, orig_masks=True)
    return cfg, Collate(tok, d.max_tokens, d.pad_to), model, dataset


def ours(cfg, coll, model, dataset, n: int) -> list[tuple[int, int]]:
    "`ris_nb eval`'s path: a fresh eval dataset (nothing decoded yet), its loader, `evaluate`."
    loader = DataLoader(dataset(cfg.data.dataset == "shaperefs"), batch_size=cfg.eval.batch_size, sampler=list(range(n)),
                        collate_fn=coll)
    res = evaluate(model, loader, cfg.eval.protocol, progress=False)
    return [(s["I"], s["U"]) for s in res["samples"]]


def official_pattern(cfg, coll, model, dataset, n: int, parts: dict | None = None) -> list[tuple[int, int]]:
    """The official test loop's pattern with our model: one sentence at a time; for each, the image read from disk and
    decoded, resized and normalised, the mask decoded from its polygons, one forward at batch 1, IoU in numpy."""
    ds, out = dataset(False), []                     # no cache: every item re-reads and re-decodes
    with torch.no_grad():
        for i in range(n):
            t0 = time.perf_counter()
            b = coll([ds[i]])
            t1 = time.perf_counter()
            o = model(b)
            if cfg.eval.protocol == "square": p = model.predict(o, b)[0, 0].numpy() >= 0.5; g = b.masks[0].numpy() > 0.5
            else: p = model.predict(o, b, sizes=[tuple(b.orig_masks[0].shape)])[0][0].numpy() >= 0.5; g = b.orig_masks[0].numpy()
            out.append((int(np.logical_and(p, g).sum()), int(np.logical_or(p, g).sum())))
            if parts is not None: parts["data"] += t1 - t0; parts["model"] += time.perf_counter() - t1
    return out


def split_ours(cfg, coll, model, dataset, n: int) -> dict:
    "Data (image-grouped batches) and model (forward + predict + IoU) seconds of `ris_nb eval`'s path."
    from ris_nb.evaluate import _eval_batches, _sample_iu
    loader = DataLoader(dataset(True), batch_size=cfg.eval.batch_size, sampler=list(range(n)), collate_fn=coll)
    parts, t = {"data": 0.0, "model": 0.0}, time.perf_counter()
    with torch.no_grad():
        for _, b in _eval_batches(loader):
            t1 = time.perf_counter(); parts["data"] += t1 - t
            _sample_iu(model, model(b), b, cfg.eval.protocol)
            t = time.perf_counter(); parts["model"] += t - t1
    return parts


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["magnet_tiny"])
    ap.add_argument("--sentences", type=int, default=64, help="first N val sentences (the same for both patterns)")
    ap.add_argument("--images", type=int, default=200, help="ShapeRefs scenes to generate (10 %% are val)")
    ap.add_argument("--size", type=int, default=64, help="image size (the quickstart's 64 px)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--budget-s", type=float, default=150)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    probe = Probe()
    root = Path(tempfile.mkdtemp())
    generate(root / "shaperefs", n_images=args.images, seed=0, size=args.size, verbose=False)
    refer = Refer(root, "shaperefs", "shaperefs")
    rows, summary, notes = [], [], []
    for preset in args.presets:
        cfg, coll, model, dataset = setup(preset, root, args.size, refer)
        n = min(args.sentences, len(dataset(False)))
        got = {}
        def run(name, fn):
            def f(): got[name] = fn(cfg, coll, model, dataset, n)
            return f
        if args.profile:
            po = split_ours(cfg, coll, model, dataset, n)
            pb = {"data": 0.0, "model": 0.0}; official_pattern(cfg, coll, model, dataset, n, pb)
            notes.append(f"{preset}, where the time goes ({n} sentences): official pattern data {pb['data'] * 1e3:.0f} ms, "
                         f"model {pb['model'] * 1e3:.0f} ms; ris_nb eval data {po['data'] * 1e3:.0f} ms, model {po['model'] * 1e3:.0f} ms")
        st = interleaved({"ris_nb eval": run("ours", ours), "official pattern": run("official", official_pattern)},
                         probe, reps=args.reps, warmup=0, budget_s=args.budget_s)
        same = sum(x == y for x, y in zip(got["ours"], got["official"]))
        if same != n and cfg.model.name == "sag":     # its evaluation slot noise is drawn per forward: batch-dependent
            notes.append(f"{preset}: {n - same} of {n} sentences differ in I/U — expected: SaG's slot noise at evaluation comes "
                         "from a fixed generator per forward, so a batch of 1 and a batch of 32 draw different noise")
        elif same != n: notes.append(f"{preset}: {n - same} of {n} sentences DIFFER in I/U between the two patterns")
        r = paired_ratio(st["official pattern"], st["ris_nb eval"])
        if busy_note(*st.values()): notes.append(f"{preset}: " + busy_note(*st.values()))
        for k, s in st.items():
            rows.append({"preset": preset, "pattern": k, "sentences/s": n / (s.median / 1e3), **stats_cells(s),
                         "speed-up": f"{r:.2f}×" if k == "ris_nb eval" else ""})
        summary.append({"what": f"eval throughput {preset} {args.size}px, ris_nb eval vs official pattern (same run)",
                        "value": round(r, 2), "unit": "×", "target": f"≥ {TARGET:g}",
                        "verdict": ("met" if r >= TARGET else "missed") + ("" if all(x.filtered for x in st.values()) else " (CPU busy: unfiltered)")})
        summary.append({"what": f"eval throughput {preset} {args.size}px, ris_nb eval", "value": round(n / (st["ris_nb eval"].median / 1e3), 1),
                        "unit": "sentences/s"})
    print(header(f"Evaluation throughput: first {args.sentences} val sentences of ShapeRefs at {args.size} px, batch "
                 f"{cfg.eval.batch_size} vs one at a time, interleaved", probe,
                 "\n".join(notes + [f"every sentence gives the same I/U in both patterns: {'yes' if not any('DIFFER' in x for x in notes) else 'NO'}"
                                     + ("" if args.presets == ["magnet_tiny"] else " (SaG aside, see above)")])))
    print(table(rows, ["preset", "pattern", "sentences/s", "median ms", "p10–p90 ms", "kept/dropped", "speed-up"]))
    print(f"\ntarget: ris_nb eval ≥ {TARGET:g}× the official pattern")
    record("eval", summary, probe)


if __name__ == "__main__":
    main()
