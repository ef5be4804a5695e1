"""Evaluation throughput (sentences/s): what `ris_nb eval` does (`evaluate` on the eval loader: each image decoded once,
each ref's mask once, each image's image-only layers once, batched forward) against the official evaluation loop's
pattern (one sentence at a time, the image re-read and re-decoded and the mask re-decoded for every sentence, batch-1
forward) — same model, same process, interleaved rep by rep. Both must give the same intersection/union for every
sentence (random-init models put a few pixels within float rounding of the 0.5 threshold: a sentence may then differ by
a pixel or two, and the table says how many did).

Usage: OMP_NUM_THREADS=1 python bench/bench_eval.py [--presets lavt_tiny magnet_tiny sag_tiny] [--sentences 64]
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

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).parent))
from common import Probe, busy_note, header, interleaved, paired_ratio, record, stats_cells, table, time_left  # noqa: E402

from ris_nb.core import seed_everything
from ris_nb.registry import build_model
from ris_nb.presets import get_preset  # noqa: E402
from ris_nb.data.refer import RefDataset, Refer  # noqa: E402
from ris_nb.data.shaperefs_files import generate  # noqa: E402
from ris_nb.data.transforms import Collate, RISDataset, build_tokenizer  # noqa: E402
from ris_nb.evaluate import evaluate  # noqa: E402
from ris_nb.metrics import mask_iu  # noqa: E402

TARGET = 10.0  # our target: ris_nb eval ≥ 10× the official loop's pattern, same model
EVAL_BATCH = 32


def setup(preset: str, root: Path, size: int, refer: Refer):
    cfg = get_preset(preset).override({"data.root": str(root), "data.image_size": size, "eval.batch_size": EVAL_BATCH})
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
    loader = DataLoader(
        dataset(cfg.data.dataset == "shaperefs"),
        batch_size=cfg.eval.batch_size,
        sampler=list(range(n)),
        collate_fn=coll,
    )
    res = evaluate(model, loader, cfg.eval.protocol, progress=False)
    return [(s["I"], s["U"]) for s in res["samples"]]


def official_pattern(cfg, coll, model, dataset, n: int, parts: dict | None = None) -> list[tuple[int, int]]:
    """The official test loop's pattern with our model: one sentence at a time; for each, the image read from disk and
    decoded, resized and normalised, the mask decoded from its polygons, one forward at batch 1, IoU in numpy."""
    ds, out = dataset(False), []  # no cache: every item re-reads and re-decodes
    with torch.no_grad():
        for i in range(n):
            t0 = time.perf_counter()
            b = coll([ds[i]])
            t1 = time.perf_counter()
            o = model(b)
            if cfg.eval.protocol == "square":
                p = model.predict(o, b)[0, 0].numpy() >= 0.5
                g = b.masks[0].numpy() > 0.5
            else:
                p = model.predict(o, b, sizes=[tuple(b.orig_masks[0].shape)])[0][0].numpy() >= 0.5
                g = b.orig_masks[0].numpy()
            out.append(mask_iu(p, g))
            if parts is not None:
                parts["data"] += t1 - t0
                parts["model"] += time.perf_counter() - t1
    return out


def split_ours(cfg, coll, model, dataset, n: int) -> dict:
    "Data (image-grouped batches) and model (forward + predict + IoU) seconds of `ris_nb eval`'s path."
    from ris_nb.registry import model_spec
    from ris_nb.evaluate import _sample_iu
    from ris_nb.image_groups import eval_batches, forward_batch

    loader = DataLoader(dataset(True), batch_size=cfg.eval.batch_size, sampler=list(range(n)), collate_fn=coll)
    takes_index = model_spec(model).takes_image_index
    parts, t = {"data": 0.0, "model": 0.0}, time.perf_counter()
    with torch.no_grad():
        for _, b, image_index in eval_batches(loader):
            t1 = time.perf_counter()
            parts["data"] += t1 - t
            _sample_iu(model, forward_batch(model, b, image_index, takes_index), b, cfg.eval.protocol)
            t = time.perf_counter()
            parts["model"] += t - t1
    return parts


def flops_per_sentence(cfg, coll, model, dataset, n: int) -> float:
    """Matmul/convolution FLOPs per sentence of `ris_nb eval`'s forward + predict (torch's FlopCounterMode;
    element-wise ops not counted)."""
    from torch.utils.flop_counter import FlopCounterMode
    from ris_nb.registry import model_spec
    from ris_nb.evaluate import _sample_iu
    from ris_nb.image_groups import eval_batches, forward_batch

    loader = DataLoader(dataset(True), batch_size=cfg.eval.batch_size, sampler=list(range(n)), collate_fn=coll)
    takes_index = model_spec(model).takes_image_index
    grads = [p.requires_grad for p in model.parameters()]
    # the counter's module tracker wants no autograd at all
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            for _, b, image_index in eval_batches(loader):
                _sample_iu(model, forward_batch(model, b, image_index, takes_index), b, cfg.eval.protocol)
    finally:
        for p, g in zip(model.parameters(), grads):
            p.requires_grad_(g)
    return fc.get_total_flops() / n


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["lavt_tiny", "magnet_tiny", "sag_tiny"])
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
    rows, summary, notes, bound = [], [], [], []
    for preset in args.presets:
        if time_left() <= 0:
            notes.append(f"{preset}: not measured (the run's time limit came first)")
            continue
        cfg, coll, model, dataset = setup(preset, root, args.size, refer)
        n = min(args.sentences, len(dataset(False)))
        got = {}

        def run(name, fn):
            def f():
                got[name] = fn(cfg, coll, model, dataset, n)

            return f

        if args.profile:
            po = split_ours(cfg, coll, model, dataset, n)
            pb = {"data": 0.0, "model": 0.0}
            official_pattern(cfg, coll, model, dataset, n, pb)
            notes.append(
                f"{preset}, where the time goes ({n} sentences): official pattern data {pb['data'] * 1e3:.0f} ms, "
                f"model {pb['model'] * 1e3:.0f} ms; ris_nb eval data {po['data'] * 1e3:.0f} ms, model "
                f"{po['model'] * 1e3:.0f} ms"
            )
            bound.append((preset, flops_per_sentence(cfg, coll, model, dataset, n), po["model"] / n))
        st = interleaved(
            {"ris_nb eval": run("ours", ours), "official pattern": run("official", official_pattern)},
            probe,
            reps=args.reps,
            warmup=0,
            budget_s=args.budget_s,
        )
        diff = [abs(a[0] - b[0]) + abs(a[1] - b[1]) for a, b in zip(got["ours"], got["official"])]
        same = sum(d == 0 for d in diff)
        if same != n:
            notes.append(
                f"{preset}: {n - same} of {n} sentences differ in I/U by at most {max(diff)} pixel(s)"
                + (" (float rounding at the 0.5 threshold of a random-init model)" if max(diff) <= 4 else " — DIFFER")
            )
        r = paired_ratio(st["official pattern"], st["ris_nb eval"])
        if bound and bound[-1][0] == preset:
            bound[-1] += (st["official pattern"].median / 1e3 / n,)
        if busy_note(*st.values()):
            notes.append(f"{preset}: " + busy_note(*st.values()))
        for k, s in st.items():
            rows.append(
                {
                    "preset": preset,
                    "pattern": k,
                    "sentences/s": n / (s.median / 1e3),
                    **stats_cells(s),
                    "speed-up": f"{r:.2f}×" if k == "ris_nb eval" else "",
                }
            )
        summary.append(
            {
                "what": f"eval throughput {preset} {args.size}px, ris_nb eval vs official pattern (same run)",
                "value": round(r, 2),
                "unit": "×",
                "target": f"≥ {TARGET:g}",
                "verdict": ("met" if r >= TARGET else "missed")
                + ("" if all(x.filtered for x in st.values()) else " (CPU busy: unfiltered)"),
            }
        )
        summary.append(
            {
                "what": f"eval throughput {preset} {args.size}px, ris_nb eval",
                "value": round(n / (st["ris_nb eval"].median / 1e3), 1),
                "unit": "sentences/s",
            }
        )
    rate = 2 * 512**3 / (probe.floor * 1e-3)  # FLOP/s of the probe at its floor
    for preset, fl, t_ours, t1 in bound:
        notes.append(
            f"{preset}, compute: ris_nb eval does {fl / 1e6:.1f} MFLOP of matmuls/convolutions per sentence "
            f"({fl / t_ours / 1e9:.0f} GFLOP/s in the profiling pass; the probe's matmul runs at "
            f"{rate / 1e9:.0f}); at the "
            f"probe's rate a sentence would take {fl / rate * 1e3:.2f} ms, against {t1 * 1e3:.1f} ms for the official "
            f"pattern: a ceiling of {t1 / (fl / rate):.0f}× for this model"
        )
    print(
        header(
            f"Evaluation throughput: first {args.sentences} val sentences of ShapeRefs at {args.size} px, batch "
            f"{EVAL_BATCH} vs one at a time, interleaved",
            probe,
            "\n".join(
                notes
                + [
                    f"both patterns give the same I/U for every sentence (up to the pixels noted above): "
                    f"{'yes' if not any('DIFFER' in x for x in notes) else 'NO'}"
                ]
            ),
        )
    )
    print(table(rows, ["preset", "pattern", "sentences/s", "median ms", "p10–p90 ms", "kept/dropped", "speed-up"]))
    print(f"\ntarget: ris_nb eval ≥ {TARGET:g}× the official pattern")
    record("eval", summary, probe)


if __name__ == "__main__":
    main()
