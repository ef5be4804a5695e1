"""SaG training-step and eval-forward speed at the official tiny fixture's configuration (batch 8, 64×64, CPU) — against
the OFFICIAL code in the same process when `--official-src` is given.

Usage: OMP_NUM_THREADS=2 python bench/bench_sag.py [--official-src DIR] [--fixtures DIR] [--reps 30] [--threads 2]
- `--official-src DIR`: a checkout of kdwonn/SaG you fetched yourself (bench/README.md; it imports einops). The
  official model is built at the fixture's configuration with the fixture's weights (bench/official.py); both are
  checked to reproduce the fixture's fused embeddings ẑ from the same initial slots, then the training step (forward, C³
  + reconstruction loss, backward, clip 0.1, AdamW) and the eval forward are timed interleaved, ours and official, rep
    by
  rep. Without it, only our times are printed and no comparison is made.
- `--fixtures DIR`: folder holding sag_official_tiny/ (default: the repository's tests/fixtures).
Probe-relative filtering and the printed floor: bench/common.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import Probe, busy_note, fixture_dir, header, interleaved, paired_ratio, record, stats_cells, table  # noqa: E402

from ris_nb.official import load_sag  # noqa: E402

TARGET = 2.0  # our target: ours ≥ 2× the official training step


def make_batch(bs: int, size: int, vocab: int, g: torch.Generator) -> SimpleNamespace:
    ids = torch.randint(103, vocab, (bs, 9), generator=g)
    ids[:, 0], ids[:, -1] = 101, 102
    lens = torch.randint(5, 10, (bs,), generator=g).sort(descending=True).values
    am = (torch.arange(9)[None] < lens[:, None]).long()
    ids = ids * am
    return SimpleNamespace(images=torch.rand(bs, 3, size, size, generator=g) * 2 - 1, input_ids=ids, attention_mask=am)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official-src", default=None, help="checkout of kdwonn/SaG (see bench/README.md)")
    ap.add_argument("--fixtures", default=None, help="folder holding sag_official_tiny/ (default: tests/fixtures)")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--budget-s", type=float, default=90, help="seconds of measuring per table at most")
    ap.add_argument(
        "--adamw",
        choices=["fused", "foreach", "forloop"],
        default="fused",
        help="our AdamW implementation (the official code uses torch's default)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    probe = Probe()
    try:
        fix = fixture_dir("sag_official_tiny", args.fixtures)
    except FileNotFoundError as e:
        print(f"bench_sag: skipped ({e})")
        return
    from safetensors.torch import load_file

    sd = load_file(str(fix / "state_dict.safetensors"))
    sd.update({k: sd[v] for k, v in json.loads((fix / "tied_aliases.json").read_text()).items()})
    model = load_sag(sd, json.loads((fix / "config.json").read_text()))
    cfg = model.cfg
    batch = make_batch(args.batch, cfg.data.image_size, cfg.model.text.vocab_size, torch.Generator().manual_seed(0))
    kw = {"fused": dict(fused=True), "foreach": dict(foreach=True), "forloop": dict(foreach=False)}[args.adamw]
    opt = torch.optim.AdamW(model.param_groups(cfg), **kw)
    params = [p for p in model.parameters() if p.requires_grad]

    def train_step():
        model.train()
        loss = model.losses(model(batch), batch)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip, foreach=True)
        opt.step()

    def eval_forward():
        model.eval()
        with torch.no_grad():
            model(batch)

    fns = {"train step, ours": train_step, "eval forward, ours": eval_forward}
    note = (
        "no comparison made: pass --official-src DIR (a checkout of kdwonn/SaG) to time the official code beside ours"
    )
    if args.official_src:
        from official import commit_of, sag_official

        off = sag_official(args.official_src, fix)
        fin, fo = (torch.load(fix / f, weights_only=True) for f in ("inputs.pt", "outputs.pt"))
        torch.set_rng_state(fin["rng_state_before_forward"])  # the official slot noise = the fixture's
        with torch.no_grad():
            z_off = off(fin["images"], fin["input_ids"], fin["txt_len"])[0]
            b = SimpleNamespace(
                images=fin["images"], input_ids=fin["input_ids"], attention_mask=fin["attention_mask"].long()
            )
            model.eval()
            z_ours = model(b, slots_init=fin["slots_init"]).fused
        diff = (z_off - z_ours).abs().max().item()
        if diff > 1e-4:
            raise SystemExit(f"official and ours disagree on the fixture inputs: max |Δ ẑ| {diff:.2e}")
        txt_len = batch.attention_mask.sum(1)
        oopt = torch.optim.AdamW(off.param_groups(), lr=off.args.lr, weight_decay=off.args.weight_decay)
        oparams = list(off.parameters())

        def off_train():
            off.train()
            loss = off.loss(batch.images, batch.input_ids, txt_len)
            oopt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(oparams, off.args.grad_clip)
            oopt.step()

        def off_eval():
            off.eval()
            with torch.no_grad():
                off(batch.images, batch.input_ids, txt_len)

        fns = {
            "train step, ours": train_step,
            "train step, official": off_train,
            "eval forward, ours": eval_forward,
            "eval forward, official": off_eval,
        }
        note = (
            f"official: {args.official_src} at commit {commit_of(Path(args.official_src))}; same outputs "
            "checked first: "
            f"max |Δ ẑ| {diff:.1e} on the fixture inputs (same initial slots)"
        )
    st = interleaved(fns, probe, reps=args.reps, budget_s=args.budget_s)
    print(
        header(
            f"SaG at the sag_official_tiny configuration: batch {args.batch}, {cfg.data.image_size}² images, "
            f"AdamW {args.adamw} (ours), interleaved",
            probe,
            "\n".join(x for x in (note, busy_note(*st.values())) if x),
        )
    )
    print(
        table(
            [{"what": k, **stats_cells(s)} for k, s in st.items()], ["what", "median ms", "p10–p90 ms", "kept/dropped"]
        )
    )
    summary = [
        {"what": f"SaG {k}, official tiny config, batch {args.batch}", "value": round(s.median, 2), "unit": "ms"}
        for k, s in st.items()
        if k.endswith("ours")
    ]
    if args.official_src:
        for what in ("train step", "eval forward"):
            r = paired_ratio(st[f"{what}, official"], st[f"{what}, ours"])
            tgt = TARGET if what == "train step" else None
            print(
                f"speed-up {what}, ours vs official (same run): {r:.2f}×"
                + (f"  (target ≥ {tgt:g}×: {'met' if r >= tgt else 'MISSED'})" if tgt else "")
            )
            busy = (
                "" if (st[f"{what}, official"].filtered and st[f"{what}, ours"].filtered) else " (CPU busy: unfiltered)"
            )
            summary.append(
                {
                    "what": f"SaG {what} speed-up vs official (same run)",
                    "value": round(r, 2),
                    "unit": "×",
                    **({"target": f"≥ {tgt:g}", "verdict": ("met" if r >= tgt else "missed") + busy} if tgt else {}),
                }
            )
    else:
        print("\n" + note)
    record("sag", summary, probe)


if __name__ == "__main__":
    main()
