"""`model.impl`: MagNet's reference forms (the lessons') against its fast forms (appendix 97c), per block and per
whole training step, measured interleaved in one process; optionally the fast forms under `train.compile=regional`.

Blocks at magnet_tiny's quickstart shapes (batch 32 at 64 px; pixel decoder: width 32, 4 heads, 4 points, four levels
16² … 2²), forward and backward (deformable attention also without autograd, evaluation's form). The step is the
quickstart's: Learner steps (forward, losses, backward, AdamW) of magnet_tiny on a ShapeRefs batch of 32 at 64 px.
`--compile` adds the fast forms compiled by regions (inductor's C++ kernels: minutes of compile on a CPU, reported).
Writes the table to stdout and, with --csv, one row per measurement.

Usage: python bench/bench_impl.py [--reps N] [--budget-s S] [--compile] [--csv FILE] [--blocks-only]
       python bench/bench_impl.py --smoke   # one kept run each, the step at batch 4 on 40 scenes, a temporary CSV
"""

from __future__ import annotations

import argparse
import copy
import csv
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Probe, header, interleaved, paired_ratio, probes_1t_2t, table  # noqa: E402

from ris_nb.core import seed_everything  # noqa: E402
from ris_nb.models.alignment import CAM, cal_loss  # noqa: E402
from ris_nb.models.fast import (  # noqa: E402
    FastCAM,
    FastDecoderLayer,
    FastMSDeformAttn,
    cal_loss_packed,
    compile_regions,
    to_impl,
)
from ris_nb.models.mask2former import DecoderLayer, MSDeformAttn, reference_points  # noqa: E402


def backward_of(f):
    "A step that runs `f()` and back-propagates the sum of its output's squares."

    def step():
        out = f()
        (out if torch.is_tensor(out) else out["cal"]).float().square().sum().backward()

    return step


def deform_blocks(B: int = 32) -> dict[str, tuple]:
    "Deformable attention at magnet_tiny's pixel-decoder shape: (reference step, fast step), with and without autograd."
    shapes = [(2, 2), (4, 4), (8, 8), (16, 16)]
    S = sum(h * w for h, w in shapes)
    ref_attn = MSDeformAttn(32, 4, 4, 4)
    fast_attn = FastMSDeformAttn(32, 4, 4, 4)
    fast_attn.load_state_dict(ref_attn.state_dict())
    q, v = torch.randn(B, S, 32, requires_grad=True), torch.randn(B, S, 32, requires_grad=True)
    r = reference_points(shapes)[None].expand(B, -1, -1)

    def no_grad(m):
        def run():
            with torch.no_grad():
                m(q, r, v, shapes)

        return run

    return {
        "deformable attention, forward + backward": tuple(
            backward_of(lambda m=m: m(q, r, v, shapes)) for m in (ref_attn, fast_attn)
        ),
        "deformable attention, forward (no autograd)": (no_grad(ref_attn), no_grad(fast_attn)),
    }


def other_blocks(B: int = 32) -> dict[str, tuple]:
    "The one-query decoder layer, CAM at stage 4 (2×2 map) and CAL: (reference step, fast step)."
    ref_layer, fast_layer = DecoderLayer(32, 4, 128), FastDecoderLayer(32, 4, 128)
    fast_layer.load_state_dict(ref_layer.state_dict())
    q, mem = torch.randn(B, 1, 32, requires_grad=True), torch.randn(B, 64, 32)
    args = (q, torch.randn(B, 1, 32), mem, torch.randn(B, 64, 32), None)
    ref_cam, fast_cam = CAM(256, 128), FastCAM(256, 128)
    fast_cam.load_state_dict(ref_cam.state_dict())
    x, words, mask = torch.randn(B, 256, 2, 2, requires_grad=True), torch.randn(B, 8, 128), torch.ones(B, 8)

    def pyramid(cam):
        return lambda: torch.cat([z.flatten(1) for z in cam.pyramid(x, words, mask)], 1)

    pix, text = torch.randn(B, 32, 16, 16, requires_grad=True), torch.randn(B, 32, requires_grad=True)
    masks = torch.zeros(B, 64, 64)
    masks[:, 16:40, 10:30] = 1
    return {
        "one-query decoder layer": tuple(backward_of(lambda m=m: m(*args)) for m in (ref_layer, fast_layer)),
        "CAM pyramid, stage 4": (backward_of(pyramid(ref_cam)), backward_of(pyramid(fast_cam))),
        "CAL": tuple(backward_of(lambda f=f: f(pix, text, masks)) for f in (cal_loss, cal_loss_packed)),
    }


def quickstart_steps(root: Path, scenes: int = 200, batch_size: int = 32) -> tuple:
    """Learner steps of magnet_tiny as the quickstart trains it (batch `batch_size` at 64 px), per form (one state
    dict), and the batch size."""
    from ris_nb.data.shaperefs_files import generate
    from ris_nb.presets import get_preset
    from ris_nb.train import Learner
    from ris_nb.training_run import prepare

    generate(root / "shaperefs", scenes, 0, 64, verbose=False)
    over = {"data.root": str(root), "data.image_size": 64, "train.batch_size": batch_size, "data.num_workers": 0}
    prep = prepare(get_preset("magnet_tiny").override(over | {"model.impl": "reference"}), ["train"])
    batch, cfg = next(iter(prep.loaders["train"])), prep.cfg.override({"train.max_steps": 10**6})
    models = {"reference": prep.model, "fast": to_impl(copy.deepcopy(prep.model), "fast")}
    steps = {}
    for name, model in models.items():
        learn = Learner(model, [batch], cfg)
        learn.batch = batch

        def step(learn=learn):
            learn.one_batch()

        steps[name] = step
    return steps, len(batch.images), models["fast"], batch, cfg


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--budget-s", type=float, default=60.0, help="per comparison")
    ap.add_argument("--compile", action="store_true", help="also the fast forms compiled by regions (minutes)")
    ap.add_argument("--blocks-only", action="store_true", help="the blocks, not the whole step")
    ap.add_argument("--small-step", action="store_true", help="the step at batch 4 on 40 scenes (the smoke run's)")
    ap.add_argument("--csv", type=Path, default=None)
    ap.add_argument("--smoke", action="store_true", help="one kept run each, a small step, a temporary CSV (seconds)")
    a = ap.parse_args(argv)
    if a.smoke:
        with tempfile.TemporaryDirectory(prefix="bench_impl_") as tmp:
            csv_path = Path(tmp) / "impl_speed.csv"
            rows = main(["--reps", "1", "--budget-s", "1", "--csv", str(csv_path), "--small-step"])
            print(f"smoke: {csv_path.name}\n{csv_path.read_text()}", end="")
            return rows
    seed_everything(0)
    p1, p2 = probes_1t_2t()
    probe = Probe(20)
    rows = []
    for what, (ref, fast) in (deform_blocks() | other_blocks()).items():
        st = interleaved({"reference": ref, "fast": fast}, probe, a.reps, 2, a.budget_s)
        rows.append(
            {
                "what": what,
                "reference ms": st["reference"].median,
                "fast ms": st["fast"].median,
                "fast speed-up": paired_ratio(st["reference"], st["fast"]),
            }
        )
    if not a.blocks_only:
        with tempfile.TemporaryDirectory() as tmp:
            steps, bs, fast_model, batch, cfg = quickstart_steps(Path(tmp), *((40, 4) if a.small_step else ()))
            st = interleaved(steps, probe, a.reps, 2, a.budget_s * 2)
            rows.append(
                {
                    "what": f"quickstart training step (magnet_tiny, batch {bs} at 64 px)",
                    "reference ms": st["reference"].median,
                    "fast ms": st["fast"].median,
                    "fast speed-up": paired_ratio(st["reference"], st["fast"]),
                    "samples/s reference": bs / st["reference"].median * 1e3,
                    "samples/s fast": bs / st["fast"].median * 1e3,
                }
            )
            if a.compile:
                rows.append(compiled_row(fast_model, batch, cfg, bs, steps["fast"], probe, a))
    threads = torch.get_num_threads()
    print(
        header(
            f"model.impl: reference vs fast, {threads} thread(s)",
            probe,
            f"512³ probe {p1:.2f} ms on 1 thread, {p2:.2f} ms on 2; interleaved in one process",
        )
    )
    cols = [
        "what",
        "reference ms",
        "fast ms",
        "fast speed-up",
        "samples/s reference",
        "samples/s fast",
        "compiled ms",
        "compile s",
    ]
    print(table(rows, [c for c in cols if any(c in r for r in rows)]))
    if a.csv:
        with a.csv.open("w", newline="") as f:
            w = csv.DictWriter(f, ["device", "threads", "probe_1t_ms", "probe_2t_ms", *cols])
            w.writeheader()
            for r in rows:
                w.writerow(
                    {
                        "device": "cpu",  # what `model.impl='auto'` reads the verdict per (ris_nb.models.fast)
                        "threads": threads,
                        "probe_1t_ms": round(p1, 2),
                        "probe_2t_ms": round(p2, 2),
                        **{k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()},
                    }
                )
    return rows


def compiled_row(fast_model, batch, cfg, bs: int, eager_step, probe: Probe, a) -> dict:
    "The fast forms compiled by regions: compile time (the first two steps), then interleaved with eager fast."
    from ris_nb.train import Learner

    model = compile_regions(copy.deepcopy(fast_model))
    learn = Learner(model, [batch], cfg)
    learn.batch = batch
    t = time.perf_counter()
    for _ in range(2):
        learn.one_batch()
    compile_s = time.perf_counter() - t
    st = interleaved({"fast": eager_step, "compiled": learn.one_batch}, probe, a.reps, 1, a.budget_s * 2)
    return {
        "what": f"quickstart step, fast + regional compile (batch {bs})",
        "fast ms": st["fast"].median,
        "compiled ms": st["compiled"].median,
        "fast speed-up": paired_ratio(st["fast"], st["compiled"]),
        "samples/s fast": bs / st["fast"].median * 1e3,
        "compile s": compile_s,
    }


if __name__ == "__main__":
    main()
